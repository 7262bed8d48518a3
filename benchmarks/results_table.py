"""The README's results table (between its results-table markers), made from run directories,
never typed by hand.

    python benchmarks/results_table.py runs/lenet5-s0 runs/lenet5-s1 runs/modern-s0 ...

Runs whose configurations are identical apart from the seed (and output settings) form one row:
test error after the last epoch as mean, min-max spread and count over seeds (no epoch is chosen
on the test set), the training error, seconds per epoch (median), backend and machine. The label
of a row is the longest common prefix of its run directories' names, without a seed suffix.
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
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--write", metavar="FILE", help="also put the table into FILE (README.md)")
    args = parser.parse_args(argv)
    runs = [run for run in map(load_run, args.runs) if run is not None]
    if not runs:
        print("error: no finished runs among the given directories", file=sys.stderr)
        return 2
    with written_to(args.write, "results-table"):
        print(markdown(table_rows(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
