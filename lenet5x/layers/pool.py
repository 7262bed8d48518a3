"""2x2 max pooling, stride 2."""

from __future__ import annotations

from ..namespace import array_namespace
from .base import Parameterless


class MaxPool2x2(Parameterless):
    """y = max of each non-overlapping 2x2 block.  x: (C, H, W, N) -> y: (C, H/2, W/2, N).

    The gradient goes to one maximum per block (the first in row-major order when there are ties),
    so the pass is the exact derivative wherever the maximum is unique.
    """

    def out_shape(self, in_shape):
        c, h, w = in_shape
        if h % 2 or w % 2:
            raise ValueError(f"MaxPool2x2 needs even height and width, got {h}x{w}")
        return (c, h // 2, w // 2)

    def forward(self, params, x, train=False):
        # the maximum of each row of the block, then of the two rows: elementwise on strided
        # views (C, H/2, W/2, N), cheaper in NumPy than a reduction over two middle axes
        xp = array_namespace(x)
        top = xp.maximum(x[:, 0::2, 0::2, :], x[:, 0::2, 1::2, :])
        bottom = xp.maximum(x[:, 1::2, 0::2, :], x[:, 1::2, 1::2, :])
        return xp.maximum(top, bottom), (x, top, bottom)

    def _route(self, cache, g):
        """g (C, h, w, N) -> (C, 2h, 2w, N): each block's g at its first maximum, zeros elsewhere."""
        xp = array_namespace(g)
        x, top, bottom = cache
        c, h, w, n = g.shape
        # ties go to the first row, then to the first column: the first maximum in row-major order
        # (masks by multiplication: NumPy's `where` with a scalar is ten times slower)
        upper = g * xp.astype(top >= bottom, g.dtype)
        rows = []
        for r, part in ((0, upper), (1, g - upper)):
            left = part * xp.astype(x[:, r::2, 0::2, :] >= x[:, r::2, 1::2, :], g.dtype)
            rows.append(xp.stack([left, part - left], axis=3))  # (C, h, w, 2, N)
        return xp.reshape(xp.stack(rows, axis=2), (c, 2 * h, 2 * w, n))

    def backward(self, params, cache, dy, need_dx=True):
        return (self._route(cache, dy) if need_dx else None), {}

    def backward2(self, params, cache, d2y, dy=None, need_dx=True):
        return (self._route(cache, d2y) if need_dx else None), {}
