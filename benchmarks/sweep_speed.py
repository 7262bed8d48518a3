"""Runs per hour of `lenet5x sweep` on a local Dask cluster of 1 and 2 workers, and the ratio.

    python benchmarks/sweep_speed.py --data-dir ../shared/data/mnist [--runs 6] [--write docs/speed.md]

A small sweep (the smoke config: 2,000 training and 1,000 test images, one epoch, one run per
seed) is run twice into temporary folders, on 1 and then 2 worker processes; the wall time of
each sweep, cluster start included, gives its runs per hour. Not a test: the numbers belong to
the machine and to whatever else ran on it at the time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from markdown_block import written_to

import lenet5x

SWEEP = """\
base: smoke
set: {{data.test_subset: 1000}}
seeds: 0-{last}
epochs: 1
"""


def runs_per_hour(spec: Path, workers: int, data_dir) -> tuple[float, float]:
    """(runs per hour, seconds) of the sweep `spec` on a local cluster of `workers` processes."""
    with tempfile.TemporaryDirectory(prefix="sweep-speed-") as out:
        t0 = time.perf_counter()
        result = lenet5x.sweep(spec, out, workers=workers, data_dir=data_dir, log=lambda line: None)
        seconds = time.perf_counter() - t0
    if result.failed:
        raise SystemExit(f"error: runs failed: {', '.join(result.failed)}")
    return len(result.states) * 3600 / seconds, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", help="the folder of the MNIST IDX files")
    parser.add_argument("--runs", type=int, default=6, help="runs in the sweep (default 6)")
    parser.add_argument(
        "--write", metavar="FILE", help="also put the table into FILE (docs/speed.md)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "sweep.yaml"
        spec.write_text(SWEEP.format(last=args.runs - 1))
        measured = {n: runs_per_hour(spec, n, args.data_dir) for n in (1, 2)}
    with written_to(args.write, "sweep-speed"):
        print("| workers | runs | seconds (cluster start included) | runs per hour |")
        print("|---:|---:|---:|---:|")
        for n, (rate, seconds) in measured.items():
            print(f"| {n} | {args.runs} | {seconds:.1f} | {rate:,.0f} |")
        print(
            f"\n2 workers / 1 worker: **{measured[2][0] / measured[1][0]:.2f}x** the runs per hour"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
