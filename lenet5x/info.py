"""What a network is: python -m lenet5x.info [MODEL]

With a MODEL (a shipped network's name, a run directory or a .npz checkpoint): its layer table,
as in the paper's section II-B (summary.py: each layer's kind, output shape, trainable parameters
and connections, with the totals), and its test error where it records one. With a config (a
shipped config's name that is not a shipped network, or a YAML file): the table of the network it
would train. Without either: the shipped configs (for `lenet5x train --config`) and the shipped
networks (for the other commands).

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys

from .cli import OneLineParser, run_command
from .config import ConfigError, config_names, find_config, load_config, read_yaml


def parse_args(argv=None, prog: str = "python -m lenet5x.info"):
    parser = OneLineParser(
        prog=prog,
        description="Show a network's layer table, or list the shipped configs and networks.",
    )
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a shipped network (lenet5, modern, ...), a run directory, a .npz checkpoint, or a "
        "config (a shipped config's name or a YAML file: the network it would train)",
    )
    return parser.parse_args(argv)


def summary_line(path, width: int = 76) -> str:
    """A YAML file's leading comment, cut to `width` characters at a word."""
    comment = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").strip())
    text = " ".join(comment)
    return text if len(text) <= width else text[: width - 3].rsplit(" ", 1)[0] + " ..."


def listing() -> str:
    """The shipped configs with their first comment line, and the shipped networks."""
    from .api import load
    from .restore import shipped_names

    lines = ["configs (lenet5x train --config NAME):"]
    for name in config_names():
        lines.append(f"  {name:<16} {summary_line(find_config(name))}")
    lines.append("networks (lenet5x info|evaluate|predict|features|demo NAME):")
    for name in shipped_names():
        net = load(name, backend="numpy")
        error = "" if net.test_error is None else f", test error {net.test_error:.2%}"
        lines.append(f"  {name:<16} {net.description}{error}, {net.parameter_count:,} parameters")
    return "\n".join(lines)


def names_a_config(model: str) -> bool:
    """A YAML file, or a shipped config's name that no shipped network has (lenet5-distort)."""
    from .restore import shipped_names

    return model.endswith((".yaml", ".yml")) or (
        model in config_names() and model not in shipped_names()
    )


def config_table(model: str) -> str:
    """The layer table of the network a config would train (untrained: no test error)."""
    import numpy

    from .backend import resolve
    from .model import build_model
    from .summary import format_table, layer_table

    path = find_config(model)
    data = read_yaml(path)
    if isinstance(data, dict) and {"base", "grid", "configs", "seeds"} & set(data):
        raise ConfigError(
            f"{path}: a sweep file (`lenet5x sweep {path}` runs it); info takes a network, a run "
            "or one config"
        )
    config = load_config(path)
    net = build_model(config.model)
    params = net.init(numpy.random.default_rng(0), resolve("numpy"))
    boosted = ", each of the 3 boosted nets (boosting.py)" if config.boosting.enabled else ""
    title = f"config {path.stem}: {net.description}, untrained{boosted}"
    return format_table(layer_table(net, params), title, net.paper)


def run(args) -> int:
    if args.model is None:
        print(listing())
        return 0
    if names_a_config(args.model):
        print(config_table(args.model))
        return 0
    from .api import load

    print(load(args.model, backend="numpy"))
    return 0


def main(argv=None, prog: str = "python -m lenet5x.info") -> int:
    args = parse_args(argv, prog)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
