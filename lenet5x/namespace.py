"""array_namespace(x), remembered per array type.

array_api_compat.array_namespace inspects its arguments against every library it knows, which
costs more than a small layer's whole pass at batch size 1 (the paper's on-line SDLM). The
namespace depends only on the array's type here (NumPy, CuPy, array-api-strict), so it is looked
up once per type; the table holds one entry per array library in use.

launch_bound(x) says whether an operation on x is a kernel launch from the host (CuPy), for the
one place that picks between two array-API paths by what they cost (im2col.col2im).
"""

from __future__ import annotations

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


def launch_bound(x) -> bool:
    """Whether each operation on x costs a kernel launch from the host (CuPy: a GPU), so that
    fewer, larger operations win over less memory traffic (see im2col.col2im)."""
    return is_cupy_array(x)


__all__ = ["array_namespace", "device", "launch_bound"]
