"""The same hand-written passes on PyTorch and JAX arrays: training through the command line,
a run resumed on another library, JAX's compiled step against its eager one, and the one-line
error where a library is missing. (The layers' gradient and second-derivative checks run on both
libraries through the `backend` fixture; test_model.py has a whole step of each model.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
from conftest import HAVE_GPU, HAVE_JAX, HAVE_TORCH
from reliability import params_of

from lenet5x.backend import resolve, to_numpy
from lenet5x.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
needs_jax = pytest.mark.skipif(not HAVE_JAX, reason="JAX is not installed")
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA device")


def train(*args, cwd, env=None):
    command = [sys.executable, "-m", "lenet5x.train", "--config", "smoke", *map(str, args)]
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("libraries") / "numpy"
    train("--data-dir", mnist_dir, "--out", out, cwd=out.parent)
    return out


@pytest.mark.parametrize(
    "backend, extra",
    [
        pytest.param("torch", [], marks=needs_torch, id="torch"),
        pytest.param("jax", [], marks=needs_jax, id="jax"),
        pytest.param("jax", ["--set", "train.compile=true"], marks=needs_jax, id="jax-compiled"),
    ],
)
def test_the_smoke_config_trains_as_on_numpy(backend, extra, numpy_run, mnist_dir, tmp_path):
    out = tmp_path / backend
    result = train(
        "--data-dir", mnist_dir, "--out", out, "--backend", backend, *extra, cwd=tmp_path
    )
    assert f"| {backend} float32 |" in result.stdout
    mine, reference = records(out), records(numpy_run)
    assert [r["epoch"] for r in mine] == [1, 2]
    # the same float32 operations in other kernels: the same test error within noise
    assert abs(mine[-1]["test_error"] - reference[-1]["test_error"]) <= 0.01
    assert mine[-1]["backend"] == backend


@needs_torch
def test_a_numpy_run_resumed_on_torch_ends_with_the_uninterrupted_weights(tmp_path, mnist_dir):
    small = ["--data-dir", mnist_dir, "--dtype", "float64", "--set", "data.train_subset=400"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(*small, "--out", whole, cwd=tmp_path)
    train(*small, "--out", split, "--epochs", 1, cwd=tmp_path)
    resumed = [
        sys.executable,
        "-m",
        "lenet5x.train",
        "--resume",
        split,
        "--backend",
        "torch",
        "--epochs",
        2,
    ]
    result = subprocess.run(list(map(str, resumed)), capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert records(split)[-1]["backend"] == "torch" and records(split)[0]["backend"] == "numpy"
    a, b = params_of(whole / "checkpoint.npz"), params_of(split / "checkpoint.npz")
    for key in a:
        numpy.testing.assert_allclose(b[key], a[key], rtol=1e-9, atol=1e-11, err_msg=key)


def _steps(backend, config: ModelConfig, compiled: bool, steps: int = 6):
    """`steps` training updates of `config` on synthetic data (the second distorted, the last on a
    smaller batch: a compiled step compiles anew for each, and is replayed from the third step;
    SDLM's rates renewed after the third, as a new pass does); the host parameters after them.
    Also checks that the parameters a step returned are not changed by the steps after it (a CUDA
    graph replays into the same memory)."""
    from lenet5x.data import DeviceData
    from lenet5x.model import build_model
    from lenet5x.optim import SDLM, Adam
    from lenet5x.step import CompiledStep, TrainStep

    rng = numpy.random.default_rng(0)
    images = rng.integers(0, 256, (64, 32, 32)).astype(numpy.uint8)
    data = DeviceData(backend, images, rng.integers(0, 10, 64), 1 / 255, -0.1)
    model = build_model(config)
    params = model.init(numpy.random.default_rng(1), backend)
    if config.architecture == "classic":
        optimizer = SDLM()
        x, labels = data.batch(backend.asarray(numpy.arange(32), dtype=backend.xp.int64))
        state = optimizer.set_curvature(
            optimizer.init_state(params), model.hessian_diagonal(params, x, labels), 0
        )
    else:
        optimizer = Adam([(None, 1e-3)], weight_decay=1e-4)
        state = optimizer.init_state(params)
    step = (CompiledStep if compiled else TrainStep)(model, optimizer, data)
    maps = backend.asarray(numpy.tile([1.0, 0.1, 0.0, 0.95, 0.5, -0.5], (16, 1)))
    kept = None
    for i, size in enumerate([16] * (steps - 1) + [8]):
        idx = backend.asarray(numpy.arange(16 * i, 16 * i + size) % 64, dtype=backend.xp.int64)
        params, state, total, errors = step(params, state, idx, 0, maps if i == 1 else None)
        if i == 1:
            kept = (params, {k: to_numpy(v) for k, v in params.items()})
        if i == 2 and config.architecture == "classic":  # a new pass: new rates, new arrays
            x, labels = data.batch(backend.asarray(numpy.arange(32, 64), dtype=backend.xp.int64))
            state = optimizer.set_curvature(state, model.hessian_diagonal(params, x, labels), 0)
    for k, v in kept[1].items():
        numpy.testing.assert_array_equal(to_numpy(kept[0][k]), v, err_msg=f"{k} changed later")
    return {k: to_numpy(v) for k, v in params.items()} | {"total": to_numpy(total)}


COMPILED_ON = [
    pytest.param("jax", "cpu", marks=needs_jax, id="jax-cpu"),
    pytest.param("jax", "gpu", marks=[needs_jax, pytest.mark.gpu, needs_gpu], id="jax-gpu"),
    pytest.param("torch", "cuda", marks=[needs_torch, pytest.mark.gpu, needs_gpu], id="torch-cuda"),
]


@pytest.mark.parametrize("library, device", COMPILED_ON)
@pytest.mark.parametrize(
    "config",
    [ModelConfig(), ModelConfig(architecture="modern", batch_norm=True), ModelConfig("modern")],
    ids=["classic-sdlm", "modern-bn-adam", "modern-adam"],
)
def test_the_compiled_step_gives_the_eager_steps_numbers(config, library, device):
    backend = resolve(library, "float64", device=device)
    eager, compiled = _steps(backend, config, False), _steps(backend, config, True)
    assert eager.keys() == compiled.keys()
    for key in eager:  # XLA fuses and may contract a * b + c: not bit for bit, to float64's noise
        numpy.testing.assert_allclose(
            compiled[key], eager[key], rtol=1e-10, atol=1e-12, err_msg=key
        )


@needs_torch
@pytest.mark.parametrize(
    "config",
    [ModelConfig(), ModelConfig(architecture="modern", batch_norm=True), ModelConfig("modern")],
    ids=["classic-sdlm", "modern-bn-adam", "modern-adam"],
)
def test_a_step_replayed_from_a_simulated_cuda_graph_gives_the_eager_steps_numbers(
    config, monkeypatch
):
    """backend.GraphedFunction on the CPU, its CUDA graphs simulated (graph_replay.py): the
    bookkeeping (what is copied in, carried, cloned out; a new graph per shape) and the step's
    capturability (no host data, no host reads) are checked without a GPU."""
    import graph_replay

    from lenet5x import step as step_module
    from lenet5x.backend import GraphedFunction

    graph_replay.simulate(monkeypatch)
    monkeypatch.setattr(
        step_module, "compile_function", lambda f, backend, carry=0: GraphedFunction(f, carry)
    )
    backend = resolve("torch", "float64", device="cpu")
    eager, compiled = _steps(backend, config, False), _steps(backend, config, True)
    for key in eager:
        numpy.testing.assert_array_equal(compiled[key], eager[key], err_msg=key)


@needs_torch
def test_the_simulated_cuda_graph_refuses_what_a_capture_refuses(monkeypatch):
    """The simulation is only as good as what it refuses: a Python number copied to the device
    (array-api-compat's maximum(x, 0.0) on PyTorch) and a value read back to the host."""
    import array_api_compat.torch as xp
    import graph_replay
    import torch

    from lenet5x.backend import GraphedFunction

    graph_replay.simulate(monkeypatch)
    x = torch.arange(4.0) - 2
    assert GraphedFunction(lambda a: xp.maximum(a, torch.zeros(())))(x).tolist() == [0, 0, 0, 1]
    with pytest.raises(RuntimeError, match="host data"):
        GraphedFunction(lambda a: xp.maximum(a, 0.0))(x)
    with pytest.raises(RuntimeError, match="read back"):
        GraphedFunction(lambda a: a * float(a.sum()))(x)


@needs_torch
def test_a_compiled_step_on_torch_without_cuda_is_a_one_line_error(tmp_path, mnist_dir):
    command = [sys.executable, "-m", "lenet5x.train", "--config", "smoke", "--backend", "torch"]
    command += ["--device", "cpu", "--set", "train.compile=true", "--data-dir", str(mnist_dir)]
    command += ["--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "torch with a CUDA device" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("library, extra", [("torch", "lenet5x[torch]"), ("jax", "lenet5x[jax]")])
def test_a_missing_library_is_a_one_line_error(library, extra, tmp_path):
    stub = tmp_path / "stub" / library / "__init__.py"  # a library that fails to import
    stub.parent.mkdir(parents=True)
    stub.write_text(f"raise ImportError('{library} is hidden by this test')\n")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(stub.parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    command = [sys.executable, "-m", "lenet5x.train", "--config", "smoke", "--backend", library]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and f"pip install '{extra}'" in lines[0]
