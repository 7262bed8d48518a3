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
        xp = array_namespace(x)
        c, h, w, n = x.shape
        blocks = xp.reshape(x, (c, h // 2, 2, w // 2, 2, n))
        y = xp.max(blocks, axis=(2, 4))
        return y, (blocks, y)

    def _argmax_mask(self, cache):
        """(C, h, 2, w, 2, N) one-hot mask of the chosen maximum of each block, in x's dtype."""
        xp = array_namespace(cache[0])
        blocks, y = cache
        top = y[:, :, None, :, None, :]
        is_max = blocks == top
        masks, taken = {}, None
        for i in (0, 1):
            for j in (0, 1):
                here = is_max[:, :, i : i + 1, :, j : j + 1, :]
                if taken is None:
                    taken = here
                else:
                    here = here & ~taken
                    taken = taken | here
                masks[(i, j)] = here
        rows = [xp.concat([masks[(i, 0)], masks[(i, 1)]], axis=4) for i in (0, 1)]
        return xp.astype(xp.concat(rows, axis=2), blocks.dtype)

    def _route(self, cache, g):
        xp = array_namespace(g)
        c, h, w, n = g.shape
        return xp.reshape(
            self._argmax_mask(cache) * g[:, :, None, :, None, :], (c, 2 * h, 2 * w, n)
        )

    def backward(self, params, cache, dy, need_dx=True):
        return (self._route(cache, dy) if need_dx else None), {}

    def backward2(self, params, cache, d2y, dy=None, need_dx=True):
        return (self._route(cache, d2y) if need_dx else None), {}
