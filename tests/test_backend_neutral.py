"""The computing code never reaches for NumPy or CuPy directly: only the array namespace.

Layers may use NumPy on the host to draw initial weights (init); their passes may not. im2col,
losses and the optimizers may not import NumPy or CuPy at all. Only backend.py imports CuPy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lenet5x"
HOST_SIDE = {
    "init",
    "__init__",
    "out_shape",
    "fan_in",
    "paper_uniform",
    "paper_sqrt_uniform",
    "lecun_uniform",
    "he_normal",
    "init_weights",
}
FORBIDDEN = {"numpy", "np", "cupy", "cp"}


def names_in(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


@pytest.mark.parametrize("path", sorted((PACKAGE / "layers").glob("*.py")), ids=lambda p: p.name)
def test_layer_passes_use_only_the_namespace(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in HOST_SIDE:
            used = names_in(node) & FORBIDDEN
            assert not used, f"{path.name}:{node.lineno} {node.name} uses {used}"


@pytest.mark.parametrize("name", ["im2col.py", "losses.py", "optim.py", "step.py", "parallel.py"])
def test_no_numpy_or_cupy_imports(name):
    tree = ast.parse((PACKAGE / name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules = {(node.module or "").split(".")[0]}
        else:
            continue
        assert not modules & {"numpy", "cupy"}, f"{name}:{node.lineno} imports {modules}"


def test_only_backend_imports_cupy():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "backend.py":
            continue
        text = path.read_text()
        assert "import cupy" not in text, path
