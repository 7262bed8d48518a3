"""docs/tutorial.ipynb: it runs from start to end on real MNIST, and it is docs/tutorial.py.

docs/tutorial.py (a jupytext "percent" script) is the source; docs/tutorial.ipynb is made from
it and executed, so that readers see its figures without running it:

    jupytext --to ipynb docs/tutorial.py
    cd docs && jupyter execute --inplace tutorial.ipynb    # or nbclient, as below
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
SOURCE, NOTEBOOK = DOCS / "tutorial.py", DOCS / "tutorial.ipynb"
REGENERATE = (
    "regenerate it: jupytext --to ipynb docs/tutorial.py, then execute it in place "
    "(cd docs && jupyter execute --inplace tutorial.ipynb)"
)
CELL_TIMEOUT = 300  # seconds; the whole notebook takes about 15 s on a 2-core CPU
MAX_BYTES = 1_500_000  # the stored notebook, figures included


def cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_stored_notebook_is_the_script_executed():
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert cells(stored) == cells(jupytext.read(SOURCE)), (
        f"{NOTEBOOK.name} differs from {SOURCE.name}; {REGENERATE}"
    )
    code = [cell for cell in stored.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"not executed top to bottom; {REGENERATE}"
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors, f"the stored notebook holds an error ({errors[0].ename}); {REGENERATE}"
    assert any("image/png" in o.get("data", {}) for cell in code for o in cell.outputs)
    assert NOTEBOOK.stat().st_size < MAX_BYTES, "the stored notebook is too large: smaller figures"


def test_tutorial_runs(mnist_dir, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    monkeypatch.setenv("LENET5X_DATA_DIR", os.fspath(mnist_dir))
    before = sorted(p.relative_to(DOCS) for p in DOCS.rglob("*"))
    notebook = jupytext.read(SOURCE)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": os.fspath(DOCS)}},  # the working directory
    )
    client.execute()  # a cell that raises fails here (CellExecutionError), naming the cell
    outputs = "".join(
        o.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    measured = re.search(r"test error (\S+)% \(", outputs).group(1)  # on the 10,000 test digits
    assert f"recorded with the weights: {measured}%" in outputs  # what the shipped weights say
    assert "total: 60,000" in outputs
    assert "true label 3, predicted 3\n" in outputs  # the photo
    after = sorted(p.relative_to(DOCS) for p in DOCS.rglob("*"))
    assert after == before, "the notebook wrote into docs/; it should write to a temporary folder"
