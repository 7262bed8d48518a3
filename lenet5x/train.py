"""Train LeNet-5: python -m lenet5x.train [--config NAME_or_FILE] [--backend cupy] [--set key=value]

The command over loop.fit: its flags become configuration overrides, its errors exit statuses
(cli.py). Without --config it trains the paper's LeNet-5 with SDLM (the shipped config
"lenet5"). A run directory holds config.yaml (the resolved configuration), metrics.jsonl (one
JSON object per epoch), checkpoint.npz (the latest weights, for --resume), best.npz (only with
a validation split: its lowest validation error) and curves.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .cli import BACKENDS, OneLineParser, run_command
from .config import SHORT_KEYS, assignment, config_names
from .loop import configure, fit


def parse_args(argv=None, prog: str = "python -m lenet5x.train") -> argparse.Namespace:
    parser = OneLineParser(
        prog=prog,
        description="Train LeNet-5 on MNIST. Without --config, trains the paper's LeNet-5 with SDLM "
        "(the shipped config lenet5).",
        epilog=f"Shipped configs: {', '.join(config_names())}.\nExamples:\n  {prog} --backend cupy\n"
        f"  {prog} --config modern --epochs 5 --set train.batch_size=128\n"
        f"  {prog} --resume runs/lenet5-20261123-101500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--config",
        metavar="NAME_or_FILE",
        help="a shipped config's name or a YAML file (default: lenet5)",
    )
    add(
        "--backend",
        choices=BACKENDS,
        help="array backend (default: auto, CuPy with a GPU, else NumPy)",
    )
    add("--device", help="torch: cpu, cuda or mps; jax: cpu or gpu (default: the best available)")
    add("--epochs", type=int, metavar="N", help="passes over the training set")
    add(
        "--batch-size",
        type=int,
        metavar="B",
        help="patterns per update (1 = the paper's on-line SDLM)",
    )
    add("--seed", type=int, help="seed for init, shuffles, Hessian samples and distortions")
    add("--dtype", choices=["float32", "float64"], help="compute precision (default float32)")
    add(
        "--data-dir",
        metavar="DIR",
        help="the folder of the IDX files (else $LENET5X_DATA_DIR, the user cache, or a download)",
    )
    add("--out", metavar="RUN_DIR", help="run directory (default runs/<config>-<date-time>)")
    add(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its checkpoint (--epochs may extend it)",
    )
    add("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override any config entry, e.g. --set optimizer.mu=0.05 (repeatable)")  # fmt: skip
    add("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    add("--print-config", action="store_true", help="print the resolved configuration and exit")
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace) -> list[str]:
    """The flags as `--set` assignments, then the --set ones (which win)."""
    given = {key: getattr(args, flag) for flag, key in SHORT_KEYS.items()}
    flags = [assignment(key, value) for key, value in given.items() if value is not None]
    if args.no_progress:
        flags.append("train.progress=false")
    return [*flags, *args.overrides]


def train(args: argparse.Namespace) -> int:
    config, name = configure(args.config, overrides(args), args.resume)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if config.boosting.enabled:  # three nets and a gate (boosting.py), each stage resumable
        from .boosting import train_boosted

        train_boosted(config, name)
        return 0
    fit(config, name, Path(args.resume) if args.resume else None)
    return 0


def main(argv=None, prog: str = "python -m lenet5x.train") -> int:
    args = parse_args(argv, prog)
    return run_command(lambda: train(args))


if __name__ == "__main__":
    sys.exit(main())
