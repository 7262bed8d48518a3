"""What a newcomer meets in the first hour (issue 30, point 5): evaluate without the plots extra,
features run twice, export's default place, `| head`, `--show my_4.jpg`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lenet5x
from lenet5x import evaluate, export, features, predict
from lenet5x.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_without_matplotlib_prints_its_tables_and_says_how_to_skip(
    mnist_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plots extra were missing
    status = evaluate.main(["lenet5", "--data-dir", str(mnist_dir), "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 0
    recorded = lenet5x.load("lenet5").test_error  # the shipped network's, from its metadata
    assert f"test error {recorded:.2%}" in out and "\n    9 " in out  # the confusion matrix
    assert "matplotlib is missing" in err and "--no-plots" in err and "lenet5x[plots]" in err
    assert not list(tmp_path.iterdir())


def test_features_says_when_it_replaces_its_pictures(mnist_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    argv = ["lenet5", "--data-dir", str(mnist_dir), "--out", str(tmp_path)]
    assert features.main([*argv, "--index", "0"]) == 0
    assert "replacing" not in capsys.readouterr().out
    assert features.main([*argv, "--index", "1"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'kernels.png'} (replacing the earlier one)" in out
    assert "--out DIR" in out


def test_export_writes_into_the_current_folder_not_the_package(mnist_dir, tmp_path, monkeypatch):
    run = lenet5x.fit(
        "smoke",
        epochs=1,
        data_dir=mnist_dir,
        out=tmp_path / "run",
        log=lambda line: None,
        backend="numpy",
        **{"data.train_subset": 200, "data.test_subset": 500},
    )
    monkeypatch.chdir(tmp_path)
    package = set(export.WEIGHTS.iterdir())
    assert export.main([str(run.run_dir), "--name", "mine"]) == 0
    assert (tmp_path / "mine.npz").exists() and set(export.WEIGHTS.iterdir()) == package
    assert lenet5x.load(str(tmp_path / "mine.npz")).parameter_count == run.network.parameter_count
    assert export.parse_args(["r", "--name", "x", "--into-package"]).out == export.WEIGHTS / "x.npz"
    with pytest.raises(CheckpointError, match="the file mine.npz is here: give its path"):
        lenet5x.load("mine")  # by its name, as if shipped


def test_a_closed_pipe_ends_quietly():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "lenet5x", "info", "lenet5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    process.stdout.close()  # as `| head -0` does: the reader is gone before the first line
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0 and err == ""


def test_show_followed_by_an_image_reads_the_image():
    args = predict.parse_args(["lenet5", "--show", "my_4.jpg"])
    assert args.images == ["my_4.jpg"] and args.show == "."
    args = predict.parse_args(["lenet5", "a.png", "--show", "seen", "b.png"])
    assert args.images == ["a.png", "b.png"] and args.show == "seen"


def test_the_readme_explains_the_epoch_line():
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("epoch  1/20"))
    assert "(full " in line
    assert "`(full ...)` is the error of the" in readme and "`N workers`" in readme
    assert "`train.full_train_eval`" in readme and "`train.workers`" in readme


def test_a_folder_that_cannot_be_made_is_refused_before_the_work(tmp_path, capsys):
    """Where nothing can be created (/proc), the tools say so before any work, in one line with
    what to do; the tutorial also says what its DIR is when given the notebook's own name."""
    from lenet5x import tutorial
    from lenet5x.files import OutputError, output_dir

    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    with pytest.raises(OutputError, match=r"nothing can be made in /proc .*choose another path"):
        output_dir("/proc/lenet5x-nowhere", ["a.png"])
    assert tutorial.main(["/proc/lenet5x-nowhere"]) == 2
    assert "nothing can be made in /proc" in capsys.readouterr().err
    assert tutorial.main([str(tmp_path)]) == 0
    assert tutorial.main([str(tmp_path / tutorial.NAME)]) == 2
    assert "DIR is the folder to write" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / tutorial.NAME]  # the probe left nothing
