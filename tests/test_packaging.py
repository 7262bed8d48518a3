"""pyproject.toml's package data, read statically: every file the package ships besides its
modules (the RBF bitmaps, the architectures, the configs, the demo, the weights) matches one of
its globs, so an installed (non-editable) lenet5x finds what the source checkout finds."""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_data_globs() -> list[str]:
    """The list under [tool.setuptools.package-data] (tomllib is not in Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(
        r"^\[tool\.setuptools\.package-data\]\s*\nlenet5x = (\[.*?\])", text, re.M | re.S
    )
    assert found, "no [tool.setuptools.package-data] lenet5x = [...] in pyproject.toml"
    return ast.literal_eval(found.group(1))


def shipped_data_files() -> list[str]:
    """Tracked files under lenet5x/ that are not Python modules, relative to lenet5x/."""
    tracked = subprocess.run(
        ["git", "ls-files", "lenet5x"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [path.removeprefix("lenet5x/") for path in tracked if not path.endswith(".py")]


def test_every_data_file_is_package_data():
    globs = package_data_globs()
    files = shipped_data_files()
    assert any(path.startswith("assets/") for path in files), files
    missing = [path for path in files if not any(fnmatch.fnmatch(path, g) for g in globs)]
    assert not missing, f"not in [tool.setuptools.package-data] {globs}: {missing}"
