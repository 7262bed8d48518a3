"""Training curves: python -m lenet5x.plot RUN_DIR [RUN_DIR ...] [--out FILE]

One run directory: redraws its curves.png (loss, train and test error per epoch). Several: one
picture that overlays them, a colour per run (default comparison.png in the current directory).

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from .cli import OneLineParser, run_command
from .files import output_file


def parse_args(argv=None, prog: str = "python -m lenet5x.plot") -> argparse.Namespace:
    parser = OneLineParser(
        prog=prog,
        description="Draw the loss and error curves of one run, or overlay several runs.",
        epilog="Examples:\n  python -m lenet5x.plot runs/lenet5-20261123-101500\n"
        "  python -m lenet5x.plot runs/lenet5-* runs/modern-* --labels paper,modern --out compare.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="run directories (with metrics.jsonl)"
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="the picture to write: PNG, or SVG, PDF, JPEG by its suffix (default: "
        "RUN_DIR/curves.png for one run, comparison.png for several)",
    )
    parser.add_argument(
        "--labels", metavar="A,B,...", help="the runs' legend names (default: folders)"
    )
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=PERCENT",
        help="a reference test error drawn as a line, e.g. --reference 'paper, LeNet-5=0.95'",
    )
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels.split(",")) != len(args.runs):
        parser.error(
            f"--labels gives {len(args.labels.split(','))} names for {len(args.runs)} runs"
        )
    try:
        args.references = {
            text.rsplit("=", 1)[0]: float(text.rsplit("=", 1)[1]) for text in args.reference
        }
    except (IndexError, ValueError):
        parser.error("--reference takes LABEL=PERCENT, e.g. --reference 'paper=0.95'")
    return args


def run(args) -> int:
    from .figures import plot_runs
    from .rundir import RunDirError

    for run_dir in map(Path, args.runs):
        if not run_dir.is_dir():
            raise RunDirError(
                f"{run_dir}: not a directory; pass run directories (with metrics.jsonl)"
            )
    out = (
        Path(args.out)
        if args.out
        else (Path(args.runs[0]) / "curves.png" if len(args.runs) == 1 else Path("comparison.png"))
    )
    output_file(out)
    labels = args.labels.split(",") if args.labels else None
    note = functools.partial(print, file=sys.stderr)
    print(f"wrote {plot_runs(args.runs, out, labels, args.references, log=note)}")
    return 0


def main(argv=None, prog: str = "python -m lenet5x.plot") -> int:
    args = parse_args(argv, prog)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
