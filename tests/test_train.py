"""python -m lenet5x.train end to end, through the real command line, on real MNIST subsets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def train(*args, check=True, cwd=None, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", "lenet5x.train", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def params_of(path) -> dict:
    with numpy.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files if k.startswith("param/")}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    result = train("--config", SMOKE, "--data-dir", mnist_dir, "--out", out)
    return out, result


def test_smoke_run_learns_and_writes_its_run_directory(smoke_run):
    out, result = smoke_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["test_error"] < 0.3  # chance is 0.9
    assert {"train_loss", "train_error", "test_error", "seconds", "sdlm_rates"} <= set(records[-1])
    assert set(records[-1]["sdlm_rates"]) == {"C1", "S2", "C3", "S4", "C5", "F6"}
    for name in ("config.yaml", "checkpoint.npz"):
        assert (out / name).is_file()
    assert not (
        out / "best.npz"
    ).exists()  # no validation split: no epoch is chosen on the test set
    assert "epoch  2/2" in result.stdout and "test err" in result.stdout
    written = (out / "config.yaml").read_text()
    assert "train_subset: 2000" in written
    assert "loss: map" in written  # smoke.yaml leaves the criterion to the default: named here


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(smoke_run, tmp_path, mnist_dir):
    reference, _ = smoke_run
    out = tmp_path / "split"
    train("--config", SMOKE, "--data-dir", mnist_dir, "--out", out, "--epochs", "1")
    result = train("--resume", out, "--epochs", "2", "--data-dir", mnist_dir)
    assert "resuming" in result.stdout
    a, b = params_of(reference / "checkpoint.npz"), params_of(out / "checkpoint.npz")
    assert a.keys() == b.keys()
    for key in a:
        numpy.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_relative_data_dir_still_names_the_data_from_another_folder(tmp_path, mnist_dir):
    """--data-dir as typed is relative to where the run was started; the run records it absolute,
    so that resuming and evaluating it from elsewhere, without --data-dir, find the same data
    (they looked for ../data from the new folder, then tried to download)."""
    started, elsewhere, out = tmp_path / "a" / "b", tmp_path / "c", tmp_path / "run"
    started.mkdir(parents=True), elsewhere.mkdir()
    relative = os.path.relpath(mnist_dir, started)
    train("--config", SMOKE, "--data-dir", relative, "--out", out, "--epochs", "1", cwd=started)
    saved = yaml.safe_load((out / "config.yaml").read_text())["data"]["dir"]
    assert os.path.isabs(saved) and os.path.samefile(saved, mnist_dir)
    env = {k: v for k, v in os.environ.items() if k != "LENET5X_DATA_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), LENET5X_MIRROR="http://127.0.0.1:9/")
    for command in (["lenet5x.train", "--resume", out, "--epochs", "2"], ["lenet5x.evaluate", out]):
        result = subprocess.run(
            [sys.executable, "-m", *map(str, command)],
            capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "downloading" not in result.stderr


def test_a_stop_asked_for_as_the_last_pass_ends_is_answered(tmp_path, mnist_dir):
    """Ctrl-C while the last pass is scored and saved: the run completes (nothing to stop) and
    says so, instead of ignoring the request."""
    from types import SimpleNamespace

    from lenet5x.config import load_config
    from lenet5x.loop import fit

    config = load_config(SMOKE, [f"data.dir={mnist_dir}", f"train.out={tmp_path / 'run'}",
                                 "train.epochs=1", "train.progress=false"])  # fmt: skip
    stop, said = SimpleNamespace(requested=False), []
    run = fit(config, "smoke", log=said.append, stop=stop,
              after_pass=lambda run: setattr(stop, "requested", True))  # fmt: skip
    assert run.epoch == 1 and (tmp_path / "run" / "checkpoint.npz").is_file()
    assert any("stop asked for as the last pass ended" in line for line in said), said


def test_a_run_on_the_papers_distortion_pool_resumes_to_the_same_weights(tmp_path, mnist_dir):
    pool = ["--set", "data.distortions.enabled=true", "--set", "data.distortions.pool=4500"]
    small = ["--set", "data.train_subset=500", "--set", "data.test_subset=200"]
    args = ["--config", SMOKE, "--data-dir", mnist_dir, *pool, *small]
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(*args, "--out", whole)
    train(*args, "--out", split, "--epochs", "1")
    train("--resume", split, "--epochs", "2", "--data-dir", mnist_dir)
    a, b = params_of(whole / "checkpoint.npz"), params_of(split / "checkpoint.npz")
    for key in a:
        numpy.testing.assert_array_equal(a[key], b[key], err_msg=key)
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["test_error"] < 0.5  # it learns (chance is 0.9)


def test_existing_run_is_not_overwritten(smoke_run, mnist_dir):
    out, _ = smoke_run
    before = (out / "checkpoint.npz").read_bytes()
    result = train("--config", SMOKE, "--data-dir", mnist_dir, "--out", out, check=False)
    assert result.returncode == 2 and "--resume" in result.stderr
    assert (out / "checkpoint.npz").read_bytes() == before


@pytest.mark.parametrize(
    "content, args, needle",
    [
        ("train:\n  batch_sise: 8\n", [], "train.batch_sise: unknown key"),
        ("train:\n  epochs: many\n", [], "train.epochs: expected an integer"),
        ("train: [1, 2\n", [], "malformed YAML"),
        ("optimizer:\n  schedule: [[2, -0.1]]\n", [], "rate: must be > 0"),
        ("", ["--set", "train.batch_size=0"], "train.batch_size: must be > 0"),
        ("", ["--set", "data.distortions.pool=-1"], "data.distortions.pool: must be >= 0"),
        ("", ["--set", "model.depth=3"], "unknown key 'model.depth'"),
        ("", ["--backend", "tpu"], "invalid choice"),
        ("data:\n  train_subset: 100\n", ["--batch-size", "1000"], "larger than the training set"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path, mnist_dir, content, args, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    result = train(
        "--config", config, "--data-dir", mnist_dir, "--out", tmp_path / "run", *args, check=False
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_validation_split_selects_the_best_checkpoint(tmp_path, mnist_dir):
    out = tmp_path / "val"
    train(
        "--config", SMOKE, "--data-dir", mnist_dir, "--out", out, "--epochs", "2",
        "--set", "data.validation_size=300", "--set", "data.train_subset=1500",
    )  # fmt: skip
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("val_error" in r for r in records)
    with numpy.load(out / "best.npz", allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
    best = min(records, key=lambda r: r["val_error"])
    assert meta["best_error"] == best["val_error"] and meta["epoch"] == best["epoch"]
    assert meta["input_scale"] > 0 and "machine" in records[0]


def test_modern_bn_with_28x28_inputs_trains(tmp_path, mnist_dir):
    out = tmp_path / "bn"
    result = train(
        "--config", ROOT / "configs" / "modern-bn.yaml", "--data-dir", mnist_dir, "--out", out,
        "--epochs", "1", "--batch-size", "32", "--no-progress",
        "--set", "data.train_subset=2000", "--set", "data.test_subset=500",
        "--set", "data.validation_size=0",
    )  # fmt: skip
    assert "batch norm" in result.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["test_error"] < 0.5
    with numpy.load(out / "checkpoint.npz", allow_pickle=False) as archive:
        running = archive["param/P2_bn.running_var"]
    assert not numpy.allclose(running, 1.0)  # the running statistics were updated and saved
    # so they are not constants: the run restores (evaluate, predict) and resumes
    from lenet5x.backend import to_numpy
    from lenet5x.restore import restore

    restored = restore(out, "numpy")
    numpy.testing.assert_array_equal(to_numpy(restored.params["P2_bn.running_var"]), running)
    train("--resume", out, "--epochs", "2", "--data-dir", mnist_dir, "--no-progress")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_the_default_configuration_is_configs_lenet5_yaml():
    from lenet5x.config import Config, load_config

    assert load_config() == load_config(ROOT / "configs" / "lenet5.yaml") == Config()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_builds_its_model(name):
    from lenet5x.config import load_config
    from lenet5x.model import build_model

    config = load_config(ROOT / "configs" / name)
    model = build_model(config.model)
    assert model.shapes[-1] == (10,)


def test_a_dead_pass_is_redone_with_more_damping_and_resumes_with_it(tmp_path, mnist_dir):
    # the paper's eta for pass 1, then eta = 5, which saturates every unit: pass 2 kills the network
    killer = [
        "--set",
        "optimizer.schedule=[[1,0.0005],[null,5.0]]",
        "--set",
        "data.train_subset=500",
    ]
    small = ["--set", "data.test_subset=200", "--set", "optimizer.hessian_samples=100"]
    out = tmp_path / "dead"
    args = ["--config", SMOKE, "--data-dir", mnist_dir, *killer, *small]
    result = train(*args, "--epochs", 2, "--out", out)
    assert "epoch 2: training error" in result.stdout
    assert "redoing this epoch from its start with SDLM damping mu = 0.2" in result.stdout
    assert "redoing this epoch from its start with SDLM damping mu = 2" in result.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["sdlm_mu"] for r in records] == pytest.approx([0.02, 2.0])

    resumed = train("--resume", out, "--epochs", 3, "--data-dir", mnist_dir)
    assert "redoing" not in resumed.stdout  # both retries were spent before the checkpoint
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[2]["sdlm_mu"] == pytest.approx(2)

    literal = train(*args, "--epochs", 2, "--out", tmp_path / "literal",
                    "--set", "optimizer.damping_retries=0")  # fmt: skip
    assert "redoing" not in literal.stdout
    lines = (tmp_path / "literal" / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["sdlm_mu"] == pytest.approx(0.02) and record["train_error"] > 0.5


def test_pass_order_is_one_permutation_kept_or_a_new_one_each_pass():
    from lenet5x.loop import pass_order

    kept = [pass_order(5, epoch, 1000, "once") for epoch in range(3)]
    fresh = [pass_order(5, epoch, 1000, "every_pass") for epoch in range(3)]
    for order in kept + fresh:
        assert numpy.array_equal(numpy.sort(order), numpy.arange(1000))
    assert all(numpy.array_equal(kept[0], order) for order in kept)
    assert not numpy.array_equal(fresh[0], fresh[1]) and not numpy.array_equal(fresh[1], fresh[2])
    assert not numpy.array_equal(pass_order(6, 0, 1000, "once"), kept[0])  # follows the seed
