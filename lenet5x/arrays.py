"""What every array computation here shares: the namespace of an array, constants made once per
device, and the switch between a GPU's and a CPU's path where both pay.

array_namespace(x) is array_api_compat.array_namespace(x) remembered per array type: the lookup
inspects its arguments against every library it knows, which costs more than a small layer's
whole pass at batch size 1 (the paper's on-line SDLM).

constant(key, like, make) is an index table, 0/1 matrix or zero block made once per key, array
library and device.

launch_bound(x) says whether each operation on x is a kernel launch from the host (CuPy), for
the places that keep two array-API paths because each is much faster where it is used
(docs/speed.md, "CPU twins"): ConvMaxPool's gradient routing and DeviceData's batches.
`gpu_paths` makes every array take the GPU's paths: for tests of those paths on the CPU (the
`paths` fixture), and for counting a GPU's operations (benchmarks/op_count.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

from array_api_compat import array_namespace as _lookup
from array_api_compat import device, is_cupy_array, is_jax_array, is_torch_array

_BY_TYPE: dict[type, object] = {}


def array_namespace(x) -> Any:
    """The array-API namespace of x (as array_api_compat.array_namespace(x))."""
    kind = type(x)
    xp = _BY_TYPE.get(kind)
    if xp is None:
        xp = _BY_TYPE[kind] = _lookup(x)
    return xp


_CONSTANTS: dict[tuple, object] = {}  # (what, ..., device) -> array


def constant(key: tuple, like, make) -> Any:
    """An array that depends only on `key` and like's device (index tables, 0/1 matrices, class
    numbers): make(xp, device) once per key and device, the same array after that."""
    dev = device(like)
    if dev is None:  # a traced array (jax.jit): made in the trace, never kept beyond it
        return make(array_namespace(like), dev)
    full = (*key, type(like), str(dev))
    made = _CONSTANTS.get(full)
    if made is None:
        made = _CONSTANTS[full] = make(array_namespace(like), dev)
    return made


def scalar(value, like) -> Any:
    """`value` as a 0-d array of like's dtype and device, made once (constant): for
    xp.maximum(x, 0) and the like, which on PyTorch array-api-compat would otherwise copy the
    Python number to the device on every call, a copy that a CUDA graph cannot capture."""
    return constant(
        ("scalar", value, like.dtype),
        like,
        lambda xp, dev: xp.full((), value, dtype=like.dtype, device=dev),
    )


_GPU_PATHS = [False]  # set by gpu_paths()


def launch_bound(x) -> bool:
    """Whether each operation on x costs a kernel launch from the host (a GPU: CuPy, a CUDA or
    MPS tensor, a JAX array on a GPU), so that fewer, larger operations win over less memory
    traffic (see the module docstring)."""
    if _GPU_PATHS[0] or is_cupy_array(x):
        return True
    if is_torch_array(x):
        return x.device.type != "cpu"
    if is_jax_array(x):
        dev = device(x)
        return dev is None or dev.platform != "cpu"  # None: traced by jax.jit, compiled whole
    return False


@contextlib.contextmanager
def gpu_paths(enabled: bool = True):
    """Within the block, launch_bound is true for every array (enabled) or as usual."""
    saved = _GPU_PATHS[0]
    _GPU_PATHS[0] = enabled
    try:
        yield
    finally:
        _GPU_PATHS[0] = saved


__all__ = ["array_namespace", "constant", "device", "gpu_paths", "launch_bound"]
