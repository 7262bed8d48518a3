"""The sweep file (lenet5x/sweep_file.py): the runs it names, and the shipped one that rebuilds
the README's results table. No Dask needed."""

from __future__ import annotations

import re
from pathlib import Path

from lenet5x import sweep_file

ROOT = Path(__file__).resolve().parents[1]


def write_spec(folder: Path, text: str) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(text)
    return path


def test_the_sweep_file_names_its_runs(tmp_path):
    spec = write_spec(tmp_path, """\
seeds: 0-2
epochs: 3
configs:
  - {name: paper, base: lenet5}
  - {name: online, base: lenet5, set: {train.batch_size: 1}, seeds: [5]}
  - {base: modern, grid: {train.batch_size: [32, 64]}, seeds: 7}
""")  # fmt: skip
    runs = sweep_file.read_sweep(spec, tmp_path / "out")
    assert [r.name for r in runs] == [
        "paper-s0", "paper-s1", "paper-s2", "online-s5",
        "modern-train.batch_size=32-s7", "modern-train.batch_size=64-s7",
    ]  # fmt: skip
    assert {r.config.train.epochs for r in runs} == {3}
    assert [r.config.train.batch_size for r in runs[2:]] == [16, 1, 32, 64]
    assert runs[3].config.train.out == str(tmp_path / "out" / "runs" / "online-s5")


def test_the_shipped_sweep_file_names_the_readme_tables_rows_and_seeds(tmp_path):
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- results-table")[1].split("<!-- /results-table -->")[0]
    rows = [line.split(" | ") for line in table.splitlines() if re.match(r"\| [a-z]", line)][1:]
    wanted = {row[0].lstrip("| "): [int(s) for s in row[3].split(",")] for row in rows}
    runs = sweep_file.read_sweep(ROOT / "benchmarks" / "sweeps" / "readme.yaml", tmp_path)
    named: dict[str, list[int]] = {}
    for run in runs:
        named.setdefault(run.label, []).append(run.config.train.seed)
    assert named == wanted
    assert {run.config.train.epochs for run in runs} == {20}
    optimizers = {row[0].lstrip("| "): row[1] for row in rows}  # "sdlm, 16"
    for run in runs:
        config = run.config
        assert optimizers[run.label] == f"{config.optimizer.name}, {config.train.batch_size}"
