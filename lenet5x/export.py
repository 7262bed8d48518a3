"""Shipped weights from a run: python -m lenet5x.export RUN_DIR --name NAME [--out FILE]

Writes a small weights file (the parameters in float32, compressed, no optimizer state) with the
run's configuration, the data it was trained on (data/loading.check_identity) and its final
test error in the metadata. The networks shipped in the package were made this way:

    lenet5x train --data-dir DATA --out runs/lenet5-s0            # the paper's LeNet-5, seed 0
    lenet5x train --config modern --data-dir DATA --out runs/modern-s0
    lenet5x export runs/lenet5-s0 --name lenet5 --into-package
    lenet5x export runs/modern-s0 --name modern --into-package

`lenet5x.load("lenet5")` and every result tool then take the name. Without --into-package the
file is written into the current folder (NAME.npz) or --out, and the tools take its path.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy

from .checkpoint import CheckpointError, save_checkpoint
from .cli import OneLineParser, run_command
from .restore import WEIGHTS, restore
from .rundir import read_metrics


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
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--out", metavar="FILE", help="the file to write (default: NAME.npz in this folder)"
    )
    where.add_argument(
        "--into-package",
        action="store_true",
        help=f"write it among the shipped networks, {WEIGHTS}/NAME.npz (for lenet5x's "
        "maintainers, in a checkout: an installed package is no place for your files)",
    )
    args = parser.parse_args(argv)
    if args.into_package:
        args.out = WEIGHTS / f"{args.name}.npz"
    return args


def export(run_dir, name: str, out=None) -> Path:
    """The run's checkpoint.npz (its final weights) as a weights file named `name`, written to
    `out` (default: NAME.npz in the current folder)."""
    run_dir = Path(run_dir)
    restored = restore(run_dir / "checkpoint.npz", backend="numpy", dtype="float32")
    records = read_metrics(run_dir)
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
    target = Path(out) if out else Path(f"{name}.npz")
    save_checkpoint(target, params, {}, meta, compressed=True)
    return target


def main(argv=None, prog: str = "python -m lenet5x.export") -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        target = export(args.run_dir, args.name, args.out)
        print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KB)")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
