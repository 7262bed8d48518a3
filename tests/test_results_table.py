"""benchmarks/results_table.py: runs that differ only in their seed form one row."""

from __future__ import annotations

import json
from pathlib import Path

import benchmark_scripts
import yaml

from lenet5x.config import Config


def load_script():
    return benchmark_scripts.load_script("results_table")


def fake_run(root: Path, name: str, config: dict, test_errors: list[float]) -> Path:
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    records = [
        {"epoch": i + 1, "test_error": e, "train_error": 0.01, "seconds": 10.0}
        for i, e in enumerate(test_errors)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def table_rows(table, runs: list[Path], capsys) -> list[str]:
    """The table's data rows, as printed by the script for these run directories."""
    assert table.main([str(r) for r in runs]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]


def test_a_run_made_before_a_setting_existed_groups_with_its_default(tmp_path, capsys):
    table = load_script()
    new = Config().to_dict()
    old = Config().to_dict()
    del old["train"]["shuffle"]  # written by code that did not know the key yet
    old["train"]["seed"] = 1
    changed = Config().to_dict()
    changed["train"]["shuffle"], changed["train"]["seed"] = "once", 2
    runs = [
        fake_run(tmp_path, "paper-s0", new, [0.02, 0.010]),
        fake_run(tmp_path, "paper-s1", old, [0.02, 0.012]),
        fake_run(tmp_path, "once-s2", changed, [0.02, 0.011]),
    ]
    rows = table_rows(table, runs, capsys)
    assert len(rows) == 2
    assert rows[0].startswith("| paper | sdlm, 16 | 2 | 0,1 | **1.10** (1.00-1.20)")
    assert rows[1].startswith("| once | sdlm, 16 | 2 | 2 | **1.10** |")


def test_a_default_criterion_groups_with_the_same_criterion_named(tmp_path, capsys):
    table = load_script()
    default = Config().to_dict()  # model.loss: null, the classic default
    named = Config().to_dict()
    named["model"]["loss"], named["train"]["seed"] = "map", 1
    other = Config().to_dict()
    other["model"]["loss"], other["train"]["seed"] = "mse", 2
    runs = [
        fake_run(tmp_path, "paper-s0", default, [0.02, 0.010]),
        fake_run(tmp_path, "paper-s1", named, [0.02, 0.012]),
        fake_run(tmp_path, "mse-s2", other, [0.02, 0.011]),
    ]
    rows = table_rows(table, runs, capsys)
    assert [row.split(" | ")[0] for row in rows] == ["| paper", "| mse"]
