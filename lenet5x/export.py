"""Shipped weights from a run: python -m lenet5x.export RUN_DIR --name NAME [--out FILE]

Writes a small weights file (the parameters in float32, compressed, no optimizer state) with the
run's configuration, the data it was trained on (data/loading.check_identity), its final test
error and its refusal thresholds (rejection.py) in the metadata. The networks shipped in the
package were made this way, with 5,000 training images held out to choose the thresholds on:

    lenet5x train --data-dir DATA --set data.validation_size=5000 --out runs/lenet5-s0
    lenet5x train --config modern --data-dir DATA --set data.validation_size=5000 --out runs/modern-s0
    lenet5x export runs/lenet5-s0 --name lenet5 --data-dir DATA --into-package
    lenet5x export runs/modern-s0 --name modern --data-dir DATA --into-package

The weights are the final ones (checkpoint.npz), as without a validation split: the split only
chooses the thresholds. Metadata written besides the run's own (numbers, or null where not set):
    reject_margin           the "not sure" threshold on the top-two margin (rejection.margin),
                            the smallest that gives reject_target_error on the validation split
                            (null: the run held out no validation split)
    reject_target_error     that target error on the accepted (0.005, the paper's Fig. 10)
    reject_validation_size  how many validation images chose it
    reject_validation_share the share of them it refuses
    not_digit_distance      RBF models: the "not a digit" limit on the nearest RBF distance, the
                            not_digit_quantile quantile of the training digits' nearest distances
                            (null for a softmax model)
    not_digit_quantile      that quantile (null for a softmax model)

`lenet5x.load("lenet5")` and every result tool then take the name. Without --into-package the
file is written into the current folder (NAME.npz) or --out, and the tools take its path.

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
from .data import DeviceData
from .files import output_file
from .rejection import (
    DISTANCE_QUANTILE,
    TARGET_ERROR,
    choose_threshold,
    describe_limits,
    distance_limit,
    margin,
)
from .restore import WEIGHTS, Restored, load_data, restore, scores
from .rundir import read_metrics, skipped_note
from .scoring import score


def parse_args(argv=None, prog: str = "python -m lenet5x.export") -> argparse.Namespace:
    parser = OneLineParser(
        prog=prog,
        description="Make a shipped-weights file from a finished run (its final weights).",
        epilog=f"Example:\n  {prog} runs/lenet5-s0 --name lenet5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with its metrics.jsonl")
    parser.add_argument(
        "--name",
        required=True,
        help="its name (in its metadata, and the file's: NAME.npz, which the tools and "
        "lenet5x.load take by its path; by NAME alone with --into-package)",
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
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the training data, to choose the refusal thresholds (default: as in training)",
    )
    args = parser.parse_args(argv)
    if args.into_package:
        args.out = WEIGHTS / f"{args.name}.npz"
    return args


def export(run_dir, name: str, out=None, data_dir=None, log=None) -> Path:
    """The run's checkpoint.npz (its final weights) as a weights file named `name`, written to
    `out` (default: NAME.npz in the current folder), with the refusal thresholds chosen on its
    validation and training splits (calibrate). log: where a note about lines of metrics.jsonl
    that are not valid records goes."""
    run_dir = Path(run_dir)
    target = output_file(Path(out) if out else Path(f"{name}.npz"))
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
            "boosting",  # a boosted ensemble's gate (boosting.py)
        )
        if k in restored.meta
    }
    meta.update(
        step=0, partial=None, name=name, source=run_dir.name, test_error=final["test_error"]
    )
    meta.update(calibrate(restored, load_data(restored, data_dir)))
    # where the files were on the machine that trained it means nothing elsewhere
    config = meta["config"]
    meta["config"] = {
        **config,
        "data": {**config["data"], "dir": None},
        "train": {**config["train"], "out": None},
    }
    save_checkpoint(target, params, {}, meta, compressed=True)
    return target


def calibrate(restored: Restored, host) -> dict:
    """The refusal thresholds (the metadata fields in this module's docstring), from the host
    dataset's validation and training splits only: the test set is never read."""
    kind, config = restored.score_kind, restored.config

    def scored(images, labels):
        data = DeviceData(restored.backend, images, labels, host.scale, host.offset)
        result = score(restored.model, restored.params, data, config.train.eval_batch_size)
        return scores(restored, result.outputs.T), result.predictions != labels

    fields = dict.fromkeys(
        ("reject_margin", "reject_validation_size", "reject_validation_share"), None
    )
    fields.update(
        reject_target_error=TARGET_ERROR, not_digit_distance=None, not_digit_quantile=None
    )
    if host.validation_images is not None:
        values, wrong = scored(host.validation_images, host.validation_labels)
        threshold = choose_threshold(margin(values, kind), wrong, TARGET_ERROR)
        fields.update(
            reject_margin=threshold,
            reject_validation_size=len(wrong),
            reject_validation_share=float(numpy.mean(margin(values, kind) < threshold)),
        )
    if kind == "rbf_distance":
        values, _ = scored(host.train_images, host.train_labels)
        fields.update(
            not_digit_distance=distance_limit(values), not_digit_quantile=DISTANCE_QUANTILE
        )
    return fields


def main(argv=None, prog: str = "python -m lenet5x.export") -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        target = export(
            args.run_dir,
            args.name,
            args.out,
            args.data_dir,
            log=functools.partial(print, file=sys.stderr),
        )
        print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KB)")
        print(describe_limits(restore(target, backend="numpy").meta))
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
