"""The README's results table (between its results-table markers), made from run directories,
never typed by hand.

    python benchmarks/results_table.py runs/lenet5-s0 runs/lenet5-s1 runs/modern-s0 ...
    python benchmarks/results_table.py --sweep benchmarks/sweeps/readme.yaml --out sweeps/readme --write README.md

The second form runs (or resumes, or only tables) the sweep file's runs with `lenet5x sweep`
first, and labels the rows by the sweep's configurations.

Runs whose configurations are identical apart from the seed (and output settings) form one row:
test error after the last epoch as mean, min-max spread and count over seeds (no epoch is chosen
on the test set), the training error, seconds per epoch (median), backend and machine. The label
of a row is the longest common prefix of its run directories' names, without a seed suffix
(lenet5x/results.py makes the table; `lenet5x sweep` makes its own with it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from markdown_block import written_to

from lenet5x.results import load_run, markdown, table_rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", type=Path, help="run directories")
    parser.add_argument("--write", metavar="FILE", help="also put the table into FILE (README.md)")
    parser.add_argument("--sweep", metavar="SPEC", help="run this sweep file's runs and table them")
    parser.add_argument("--out", metavar="DIR", help="the sweep's folder (with --sweep)")
    parser.add_argument("--workers", type=int, help="the sweep's local workers (with --sweep)")
    parser.add_argument("--scheduler", help="the sweep's Dask scheduler (with --sweep)")
    parser.add_argument("--data-dir", help="the runs' data.dir (with --sweep)")
    args = parser.parse_args(argv)
    if args.sweep:
        return table_of_sweep(args)
    runs = [run for run in map(load_run, args.runs) if run is not None]
    if not runs:
        print("error: no finished runs among the given directories", file=sys.stderr)
        return 2
    with written_to(args.write, "results-table"):
        print(markdown(table_rows(runs)))
    return 0


def table_of_sweep(args) -> int:
    """Run the sweep file args.sweep into args.out (lenet5x.sweep) and print its table."""
    import lenet5x
    from lenet5x.cli import run_command

    if not args.out:
        raise SystemExit("error: --sweep needs --out DIR, the sweep's folder")

    def body() -> int:
        result = lenet5x.sweep(args.sweep, args.out, workers=args.workers,
                               scheduler=args.scheduler, data_dir=args.data_dir)  # fmt: skip
        if result.failed or not result.rows:
            print(f"error: {len(result.failed)} runs failed; no table written", file=sys.stderr)
            return 1
        with written_to(args.write, "results-table"):
            print(markdown(result.rows))
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
