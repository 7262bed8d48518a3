"""Every fused kernel (lenet5x/fused.py) compiled as CuPy compiles it on an H100/H200 (sm_90), by
NVRTC from PyPI's CUDA wheels, with no GPU: CuPy's generated source, headers and options
(backend.elementwise_kernel_cubin). Skipped without cupy-cuda12x and the NVRTC and runtime-headers
wheels; CI installs them and requires them (LENET5X_CI_REQUIRES=nvrtc). What only a device checks
(loading, launching, the results): tests/test_fused.py's gpu tests, docker/gpu_checks.sh."""

from __future__ import annotations

import pytest
from conftest import HAVE

from lenet5x import fused
from lenet5x.backend import kernel_compile_errors

pytestmark = pytest.mark.skipif(
    not HAVE["nvrtc"], reason="needs cupy-cuda12x, nvidia-cuda-nvrtc-cu12, nvidia-cuda-runtime-cu12"
)
ELF = b"\x7fELF"  # a cubin is an ELF file of GPU code


@pytest.mark.parametrize("kernel", fused.KERNELS, ids=lambda kernel: kernel.name)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_fused_kernel_compiles_for_sm_90(kernel, dtype):
    for scalars in (False, True):  # inputs as arrays, then as numbers (Python floats)
        assert kernel.cubin("90", dtype, scalars).startswith(ELF)


def test_a_kernel_with_a_c_error_does_not_compile():
    # within the common syntax (fused.py checks names and operators, not arity): only C refuses it
    broken = fused.Kernel("broken", "y g", (("dx", "where_positive(y)"),))
    with pytest.raises(kernel_compile_errors(), match="where_positive"):
        broken.cubin("90", "float32")


def test_compile_all_compiles_each_kernel_four_ways_and_stops_at_an_error(monkeypatch):
    relu = fused.RELU_BACKWARD
    monkeypatch.setattr(fused, "KERNELS", (relu,))
    assert fused.compile_all("90") == 4  # float32, float64; arrays, numbers
    broken = fused.Kernel("broken", "y g", (("dx", "where_positive(y, g, g)"),))
    monkeypatch.setattr(fused, "KERNELS", (relu, broken))
    with pytest.raises(kernel_compile_errors()):
        fused.compile_all("90")
