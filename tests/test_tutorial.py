"""docs/tutorial.ipynb: it runs from start to end on real MNIST, and it is the tutorial's source.

lenet5x/assets/tutorial.py (a jupytext "percent" script, shipped in the package: `lenet5x
tutorial` makes a notebook of it) is the source; docs/tutorial.ipynb is made from it and
executed, so that readers see its figures without running it:

    jupytext --to ipynb --output docs/tutorial.ipynb lenet5x/assets/tutorial.py
    cd docs && jupyter execute --inplace tutorial.ipynb    # or nbclient, as below
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCE, NOTEBOOK = ROOT / "lenet5x" / "assets" / "tutorial.py", DOCS / "tutorial.ipynb"
REGENERATE = (
    "regenerate it: jupytext --to ipynb --output docs/tutorial.ipynb lenet5x/assets/tutorial.py, "
    "then execute it in place "
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


def test_the_command_writes_the_scripts_cells(tmp_path, capsys):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    from lenet5x.tutorial import NAME, main

    assert main([str(tmp_path / "class")]) == 0
    written = nbformat.read(tmp_path / "class" / NAME, as_version=4)
    nbformat.validate(written)
    assert cells(written) == cells(jupytext.read(SOURCE))
    assert "jupyter lab" in capsys.readouterr().out
    assert main([str(tmp_path / "class")]) == 2  # a student's answers are never replaced
    assert "--force" in capsys.readouterr().err


def test_tutorial_runs_anywhere_and_leaves_nothing_behind(mnist_dir, monkeypatch, tmp_path):
    pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    import nbformat

    from lenet5x.tutorial import NAME, write_tutorial

    monkeypatch.delenv("LENET5X_DATA_DIR", raising=False)  # only --data-dir says where
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", os.fspath(tmp_path / "tmp"))  # the kernel's temporary folders
    folder = tmp_path / "somewhere"
    notebook = nbformat.read(write_tutorial(folder, data_dir=mnist_dir), as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": os.fspath(folder)}},  # the working directory
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
    assert f"MNIST from {mnist_dir}" in outputs  # found as the commands find it
    assert sorted(p.name for p in folder.iterdir()) == [NAME]
    assert not [p for p in (tmp_path / "tmp").iterdir() if "lenet5x" in p.name]
