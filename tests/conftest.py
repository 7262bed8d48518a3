"""Shared fixtures: the array backends every layer test runs on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy
import pytest
from fuzzing import folder, worker  # noqa: F401  (the fuzzing tests' fixtures)

from lenet5x.arrays import gpu_paths
from lenet5x.backend import BackendError, resolve

MNIST_DIR = Path(
    os.environ.get(
        "LENET5X_TEST_MNIST", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    )
)


def _cupy_available() -> bool:
    try:
        resolve("cupy")
        return True
    except BackendError:
        return False


HAVE_GPU = _cupy_available()


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


HAVE_TORCH, HAVE_JAX = _importable("torch"), _importable("jax")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
HAVE = {
    "torch": HAVE_TORCH,
    "jax": HAVE_JAX,
    "browser": Path("/usr/bin/chromedriver").exists() and _importable("selenium"),
    "fashion-mnist": (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
    # CuPy with the NVRTC and CUDA headers wheels: the fused kernels compiled with no GPU
    "nvrtc": all(map(_importable, ("cupy", "nvidia.cuda_nvrtc", "nvidia.cuda_runtime"))),
    "dask": _importable("distributed"),  # the sweep extra (tests/test_sweep.py)
}
# CI sets this (.ci/run): what it installed must be there, or the tests that need it would skip
_missing = [
    k for k in filter(None, os.environ.get("LENET5X_CI_REQUIRES", "").split(",")) if not HAVE.get(k)
]
if _missing:
    raise pytest.UsageError(f"LENET5X_CI_REQUIRES: not installed here: {', '.join(_missing)}")


def backend_params(dtype="float64"):
    """numpy, array_api_strict on a non-default device, PyTorch and JAX on the CPU (CI installs
    both), and cupy and PyTorch on CUDA when a GPU answers."""
    import array_api_strict

    cases = [
        pytest.param(lambda: resolve("numpy", dtype), id="numpy"),
        pytest.param(
            lambda: resolve("array_api_strict", dtype, device=array_api_strict.Device("device1")),
            id="strict-device1",
        ),
        pytest.param(
            lambda: resolve("torch", dtype, device="cpu"),
            id="torch-cpu",
            marks=pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed"),
        ),
        pytest.param(
            lambda: resolve("jax", dtype, device="cpu"),
            id="jax-cpu",
            marks=pytest.mark.skipif(not HAVE_JAX, reason="JAX is not installed"),
        ),
        pytest.param(
            lambda: resolve("cupy", dtype),
            id="cupy",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not HAVE_GPU, reason="no CuPy / CUDA device"),
            ],
        ),
        pytest.param(  # (JAX on the GPU: test_gpu.py's whole steps; its eager ops are slow here)
            lambda: gpu_backend("torch", dtype),
            id="torch-gpu",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not HAVE_GPU, reason="no CUDA device")],
        ),
    ]
    return cases


def gpu_backend(name: str, dtype: str):
    """PyTorch on CUDA or JAX on the GPU; skipped where that library cannot use the GPU."""
    try:
        return resolve(name, dtype, device={"torch": "cuda", "jax": "gpu"}[name])
    except BackendError as error:
        pytest.skip(str(error))


@pytest.fixture(params=backend_params())
def backend(request):
    return request.param()


@pytest.fixture(params=[False, True], ids=["own-paths", "gpu-paths"])
def paths(request):
    """Each backend's own paths, then the GPU's (namespace.launch_bound) on every backend: where
    the code picks between two array-API paths by their cost, both are checked everywhere."""
    with gpu_paths(request.param):
        yield request.param


@pytest.fixture
def rng():
    return numpy.random.default_rng(1234)


@pytest.fixture(scope="session")
def mnist_dir():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    return MNIST_DIR
