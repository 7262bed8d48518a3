"""2-D convolution (stride 1, optional zero padding) with an optional connection table (C3)."""

from __future__ import annotations

from typing import Any

import numpy

from ..arrays import array_namespace
from ..im2col import (
    blocked_col2im,
    blocked_im2col,
    blocked_weight,
    blocked_weight_adjoint,
    col2im,
    from_blocks,
    im2col,
    pad,
    to_blocks,
    unpad,
    zeros,
)
from .base import init_weights


class Conv2D:
    """a[o] = sum_{c in table[o]} W[o, c] * x[c] + b[o]   (valid correlation, k x k kernels).

    x: (C_in, H, W, N) -> a: (C_out, H + 2p - k + 1, W + 2p - k + 1, N).

    Without a table the weight is dense, (C_out, C_in, k, k). With `table` (a tuple, per output
    map, of the input maps it reads; Table I for C3) only the listed connections are parameters:
    weight is (n_connections, k, k), in the order (o, c) for o in range(C_out), c in table[o].
    The forward pass gathers them into a dense (C_out, C_in*k*k) matrix with zeros for absent
    connections, so the convolution is still one matmul; the gradient is gathered back, so an
    absent connection has no parameter and never receives an update.

    With `block_order`, where the output is computed on 2x2 blocks (`blocked`), a is handed over
    in block order, (C_out, 2, 2, Ho/2, Wo/2, N) (im2col.in_block_order): the matmul's own layout,
    for a 2x2 subsampling after elementwise layers (the classic model's C1 and C3), which sums
    each block in one reduction. The maps are then never laid out as (C, Ho, Wo, N) and back.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel=5,
        table=None,
        padding=0,
        init="paper",
        block_order=False,
    ) -> None:
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, kernel
        self.padding, self.init_scheme, self.block_order = padding, init, block_order
        self.table = None if table is None else tuple(tuple(row) for row in table)
        if self.table is not None:
            if len(self.table) != out_channels:
                raise ValueError(
                    f"connection table has {len(self.table)} rows, need {out_channels}"
                )
            if any(not 0 <= c < in_channels for row in self.table for c in row):
                raise ValueError("connection table names an input map that does not exist")
        self.trainable = ("weight", "bias")

    def out_shape(self, in_shape) -> tuple[int, ...]:
        c, h, w = in_shape
        if c != self.in_channels:
            raise ValueError(f"Conv2D expects {self.in_channels} input maps, got {c}")
        k, p = self.kernel, self.padding
        if min(h, w) + 2 * p < k:
            raise ValueError(
                f"Conv2D's {k}x{k} kernel is larger than its {h}x{w} input (padding {p})"
            )
        return (self.out_channels, h + 2 * p - k + 1, w + 2 * p - k + 1)

    def fan_in(self, o: int) -> int:
        n_inputs = self.in_channels if self.table is None else len(self.table[o])
        return n_inputs * self.kernel**2

    def init(self, rng, backend) -> dict:
        k = self.kernel
        bias = numpy.zeros(self.out_channels)
        if self.table is None:
            weight = numpy.stack(
                [
                    init_weights(rng, (self.in_channels, k, k), self.fan_in(o), self.init_scheme)
                    for o in range(self.out_channels)
                ]
            )
            return {"weight": backend.asarray(weight), "bias": backend.asarray(bias)}
        weight = numpy.concatenate(
            [
                init_weights(rng, (len(row), k, k), self.fan_in(o), self.init_scheme)
                for o, row in enumerate(self.table)
            ]
        )
        # dense slot (o, c) -> row of [weight; zero row]; connection -> its dense slot
        n_conn = weight.shape[0]
        gather = numpy.full(self.out_channels * self.in_channels, n_conn, dtype=numpy.int64)
        slots = []
        for conn, (o, c) in enumerate((o, c) for o, row in enumerate(self.table) for c in row):
            gather[o * self.in_channels + c] = conn
            slots.append(o * self.in_channels + c)
        xp = backend.xp
        return {
            "weight": backend.asarray(weight),
            "bias": backend.asarray(bias),
            "dense_index": backend.asarray(gather, dtype=xp.int64),
            "connection_slots": backend.asarray(numpy.array(slots), dtype=xp.int64),
        }

    def dense_weight(self, params) -> Any:
        """(C_out, C_in*k*k) weight matrix; zeros where the table has no connection."""
        xp = array_namespace(params["weight"])
        w = params["weight"]
        kk = self.kernel**2
        if self.table is None:
            return xp.reshape(w, (self.out_channels, self.in_channels * kk))
        rows = xp.reshape(w, (w.shape[0], kk))
        padded = xp.concat([rows, zeros((1, kk), w)])
        dense = xp.take(padded, params["dense_index"], axis=0)
        return xp.reshape(dense, (self.out_channels, self.in_channels * kk))

    def weight_from_dense(self, params, dense) -> Any:
        """Inverse of dense_weight for gradients: (C_out, C_in*k*k) -> shape of params["weight"]."""
        xp = array_namespace(dense)
        k = self.kernel
        if self.table is None:
            return xp.reshape(dense, (self.out_channels, self.in_channels, k, k))
        slots = xp.reshape(dense, (self.out_channels * self.in_channels, k * k))
        return xp.reshape(xp.take(slots, params["connection_slots"], axis=0), (-1, k, k))

    def blocked(self, out_h: int, out_w: int) -> bool:
        """Compute through 2x2 blocks of outputs (im2col.py) where the output size is even (C1,
        C3; not C5). The same function either way; the gradient checks cover both paths."""
        return out_h % 2 == 0 and out_w % 2 == 0 and out_h > 1

    def blocked_products(self, params, xpad) -> tuple:
        """The blocked path's matmul (im2col.py): xpad (C_in, H, W, N) ->
        (cols, w, products (4*C_out, (Ho/2)*(Wo/2)*N)), rows (o, di, dj): each output's place
        in its 2x2 block."""
        xp = array_namespace(xpad)
        k = self.kernel
        cols = blocked_im2col(xpad, k)
        dense = xp.reshape(self.dense_weight(params), (self.out_channels, self.in_channels, k, k))
        w = blocked_weight(dense)
        return cols, w, w @ cols

    def forward(self, params, x, train=False) -> tuple:
        xp = array_namespace(x)
        xpad = pad(x, self.padding)
        _, h, wd, n = xpad.shape
        k = self.kernel
        ho, wo = h - k + 1, wd - k + 1
        shape = (self.out_channels, ho, wo, n)
        if self.blocked(ho, wo):
            cols, w, products = self.blocked_products(params, xpad)
            if self.block_order:
                a = xp.reshape(products, (self.out_channels, 2, 2, ho // 2, wo // 2, n))
                a += params["bias"][:, None, None, None, None, None]
                return a, (cols, xpad.shape, w)
            a = from_blocks(products, shape)
        else:
            w = self.dense_weight(params)
            cols = im2col(xpad, k)
            a = xp.reshape(w @ cols, shape)
        a += params["bias"][:, None, None, None]
        return a, (cols, xpad.shape, w)

    def matrix_backward(self, params, cache, da, need_dx=True, squared=False) -> tuple:
        """Weight gradient and input gradient from da = dE/d(w @ cols), (rows of w, columns of
        cols); with `squared` the second-derivative pass's (eq. 25, 27) from d2E/d(w @ cols)^2.
        Returns (dx or None, weight gradient shaped like params["weight"])."""
        cols, xshape, w = cache
        blocked = w.shape[0] != self.out_channels
        if squared:
            cols, w = cols * cols, w * w
        # (cols @ da^T)^T rather than da @ cols^T: the same product, twice as fast in OpenBLAS
        # for these shapes (a long inner dimension, Ho*Wo*N)
        weight = self._weight_grad(params, (cols @ da.T).T, blocked)
        return (self._input_grad(w.T @ da, xshape, blocked) if need_dx else None), weight

    def _weight_grad(self, params, products, blocked: bool) -> Any:
        """(rows of w) @ cols.T, i.e. (C_out or 4*C_out, ...) -> the shape of params["weight"]."""
        if blocked:
            products = blocked_weight_adjoint(
                products, self.out_channels, self.in_channels, self.kernel
            )
            xp = array_namespace(products)
            products = xp.reshape(products, (self.out_channels, -1))
        return self.weight_from_dense(params, products)

    def _input_grad(self, cols_grad, xshape, blocked: bool) -> Any:
        if blocked:
            return unpad(blocked_col2im(cols_grad, xshape, self.kernel), self.padding)
        return unpad(col2im(cols_grad, xshape, self.kernel), self.padding)

    def _rows(self, g, blocked: bool) -> Any:
        """dE/da (C_out, Ho, Wo, N) -> the matmul's layout: (C_out, Ho*Wo*N), or blocks."""
        xp = array_namespace(g)
        return to_blocks(g) if blocked else xp.reshape(g, (self.out_channels, -1))

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        xp = array_namespace(dy)
        blocked = cache[2].shape[0] != self.out_channels
        dx, weight = self.matrix_backward(params, cache, self._rows(dy, blocked), need_dx)
        bias = xp.sum(xp.reshape(dy, (self.out_channels, -1)), axis=1)
        return dx, {"weight": weight, "bias": bias}

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        # eq. 25: d2E/dw^2 = sum over connections of d2E/da^2 x^2;  eq. 27 (linear part): w^2
        xp = array_namespace(d2y)
        blocked = cache[2].shape[0] != self.out_channels
        d2a = self._rows(d2y, blocked)
        d2x, weight = self.matrix_backward(params, cache, d2a, need_dx, squared=True)
        bias = xp.sum(xp.reshape(d2y, (self.out_channels, -1)), axis=1)
        return d2x, {"weight": weight, "bias": bias}
