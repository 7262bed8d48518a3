"""benchmarks/family_table.py: the family's table and Fig. 6 from a sweep folder's runs.

One tiny real run (smoke, 200 images, 1 epoch) gives a checkpoint; the sweep folder holds copies
of it under the sweep's run names, each with its own hand-written metrics, so that what the
table says can be computed here from the numbers the test wrote.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import benchmark_scripts
import pytest
import yaml

import lenet5x
from lenet5x.data import read_idx_images, read_idx_labels
from lenet5x.rejection import margin, rejection_curve
from lenet5x.restore import restore

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def family():
    return benchmark_scripts.load_script("family_table")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_dir) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "smoke"
    lenet5x.fit("smoke", epochs=1, data_dir=str(mnist_dir), out=str(out), log=lambda line: None,
                **{"data.train_subset": 200, "data.test_subset": 100})  # fmt: skip
    return out


def add_run(out: Path, name: str, tiny: Path, records: list[dict], epochs: int = 1) -> Path:
    """A run directory of the sweep folder `out`: the tiny run's checkpoint and config (with
    train.epochs = epochs), and `records` as its metrics.jsonl."""
    run = out / "runs" / name
    run.mkdir(parents=True)
    shutil.copy(tiny / "checkpoint.npz", run)
    config = yaml.safe_load((tiny / "config.yaml").read_text())
    config["train"]["epochs"] = epochs
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def record(test: float, train: float, seconds: float = 2.0) -> dict:
    return {"epoch": 1, "train_loss": 1.0, "train_error": 0.05, "test_loss": 1.0,
            "test_error": test, "train_error_full": train, "seconds": seconds}  # fmt: skip


TEST = {0: 0.0100, 1: 0.0120, 2: 0.0090}  # fig6-60000's final test errors by seed
SECONDS = {0: 3.0, 1: 5.0, 2: 4.0}


@pytest.fixture
def sweep(tmp_path, tiny_run) -> Path:
    """LeNet-5's row (fig6-60000) with three finished seeds and one that is not; LeNet-5 with
    distortions started but not finished; Fig. 6's 15,000; no LeNet-1, LeNet-4 or boosted."""
    out = tmp_path / "sweep"
    for seed, test in TEST.items():
        add_run(out, f"fig6-60000-s{seed}", tiny_run, [record(test, test / 4, SECONDS[seed])])
    add_run(out, "fig6-60000-s3", tiny_run, [record(0.5, 0.5)], epochs=2)
    add_run(out, "fig6-distort-60000-s0", tiny_run, [record(0.5, 0.5)], epochs=2)
    add_run(out, "fig6-15000-s0", tiny_run, [record(0.015, 0.002)])
    add_run(out, "fig6-15000-s1", tiny_run, [record(0.017, 0.004)])
    return out


def rejected_by_api(run_dir: Path, mnist_dir: Path) -> float:
    """% of the test set rejected for 0.5% error, through the Python API (not evaluate.py)."""
    net = lenet5x.load(run_dir / "checkpoint.npz", backend="numpy")
    images = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    scores = net.scores(images)
    curve = rejection_curve(margin(scores, net.score_kind), scores.argmin(1) != labels)
    return 100 * curve.rejected_at(0.005)


def rows_of(family, sweep: Path, mnist_dir: Path) -> dict:
    by_config = family.read_runs(sweep)
    return {r["network"].config: r for r in family.family_rows(by_config, mnist_dir, "numpy")}


def test_a_row_is_the_mean_and_spread_of_the_finished_runs(family, sweep, mnist_dir):
    row = rows_of(family, sweep, mnist_dir)["fig6-60000"]
    assert row["seeds"] == [0, 1, 2] and row["runs"] == 4  # s3 has 1 of its 2 epochs
    assert row["test"] == pytest.approx([100 * e for e in TEST.values()])
    assert row["seconds"] == statistics.median(SECONDS.values())
    line = next(x for x in family.markdown([row]).splitlines() if x.startswith("| LeNet-5 |"))
    mean = statistics.mean(100 * e for e in TEST.values())
    assert f"| **{mean:.2f}** (0.90-1.20), 3 seeds (1 more not finished) |" in line
    assert "| 60,000 / 60K | 340,908 / 401K | 4.0 (shared) |" in line  # LeNet-5's layer table
    expected = rejected_by_api(sweep / "runs" / "fig6-60000-s0", mnist_dir)
    assert row["rejected"] == pytest.approx([expected] * 3)
    assert f"| {expected:.2f} |" in line


def test_time_trains_one_epoch_alone_and_the_column_shows_it(family, sweep, mnist_dir):
    by_config = family.read_runs(sweep)
    first = by_config["fig6-60000"][0]
    family.time_alone(by_config, mnist_dir)
    timing = json.loads((first.dir / family.TIMING).read_text())
    assert timing["seconds"] > 0 and "cores" in timing["machine"]
    assert not (by_config["fig6-60000"][1].dir / family.TIMING).exists()  # the first run only
    assert not (by_config["fig6-distort-60000"][0].dir / family.TIMING).exists()  # unfinished
    row = rows_of(family, sweep, mnist_dir)["fig6-60000"]
    assert row["seconds"] == timing["seconds"] and row["alone"]
    line = next(x for x in family.markdown([row]).splitlines() if x.startswith("| LeNet-5 |"))
    assert line.endswith(f"| {timing['seconds']:.1f} |")
    (first.dir / family.TIMING).write_text("{not json")  # a damaged one: the sweep's median
    assert rows_of(family, sweep, mnist_dir)["fig6-60000"]["alone"] is False


def test_a_failed_timing_says_so_in_one_line(family, sweep, mnist_dir):
    by_config = family.read_runs(sweep)
    config = by_config["fig6-60000"][0].dir / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 1", "epochs: -1"))
    with pytest.raises(family.UserError, match=r"timing one epoch failed: .*epochs"):
        family.epoch_alone(by_config["fig6-60000"][0], mnist_dir)


def test_a_network_without_finished_runs_is_not_run(family, sweep, mnist_dir):
    rows = rows_of(family, sweep, mnist_dir)
    missing = ("lenet1", "lenet4", "lenet4-distort", "lenet4-boosted", "fig6-distort-60000")
    for config in missing:
        assert "test" not in rows[config]
    lines = family.markdown_short(list(rows.values())).splitlines()
    assert "| LeNet-1 | 1.7 | not run | not run / 3.7 |" in lines
    assert "| LeNet-5, distortions | 0.8 | not run | not run / - |" in lines
    assert sum(
        "| not run |" in line for line in family.markdown(list(rows.values())).splitlines()
    ) == len(missing)


def test_an_unchanged_checkpoint_is_scored_once(family, sweep, mnist_dir, monkeypatch):
    from lenet5x import evaluate

    run = family.read_runs(sweep)["fig6-15000"][0]
    restored = restore(run.dir / "checkpoint.npz", "numpy")
    first = family.rejection_of(run, restored, mnist_dir)
    calls = []
    scored = evaluate.score_test_set
    monkeypatch.setattr(evaluate, "score_test_set", lambda *a: calls.append(a) or scored(*a))
    assert family.rejection_of(run, restored, mnist_dir) == first and not calls
    checkpoint = run.dir / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes())  # rewritten (resumed, extended): new time
    assert family.rejection_of(run, restored, mnist_dir) == first and len(calls) == 1


def test_fig6_curves_come_from_the_finished_runs_and_are_drawn(family, sweep, tmp_path):
    curves = family.training_size_curves(family.read_runs(sweep))
    assert list(curves) == ["test", "train"]  # the distorted runs are not finished
    assert curves["test"][15000] == pytest.approx([1.5, 1.7])
    assert curves["train"][15000] == pytest.approx([0.2, 0.4])
    assert curves["test"][60000] == pytest.approx([100 * e for e in TEST.values()])
    path = tmp_path / "fig6.png"
    family.draw_fig6(family.read_runs(sweep), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_script_writes_both_blocks_and_the_figure(family, sweep, mnist_dir, tmp_path, capsys):
    docs, readme = tmp_path / "doc.md", tmp_path / "README.md"
    docs.write_text(
        "before\n<!-- family-table: generated -->\nold\n<!-- /family-table -->\nafter\n"
    )
    readme.write_text("top\n<!-- family-short -->\n<!-- /family-short -->\nend\n")
    figure, figure10 = tmp_path / "out" / "fig6.png", tmp_path / "out" / "fig10.png"
    argv = [
        "--out",
        str(sweep),
        "--data-dir",
        str(mnist_dir),
        "--backend",
        "numpy",
        "--write",
        str(docs),
        "--write-short",
        str(readme),
        "--figure",
        str(figure),
        "--figure10",
        str(figure10),
    ]  # fmt: skip  (never the checkout's docs/)
    assert family.main(argv) == 0
    text = docs.read_text()
    assert text.startswith("before\n<!-- family-table") and text.endswith("-->\nafter\n")
    assert "old" not in text and "| LeNet-1 | lenet1 | 1.7 | not run |" in text
    short = readme.read_text().splitlines()
    assert short[0] == "top" and short[-1] == "end" and short[2].startswith("| network |")
    assert figure.is_file() and figure10.is_file()


def test_bad_input_is_one_line_and_status_2(family, sweep, tmp_path, capsys):
    unmarked = tmp_path / "plain.md"
    unmarked.write_text("no markers\n")
    assert family.main(["--out", str(sweep), "--write", str(unmarked)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "family-table" in err and str(unmarked) in err
    assert family.main(["--out", str(tmp_path / "nowhere")]) == 2
    assert "no runs/ folder" in capsys.readouterr().err
