"""im2col.py: each gather's scatter is its exact adjoint, <A x, c> = <x, A^T c>, on every path."""

from __future__ import annotations

import numpy
import pytest

from lenet5x.backend import to_numpy
from lenet5x.im2col import (
    blocked_col2im,
    blocked_im2col,
    blocked_weight,
    blocked_weight_adjoint,
    col2im,
    im2col,
)


def inner(a, b) -> float:
    return float(numpy.sum(to_numpy(a) * to_numpy(b)))


VARIANTS = [
    pytest.param(im2col, col2im, (7, 6), id="plain"),
    pytest.param(blocked_im2col, blocked_col2im, (8, 10), id="blocked"),
]


@pytest.mark.parametrize("gather, scatter, size", VARIANTS)
@pytest.mark.parametrize("n", [1, 40])
def test_col2im_is_the_adjoint_of_im2col(gather, scatter, size, n, backend, rng):
    shape, k = (2, *size, n), 3
    x = backend.asarray(rng.normal(size=shape))
    cols = gather(x, k)
    c_host = rng.normal(size=cols.shape)
    back = scatter(backend.asarray(c_host), shape, k)
    assert back.shape == shape
    assert abs(inner(cols, c_host) - inner(x, back)) < 1e-10 * abs(inner(cols, c_host))
    # and it adds the entries in the order slice-additions in row-major order would: exactly
    window, stride = (k, 1) if gather is im2col else (k + 1, 2)
    mh, mw = (size[0] - window) // stride + 1, (size[1] - window) // stride + 1
    entries = c_host.reshape(2, window, window, mh, mw, n)
    expected = numpy.zeros(shape)
    for a in range(window):
        for b in range(window):
            span = (
                slice(a, a + stride * (mh - 1) + 1, stride),
                slice(b, b + stride * (mw - 1) + 1, stride),
            )
            expected[:, span[0], span[1], :] += entries[:, a, b]
    if backend.name in ("numpy", "array_api_strict"):  # NumPy's sum over the candidates' axis
        numpy.testing.assert_array_equal(to_numpy(back), expected)
    else:  # another library's reduction may add in another order
        numpy.testing.assert_allclose(to_numpy(back), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("gather, scatter, size", VARIANTS)
def test_im2col_columns_are_the_windows_under_each_output(gather, scatter, size, backend, rng):
    # the definition, by loops: row (c, a, b), column (output or block (bi, bj), image n)
    shape, k = (2, *size, 3), 3
    x_host = rng.normal(size=shape)
    window, stride = (k, 1) if gather is im2col else (k + 1, 2)
    mh, mw = (size[0] - window) // stride + 1, (size[1] - window) // stride + 1
    expected = numpy.empty((2, window, window, mh, mw, 3))
    for a in range(window):
        for b in range(window):
            for bi in range(mh):
                for bj in range(mw):
                    expected[:, a, b, bi, bj] = x_host[:, stride * bi + a, stride * bj + b]
    cols = to_numpy(gather(backend.asarray(x_host), k))
    numpy.testing.assert_array_equal(cols, expected.reshape(cols.shape))


def test_blocked_weight_places_each_kernel_four_times(backend, rng):
    w_host = rng.normal(size=(2, 3, 3, 3))
    big = to_numpy(blocked_weight(backend.asarray(w_host))).reshape(2, 2, 2, 3, 4, 4)
    for di in (0, 1):
        for dj in (0, 1):
            window = numpy.zeros((2, 3, 4, 4))
            window[:, :, di : di + 3, dj : dj + 3] = w_host
            numpy.testing.assert_array_equal(big[:, di, dj], window)
    g = backend.asarray(rng.normal(size=(8, 3 * 16)))
    w = backend.asarray(w_host)
    adjoint = blocked_weight_adjoint(g, 2, 3, 3)
    assert abs(inner(blocked_weight(w), g) - inner(w, adjoint)) < 1e-10
