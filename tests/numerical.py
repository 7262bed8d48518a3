"""Independent references for the tests: finite-difference Jacobians, in float64 NumPy.

Nothing here uses a layer's backward or backward2: only forward passes.
"""

from __future__ import annotations

import numpy

from lenet5x.backend import to_numpy


def jacobian_columns(f, x: numpy.ndarray, columns=None, eps=1e-5) -> numpy.ndarray:
    """Central differences of f (host array -> host array) w.r.t. the flat entries `columns` of x.

    Returns J with shape (f(x).size, len(columns)).
    """
    flat = x.reshape(-1)
    columns = range(flat.size) if columns is None else columns
    cols = []
    for i in columns:
        plus, minus = flat.copy(), flat.copy()
        plus[i] += eps
        minus[i] -= eps
        cols.append((f(plus.reshape(x.shape)) - f(minus.reshape(x.shape))).reshape(-1) / (2 * eps))
    return numpy.stack(cols, axis=1)


def relative_error(a, b) -> float:
    a, b = (
        numpy.asarray(to_numpy(a), dtype=numpy.float64),
        numpy.asarray(to_numpy(b), dtype=numpy.float64),
    )
    scale = max(numpy.abs(a).max(initial=0.0), numpy.abs(b).max(initial=0.0), 1e-30)
    return float(numpy.abs(a - b).max(initial=0.0) / scale)


def sample_columns(size: int, count: int, rng) -> list[int]:
    """All indices if size <= count, else `count` distinct random ones (sorted)."""
    if size <= count:
        return list(range(size))
    return sorted(rng.choice(size, count, replace=False).tolist())
