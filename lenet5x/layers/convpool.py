"""A convolution and the 2x2 max pooling after it, in one layer (the modern model's C1-P2, C3-P4)."""

from __future__ import annotations

from typing import Any

from .. import fused
from ..arrays import array_namespace, constant, launch_bound
from ..im2col import pad
from .conv import Conv2D
from .pool import MaxPool2x2, row_maxima, to_first_maximum


class ConvMaxPool:
    """y = MaxPool2x2(Conv2D(x)).  x: (C_in, H, W, N) -> y: (C_out, Ho/2, Wo/2, N).

    The same function as the two layers in turn, gradients and second derivatives included
    (tested equal), and the same parameters ("weight", "bias"). What it saves: a convolution
    with an even output size is computed on 2x2 blocks of outputs (Conv2D.blocked, im2col.py),
    and those blocks are exactly the pooling's blocks. The four outputs of a block are then four
    rows of the matmul's result, so the pooling is the maximum of four contiguous rows, the bias
    is added after it (max(a + b) = max(a) + b, on a quarter of the values), and the gradient
    goes back into those rows: the maps are never laid out as (C, Ho, Wo, N) and no strided
    2x2 slices are taken. Otherwise the two layers run in turn.

    Ties go to the first maximum of the block in row-major order, as in MaxPool2x2. The gradient
    finds it by one of two paths with the same result (tests/test_layers.py): one argmax and one
    kernel that routes the gradient by it (fused.py; two operations), or, on a CPU
    (arrays.launch_bound false), elementwise comparisons of the four rows (pool.to_first_maximum:
    thirteen operations, yet NumPy's argmax over a middle axis is so slow that a whole modern
    step is much faster this way; docs/speed.md, "CPU twins").
    """

    def __init__(self, in_channels, out_channels, kernel=5, padding=0, init="he") -> None:
        self.conv = Conv2D(in_channels, out_channels, kernel, padding=padding, init=init)
        self.pool = MaxPool2x2()
        self.trainable = self.conv.trainable

    def out_shape(self, in_shape) -> tuple[int, ...]:
        return self.pool.out_shape(self.conv.out_shape(in_shape))

    def init(self, rng, backend) -> dict:
        return self.conv.init(rng, backend)

    def maps(self, params, x) -> Any:
        """The convolution's maps before pooling, (C_out, Ho, Wo, N) (for pictures)."""
        return self.conv.forward(params, x)[0]

    def forward(self, params, x, train=False) -> tuple:
        xp = array_namespace(x)
        conv = self.conv
        xpad = pad(x, conv.padding)
        _, h, w, n = xpad.shape
        ho, wo = h - conv.kernel + 1, w - conv.kernel + 1
        if not conv.blocked(ho, wo):
            a, conv_cache = conv.forward(params, x, train)
            y, pool_cache = self.pool.forward({}, a, train)
            return y, (False, conv_cache, pool_cache)
        cols, w_blocked, products = conv.blocked_products(params, xpad)
        a = xp.reshape(products, (conv.out_channels, 4, -1))  # (o, place (di, dj), block)
        y = xp.max(a, axis=1)
        y += params["bias"][:, None]
        shape = (conv.out_channels, ho // 2, wo // 2, n)
        return xp.reshape(y, shape), (True, (cols, xpad.shape, w_blocked), a)

    @staticmethod
    def _places(a) -> tuple:
        """(C_out, 4, M) -> its four rows (C_out, M): the places (0, 0), (0, 1), (1, 0), (1, 1)."""
        return a[:, 0, :], a[:, 1, :], a[:, 2, :], a[:, 3, :]

    def _route(self, a, g) -> Any:
        """g (C_out, h, w, N) -> (4*C_out, h*w*N): each block's g on the row of its first maximum.
        a: the products (C_out, 4, h*w*N)."""
        xp = array_namespace(g)
        c_out, _, m = a.shape
        if launch_bound(a):
            first = xp.argmax(a, axis=1)[:, None, :]  # (C_out, 1, M): the first maximum's place
            places = constant(  # [0, 1, 2, 3] shaped (1, 4, 1)
                ("places",), a, lambda xp, dev: xp.reshape(xp.arange(4, device=dev), (1, 4, 1))
            )
            routed = fused.MAX_POOL_ROUTE(first, places, xp.reshape(g, (c_out, 1, m)))
            return xp.reshape(routed, (4 * c_out, m))
        places = self._places(a)
        parts = to_first_maximum(xp.reshape(g, (c_out, m)), *row_maxima(*places), *places)
        return xp.reshape(xp.stack(parts, axis=1), (4 * c_out, m))

    def _passes(self, params, cache, g, need_dx, squared) -> tuple:
        xp = array_namespace(g)
        blocked, conv_cache, pool_cache = cache
        if not blocked:  # the two layers in turn
            if squared:
                da, _ = self.pool.backward2({}, pool_cache, g)
                return self.conv.backward2(params, conv_cache, da, need_dx=need_dx)
            da, _ = self.pool.backward({}, pool_cache, g)
            return self.conv.backward(params, conv_cache, da, need_dx)
        da = self._route(pool_cache, g)  # a 0/1 routing: the same for second derivatives
        dx, weight = self.conv.matrix_backward(params, conv_cache, da, need_dx, squared)
        bias = xp.sum(xp.reshape(g, (self.conv.out_channels, -1)), axis=1)
        return dx, {"weight": weight, "bias": bias}

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        return self._passes(params, cache, dy, need_dx, squared=False)

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        return self._passes(params, cache, d2y, need_dx, squared=True)
