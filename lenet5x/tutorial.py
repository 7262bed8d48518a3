"""The tutorial notebook, written where you want it: python -m lenet5x.tutorial [DIR]

Writes DIR/lenet5x-tutorial.ipynb (default: the current folder), made from the tutorial's source
shipped in the package (assets/tutorial.py, a jupytext "percent" script: `# %%` starts a code
cell, `# %% [markdown]` a text cell whose lines begin with `# `). The notebook finds MNIST as the
commands do and cleans up after itself; `pip install 'lenet5x[notebook]'` installs Jupyter and
what the notebook draws with. An existing notebook is never replaced without --force (it may hold
a student's answers).

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .cli import OneLineParser, run_command
from .errors import UserError
from .files import atomic_write, output_dir

SOURCE = Path(__file__).with_name("assets") / "tutorial.py"
NAME = "lenet5x-tutorial.ipynb"
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def parse_args(argv=None, prog: str = "python -m lenet5x.tutorial"):
    parser = OneLineParser(prog=prog, description=f"Write the tutorial notebook ({NAME}).")
    parser.add_argument(
        "folder", nargs="?", default=".", metavar="DIR", help="where (default: here)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing notebook")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="the MNIST folder, written into the notebook (DATA)"
    )
    return parser.parse_args(argv)


def script_cells(text: str) -> list[tuple[str, str]]:
    """A percent-format script -> [(cell type, source)], without its leading `# ---` header."""
    lines = text.splitlines()
    if lines and lines[0] == "# ---":
        lines = lines[lines.index("# ---", 1) + 1 :]
    cells: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            kind, body = cells[-1]
            text = line[2:] if line.startswith("# ") else line.removeprefix("#")
            body.append(text if kind == "markdown" else line)
    return [(kind, "\n".join(body).strip("\n")) for kind, body in cells]


def notebook(cells: list[tuple[str, str]]) -> dict:
    """[(cell type, source)] -> an nbformat 4.5 notebook (a JSON-ready dict), not executed."""
    out = []
    for i, (kind, source) in enumerate(cells):
        cell = {"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    return {"cells": out, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


DATA_LINE = 'DATA = None  # or the folder that holds the four MNIST files, "path/to/mnist"'


def write_tutorial(folder, force: bool = False, data_dir=None) -> Path:
    """Write the notebook into `folder` (made if missing); UserError if one is there already.
    data_dir: the MNIST folder the notebook reads (its DATA; default: looked for)."""
    target = Path(folder) / NAME
    if Path(folder).suffix == ".ipynb" and not Path(folder).is_dir():
        raise UserError(f"{folder}: DIR is the folder to write {NAME} into, not the notebook")
    if target.exists() and not force:
        raise UserError(f"{target}: already there (your answers?); --force replaces it")
    output_dir(folder, [NAME])  # a folder, or nothing yet that can be made
    target.parent.mkdir(parents=True, exist_ok=True)
    source = SOURCE.read_text(encoding="utf-8")
    if data_dir is not None:
        where = str(Path(data_dir).expanduser().absolute())
        source = source.replace(DATA_LINE, f"DATA = {where!r}  # lenet5x tutorial --data-dir")
    text = json.dumps(notebook(script_cells(source)), indent=1)
    return atomic_write(target, lambda handle: handle.write(text.encode("utf-8") + b"\n"))


def main(argv=None, prog: str = "python -m lenet5x.tutorial") -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        target = write_tutorial(args.folder, args.force, args.data_dir)
        print(f"wrote {target}")
        print(f"open it: jupyter lab {target}   (pip install 'lenet5x[notebook]' installs Jupyter)")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
