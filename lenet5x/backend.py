"""Backend resolver: a name ("numpy", "cupy", "auto", "array_api_strict") -> array namespace + device.

This is the only module that imports CuPy. Everything else computes through the namespace
returned here (``xp``), so the same layer code runs on NumPy, CuPy and array-api-strict.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy

from .errors import UserError

BACKENDS = ("auto", "numpy", "cupy", "array_api_strict")
CUPY_HINT = (
    "install the CUDA extra that matches your driver, e.g. pip install 'lenet5x[cuda12]' "
    "(or [cuda13]), or use --backend numpy"
)


class BackendError(UserError):
    """A backend was asked for that cannot be used here; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """An array namespace, the device to allocate on, and the dtype to compute in."""

    name: str  # "numpy", "cupy" or "array_api_strict"
    xp: Any  # array-API namespace
    device: Any
    dtype: Any
    note: str = ""  # how "auto" decided, for the user

    def asarray(self, host_array, dtype=None):
        """Move a host (NumPy) array to this backend's device, in `dtype` (default: the compute dtype)."""
        return self.xp.asarray(
            host_array, dtype=self.dtype if dtype is None else dtype, device=self.device
        )

    def to_numpy(self, x) -> numpy.ndarray:
        """Copy an array of this backend back to a host NumPy array."""
        return to_numpy(x)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU); used only around timings."""
        if self.name == "cupy":
            import cupy

            cupy.cuda.get_current_stream().synchronize()


def describe_device(backend: Backend) -> str:
    """A short description of what computes: the GPU's name, or the CPU model and core count."""
    if backend.name == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(backend.device.id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores"


def to_numpy(x) -> numpy.ndarray:
    """Any supported array (NumPy, CuPy, array-api-strict on any device) -> NumPy array."""
    module = type(x).__module__
    if module.startswith("cupy"):
        return x.get()
    if module.startswith("array_api_strict"):
        import array_api_strict

        return numpy.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    return numpy.asarray(x)


def _cupy_or_error():
    try:
        import cupy
    except ImportError as error:
        raise BackendError(f"CuPy is not installed ({error}); {CUPY_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError, driver missing, ...
        raise BackendError(
            f"CuPy is installed but no CUDA device answers ({error}); {CUPY_HINT}"
        ) from None
    if count < 1:
        raise BackendError(f"CuPy is installed but no CUDA device is visible; {CUPY_HINT}")
    return cupy


def resolve(name: str = "auto", dtype: str = "float32", device: Any = None) -> Backend:
    """Return the Backend for `name`.

    name: "numpy", "cupy", "auto" (CuPy when it imports and a CUDA device answers, else NumPy)
        or "array_api_strict" (for tests).
    dtype: "float32" or "float64".
    device: optional device override (e.g. array_api_strict.Device("device1") in tests).
    Raises BackendError with a one-line, actionable message.
    """
    if dtype not in ("float32", "float64"):
        raise BackendError(f"unknown dtype {dtype!r}: use float32 or float64")
    note = ""
    if name == "auto":
        try:
            _cupy_or_error()
            name, note = "cupy", "auto: CuPy found a CUDA device, using cupy"
        except BackendError as error:
            name, note = "numpy", f"auto: using numpy ({str(error).split(';')[0]})"
    if name == "numpy":
        import array_api_compat.numpy as xp

        device = "cpu" if device is None else device
    elif name == "cupy":
        cupy = _cupy_or_error()
        import array_api_compat.cupy as xp

        device = cupy.cuda.Device(0) if device is None else device
    elif name == "array_api_strict":
        import array_api_strict as xp

        device = xp.Device("CPU_DEVICE") if device is None else device
    else:
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return Backend(name=name, xp=xp, device=device, dtype=getattr(xp, dtype), note=note)


def elementwise_kernel(inputs: str, outputs: str, body: str, name: str, preamble: str = ""):
    """A cupy.ElementwiseKernel (lenet5x/fused.py): inputs and outputs as "T x, int64 y", body
    the C statements, preamble the C++ definitions they use. CuPy compiles it on its first call;
    that call raises what kernel_compile_errors() names if the code does not compile."""
    import cupy

    return cupy.ElementwiseKernel(inputs, outputs, body, name, preamble=preamble)


def kernel_compile_errors() -> tuple[type, ...]:
    """What CuPy raises when NVRTC cannot compile a kernel's source."""
    from cupy.cuda.compiler import CompileException

    return (CompileException,)


def keep_freed_host_memory() -> None:
    """Ask glibc's malloc to keep large freed blocks instead of returning them to the OS.

    A training step allocates the same large temporaries every time; by default glibc unmaps them
    on free and the next step pays page faults to get them back (docs/speed.md).
    This only changes the allocator's thresholds; elsewhere than glibc it does nothing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value on 64-bit
    mallopt(m_trim_threshold, 1 << 30)
    mallopt(m_top_pad, 64 << 20)
