"""2x2 max pooling, stride 2."""

from __future__ import annotations

from typing import Any

from ..arrays import array_namespace
from .base import Parameterless


def corners(x) -> tuple:
    """(C, H, W, N) -> the four (C, H/2, W/2, N) strided views: each 2x2 block's (0, 0), (0, 1),
    (1, 0) and (1, 1) element."""
    return x[:, 0::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 0::2, :], x[:, 1::2, 1::2, :]


def row_maxima(x00, x01, x10, x11) -> tuple:
    """Each 2x2 block's top row's maximum and bottom row's maximum (to_first_maximum's input)."""
    xp = array_namespace(x00)
    return xp.maximum(x00, x01), xp.maximum(x10, x11)


def block_maximum(x00, x01, x10, x11) -> tuple:
    """The maximum of four same-shaped arrays, by rows: (max, top row's max, bottom row's max).
    Elementwise, cheaper in NumPy than a reduction over two middle axes of the block."""
    top, bottom = row_maxima(x00, x01, x10, x11)
    return array_namespace(top).maximum(top, bottom), top, bottom


def to_first_maximum(g, top, bottom, x00, x01, x10, x11) -> tuple:
    """g split over the four places, all of it at the first maximum in row-major order (ties to
    the first row, then to the first column): (g00, g01, g10, g11), each shaped like g. The 0/1
    masks are multiplied in, which NumPy does faster than `where` with a scalar."""
    xp = array_namespace(g)
    upper = g * xp.astype(top >= bottom, g.dtype)
    lower = g - upper
    left_upper = upper * xp.astype(x00 >= x01, g.dtype)
    left_lower = lower * xp.astype(x10 >= x11, g.dtype)
    return left_upper, upper - left_upper, left_lower, lower - left_lower


class MaxPool2x2(Parameterless):
    """y = max of each non-overlapping 2x2 block.  x: (C, H, W, N) -> y: (C, H/2, W/2, N).

    The gradient goes to one maximum per block (the first in row-major order when there are ties),
    so the pass is the exact derivative wherever the maximum is unique.
    """

    def out_shape(self, in_shape) -> tuple[int, ...]:
        c, h, w = in_shape
        if h % 2 or w % 2:
            raise ValueError(f"MaxPool2x2 needs even height and width, got {h}x{w}")
        return (c, h // 2, w // 2)

    def forward(self, params, x, train=False) -> tuple:
        y, top, bottom = block_maximum(*corners(x))
        return y, (x, top, bottom)

    def _route(self, cache, g) -> Any:
        """g (C, h, w, N) -> (C, 2h, 2w, N): each block's g at its first maximum, zeros elsewhere."""
        xp = array_namespace(g)
        x, top, bottom = cache
        c, h, w, n = g.shape
        g00, g01, g10, g11 = to_first_maximum(g, top, bottom, *corners(x))
        rows = [xp.stack([g00, g01], axis=3), xp.stack([g10, g11], axis=3)]  # (C, h, w, 2, N)
        return xp.reshape(xp.stack(rows, axis=2), (c, 2 * h, 2 * w, n))

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        return (self._route(cache, dy) if need_dx else None), {}

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        return (self._route(cache, d2y) if need_dx else None), {}
