"""array_namespace(x), remembered per array type.

array_api_compat.array_namespace inspects its arguments against every library it knows, which
costs more than a small layer's whole pass at batch size 1 (the paper's on-line SDLM). The
namespace depends only on the array's type here (NumPy, CuPy, array-api-strict), so it is looked
up once per type; the table holds one entry per array library in use.

launch_bound(x) says whether an operation on x is a kernel launch from the host (CuPy), for the
places that pick between two array-API paths by what they cost: fewer operations on a GPU, less
memory traffic on a CPU (im2col.col2im, ConvMaxPool's and ReLU's gradients, subsample.sum_2x2,
DeviceData's batches, and the fused kernels of the scaled tanh, the subsampling and Adam:
fused.py). `gpu_paths` makes every array take the GPU's paths: for tests of those
paths on the CPU (the `paths` fixture), and for counting a GPU's operations
(benchmarks/op_count.py).
"""

from __future__ import annotations

import contextlib

from array_api_compat import array_namespace as _lookup
from array_api_compat import device, is_cupy_array

_BY_TYPE: dict[type, object] = {}


def array_namespace(x):
    """The array-API namespace of x (as array_api_compat.array_namespace(x))."""
    kind = type(x)
    xp = _BY_TYPE.get(kind)
    if xp is None:
        xp = _BY_TYPE[kind] = _lookup(x)
    return xp


_CONSTANTS: dict[tuple, object] = {}  # (what, ..., device) -> array


def constant(key: tuple, like, make):
    """An array that depends only on `key` and like's device (index tables, 0/1 matrices, class
    numbers): make(xp, device) once per key and device, the same array after that."""
    dev = device(like)
    full = (*key, str(dev))
    made = _CONSTANTS.get(full)
    if made is None:
        made = _CONSTANTS[full] = make(array_namespace(like), dev)
    return made


_GPU_PATHS = [False]  # set by gpu_paths()


def launch_bound(x) -> bool:
    """Whether each operation on x costs a kernel launch from the host (CuPy: a GPU), so that
    fewer, larger operations win over less memory traffic (see the module docstring)."""
    return _GPU_PATHS[0] or is_cupy_array(x)


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
