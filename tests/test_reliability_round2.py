"""The second round of tried-and-failed inputs, each through the real command line (docs/reliability.md,
"Round 2"): alias bombs in a config, two trainings on one run directory, the wrong dataset, a best
epoch picked on the test set, running from the checkout's parent folder, files only their writer
could read, progress frames in logs, and a mistyped --data-dir left behind as an empty folder."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy
import pytest
from reliability import (
    ROOT,
    SMOKE,
    command,
    environment,
    limited,
    refused,
    snapshot,
    train,
    write_dataset,
)  # fmt: skip

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)


def bomb(levels: int = 9) -> str:
    """A YAML flow sequence that expands to 9**levels items if anything walks it ("billion
    laughs"): each level's anchor references the one below nine times."""
    parts = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        parts.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "[" + ", ".join(parts) + "]"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("round2") / "data")


# -- 1. a YAML alias bomb as a value --------------------------------------------------------------


@pytest.mark.parametrize("key", ["train.epochs", "model.architecture", "data.dataset"])
def test_an_alias_bomb_as_a_value_is_refused_at_once(key, tmp_path, dataset):
    section, name = key.split(".")
    config = tmp_path / "bomb.yaml"
    config.write_text(f"{section}:\n  {name}: {bomb()}\n")
    start = time.monotonic()
    refused(tmp_path, dataset, ["--config", config, "--data-dir", dataset], f"{key}: ")
    assert time.monotonic() - start < 20  # the repr of the value was 9**9 items: minutes, GBs


def test_an_alias_bomb_in_set_is_refused_at_once(tmp_path, dataset):
    start = time.monotonic()
    refused(tmp_path, dataset, ["--config", SMOKE, "--set", f"train.seed={bomb()}"], "train.seed")
    assert time.monotonic() - start < 20


# -- 2. two trainings on one run directory --------------------------------------------------------


def test_a_run_directory_is_locked_while_it_trains_and_free_after_a_kill(tmp_path, dataset):
    run = tmp_path / "run"
    first = train(
        "--config", SMOKE, "--data-dir", dataset, "--out", run, "--epochs", 1, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    long = command("--resume", run, "--epochs", 100000)
    busy = subprocess.Popen(
        long, cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, text=True
    )
    try:
        while "run dir" not in (line := busy.stdout.readline()):  # it has started training
            assert line, "the first run ended before the second could start"
        second = train("--resume", run, "--epochs", 100000, cwd=tmp_path)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"{run}: a training run (pid {busy.pid}) is running in this directory" in lines[0]
        fresh = train("--config", SMOKE, "--data-dir", dataset, "--out", run, cwd=tmp_path)
        assert fresh.returncode == 2  # a new run there is refused as before (it holds a run)
    finally:
        busy.send_signal(signal.SIGKILL)  # a crash: the lock goes with the process
        busy.wait()
    with numpy.load(run / "checkpoint.npz", allow_pickle=False) as archive:
        done = json.loads(str(archive["meta"]))["epoch"]
    after = train("--resume", run, "--epochs", done + 1, cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, done + 2))  # one writer: no interleaving


# -- 3. the wrong dataset ---------------------------------------------------------------------------


@needs_fashion
def test_fashion_mnist_files_under_the_name_mnist_are_refused(tmp_path):
    args = ["--config", SMOKE, "--data-dir", FASHION, "--out", tmp_path / "run"]
    refused(
        tmp_path, FASHION, args, "this is fashion-mnist's train-images-idx3-ubyte file, not mnist's"
    )


@needs_fashion
def test_mnist_files_under_the_name_fashion_mnist_are_refused(tmp_path, mnist_dir):
    args = ["--config", SMOKE, "--data-dir", mnist_dir, "--set", "data.dataset=fashion-mnist"]
    refused(tmp_path, mnist_dir, [*args, "--out", tmp_path / "run"], "this is mnist's")


@needs_fashion
def test_a_fashion_model_is_not_scored_on_mnist(tmp_path, mnist_dir):
    run = tmp_path / "fashion"
    small = ["--set", "data.train_subset=300", "--set", "data.test_subset=100"]
    args = ["--config", SMOKE, "--data-dir", FASHION, "--set", "data.dataset=fashion-mnist", *small]
    result = train(*args, "--out", run, "--epochs", 1, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    evaluate = [
        sys.executable,
        "-m",
        "lenet5x.evaluate",
        run,
        "--data-dir",
        mnist_dir,
        "--no-plots",
    ]
    scored = subprocess.run(
        evaluate, capture_output=True, text=True, env=environment(), cwd=tmp_path
    )
    assert scored.returncode == 2 and "Traceback" not in scored.stderr, (
        scored.stdout + scored.stderr
    )
    assert "this is mnist's train-images-idx3-ubyte file, not fashion-mnist's" in scored.stderr


def test_files_of_no_known_dataset_train_with_a_note_and_are_recorded(tmp_path, dataset):
    result = train(
        "--config", SMOKE, "--data-dir", dataset, "--out", tmp_path / "run", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "does not hold the published mnist files" in result.stdout
    with numpy.load(tmp_path / "run" / "checkpoint.npz", allow_pickle=False) as archive:
        recorded = json.loads(str(archive["meta"]))["dataset"]
    assert recorded["name"] == "mnist" and recorded["verified"] is False
    assert len(recorded["sha256"]) == 4


def test_a_model_is_not_scored_on_another_test_set_unless_asked(tmp_path, dataset):
    run = tmp_path / "run"
    assert (
        train("--config", SMOKE, "--data-dir", dataset, "--out", run, cwd=tmp_path).returncode == 0
    )
    other = write_dataset(tmp_path / "other", seed=5)  # same name, other files
    base = [sys.executable, "-m", "lenet5x.evaluate", run, "--data-dir", other, "--no-plots"]
    scored = subprocess.run(base, capture_output=True, text=True, env=environment(), cwd=tmp_path)
    assert (
        scored.returncode == 2
        and "not the mnist test set this model was trained with" in scored.stderr
    )
    asked = subprocess.run(
        [*base, "--other-data"], capture_output=True, text=True, env=environment(), cwd=tmp_path
    )
    assert asked.returncode == 0, asked.stderr


# -- 4. no best epoch chosen on the test set --------------------------------------------------------


def test_without_validation_the_tools_use_the_final_weights_and_say_so(tmp_path, dataset):
    run = tmp_path / "run"
    assert (
        train("--config", SMOKE, "--data-dir", dataset, "--out", run, cwd=tmp_path).returncode == 0
    )
    assert not (run / "best.npz").exists()
    evaluate = [sys.executable, "-m", "lenet5x.evaluate", run, "--no-plots"]
    scored = subprocess.run(
        evaluate, capture_output=True, text=True, env=environment(), cwd=tmp_path
    )
    assert scored.returncode == 0, scored.stderr
    assert (
        "checkpoint.npz (the run's final weights: no validation split chose a best epoch)"
        in scored.stdout
    )


# -- 5. running from the checkout's parent folder ----------------------------------------------------


def test_the_package_imports_from_the_checkouts_parent_folder(tmp_path, mnist_dir):
    """The README's layout puts you in the folder that holds the checkout (named lenet5x) and
    shared/: there `lenet5x` is also the checkout's folder, a namespace package without the code."""
    (tmp_path / "lenet5x").symlink_to(ROOT, target_is_directory=True)
    env = environment()
    env["PYTHONPATH"] = env["PYTHONPATH"].replace(str(ROOT), "")  # as an install finds it
    helped = subprocess.run(
        command("--help"), capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert helped.returncode == 0 and "Traceback" not in helped.stderr, helped.stderr
    digit = tmp_path / "digit.png"
    pytest.importorskip("PIL.Image").fromarray(_first_test_digit(mnist_dir)).save(digit)
    predict = [sys.executable, "-m", "lenet5x.predict", "lenet5", digit]
    answered = subprocess.run(predict, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert answered.returncode == 0, answered.stderr  # the RBF bitmaps and weights were found
    assert answered.stdout.splitlines()[-1].split()[1] == "7"


def _first_test_digit(mnist_dir):
    from lenet5x.data import read_idx_images

    return read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")[0]


# -- 6. files follow the umask -----------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def mirror(tmp_path, mnist_dir):
    """An HTTP server on 127.0.0.1 serving the four real MNIST files."""
    root = tmp_path / "www"
    root.mkdir()
    for path in mnist_dir.glob("*-ubyte.gz"):
        shutil.copy(path, root / path.name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_written_files_follow_the_umask(tmp_path, mirror):
    env = dict(environment(), LENET5X_MIRROR=mirror)
    data, run = tmp_path / "data", tmp_path / "run"
    small = ["--set", "data.train_subset=200", "--set", "data.test_subset=100", "--epochs", 1]
    args = limited(
        command("--config", SMOKE, "--data-dir", data, "--out", run, *small), umask=0o022
    )
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for path in [
        *data.glob("*.gz"),
        run / "checkpoint.npz",
        run / "config.yaml",
        run / "metrics.jsonl",
    ]:
        assert _mode(path) == 0o644, f"{path.name}: {oct(_mode(path))}"


# -- 7. no progress frames in a log ------------------------------------------------------------------


def test_no_progress_frames_where_stderr_is_not_a_terminal(tmp_path, dataset):
    args = [
        "--config",
        SMOKE,
        "--data-dir",
        dataset,
        "--out",
        tmp_path / "run",
        "--set",
        "train.progress=true",
    ]
    result = train(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "\r" not in result.stderr and "batch/s" not in result.stderr and "it/s" not in result.stderr
    )
    assert "epoch  2/2" in result.stdout


# -- 8. nothing created for a bad path ----------------------------------------------------------------


def test_a_mistyped_data_dir_is_not_created_by_a_failed_download(tmp_path):
    wrong = tmp_path / "dtaa" / "mnsit"
    before = snapshot(tmp_path)
    result = train("--config", SMOKE, "--data-dir", wrong, "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 2 and "could not download" in result.stderr, result.stderr
    assert not wrong.exists() and not wrong.parent.exists()
    assert snapshot(tmp_path) == before
