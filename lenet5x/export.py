"""Shipped weights from a run: python -m lenet5x.export RUN_DIR --name NAME [--out FILE]

Writes a small weights file (the parameters in float32, compressed, no optimizer state) with the
run's configuration, the data it was trained on (data/loading.check_identity) and its final
test error in the metadata. The networks shipped in the package were made this way:

    lenet5x train --data-dir DATA --out runs/lenet5-s0            # the paper's LeNet-5, seed 0
    lenet5x train --config modern --data-dir DATA --out runs/modern-s0
    lenet5x export runs/lenet5-s0 --name lenet5
    lenet5x export runs/modern-s0 --name modern

`lenet5x.load("lenet5")` and every result tool then take the name.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy

from .checkpoint import CheckpointError, save_checkpoint
from .cli import OneLineParser, run_command
from .files import output_file
from .restore import WEIGHTS, restore
from .rundir import read_metrics, skipped_note


def parse_args(argv=None, prog: str = "python -m lenet5x.export") -> argparse.Namespace:
    parser = OneLineParser(
        prog=prog,
        description="Make a shipped-weights file from a finished run (its final weights).",
        epilog=f"Example:\n  {prog} runs/lenet5-s0 --name lenet5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with its metrics.jsonl")
    parser.add_argument(
        "--name", required=True, help="the name it is loaded by (lenet5x.load(NAME))"
    )
    parser.add_argument(
        "--out", metavar="FILE", help=f"the file to write (default: {WEIGHTS}/NAME.npz)"
    )
    return parser.parse_args(argv)


def export(run_dir, name: str, out=None, log=None) -> Path:
    """The run's checkpoint.npz (its final weights) as a weights file named `name`. log: where a
    note about lines of metrics.jsonl that are not valid records goes."""
    run_dir = Path(run_dir)
    target = output_file(out or WEIGHTS / f"{name}.npz")
    restored = restore(run_dir / "checkpoint.npz", backend="numpy", dtype="float32")
    skipped = []
    records = read_metrics(run_dir, skipped)
    if skipped and log:
        log(skipped_note(run_dir, skipped))
    final = next((r for r in records if r.get("epoch") == restored.meta.get("epoch")), None)
    if final is None:
        raise CheckpointError(f"{run_dir}: metrics.jsonl has no record of the checkpoint's epoch")
    params = {k: numpy.asarray(v) for k, v in restored.params.items()}
    meta = {
        k: restored.meta.get(k)
        for k in (
            "config",
            "epoch",
            "version",
            "description",
            "input_scale",
            "input_offset",
            "dataset",
        )
    }
    meta.update(
        step=0, partial=None, name=name, source=run_dir.name, test_error=final["test_error"]
    )
    # where the files were on the machine that trained it means nothing elsewhere
    config = meta["config"]
    meta["config"] = {
        **config,
        "data": {**config["data"], "dir": None},
        "train": {**config["train"], "out": None},
    }
    save_checkpoint(target, params, {}, meta, compressed=True)
    return target


def main(argv=None, prog: str = "python -m lenet5x.export") -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        target = export(
            args.run_dir, args.name, args.out, log=functools.partial(print, file=sys.stderr)
        )
        print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KB)")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
