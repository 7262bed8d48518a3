"""2x2 subsampling: the paper's trainable subsampling (S2, S4) and plain average pooling."""

from __future__ import annotations

from typing import Any

import numpy

from .. import fused
from ..arrays import array_namespace
from ..im2col import in_block_order
from .base import Parameterless, init_weights


def sum_2x2(x) -> Any:
    """(C, H, W, N) -> (C, H/2, W/2, N): the sum of each non-overlapping 2x2 block, one sum over
    two axes. Maps in block order, (C, 2, 2, H/2, W/2, N) (im2col.in_block_order), as the classic
    model's C1 and C3 hand them over, are summed over their axes 1 and 2.
    """
    xp = array_namespace(x)
    if in_block_order(x):
        return xp.sum(x, axis=(1, 2))
    c, h, w, n = x.shape
    return xp.sum(xp.reshape(x, (c, h // 2, 2, w // 2, 2, n)), axis=(2, 4))


def spread_2x2(g, block_order: bool = False) -> Any:
    """Adjoint of sum_2x2: (C, h, w, N) -> (C, 2h, 2w, N), each value copied to its 2x2 block;
    with `block_order` (C, 2, 2, h, w, N), as a broadcast view (no copy)."""
    xp = array_namespace(g)
    c, h, w, n = g.shape
    if block_order:
        return xp.broadcast_to(g[:, None, None, ...], (c, 2, 2, h, w, n))
    up = g[:, :, None, :, None, :]
    return xp.reshape(xp.broadcast_to(up, (c, h, 2, w, 2, n)), (c, 2 * h, 2 * w, n))


def _check_even(layer, in_shape):
    c, h, w = in_shape
    if h % 2 or w % 2:
        raise ValueError(f"{type(layer).__name__} needs even height and width, got {h}x{w}")
    return (c, h // 2, w // 2)


class Subsampling:
    """Sec. II-B, S2/S4: a[c] = coef[c] * (sum of each 2x2 block of x[c]) + bias[c].

    x: (C, H, W, N) -> a: (C, H/2, W/2, N). Sec. II-B adds the four inputs; sec. II-A calls it
    averaging. The two differ by a factor 4 that the coefficient absorbs in what the layer can
    compute, but not at initialization (fan-in 4 either way) nor in SDLM's curvature estimates:
    `average=True` uses the mean of each block instead of its sum.

    `coef_init`: every coefficient starts at this value; None draws them like weights of fan-in 4
    (appendix A), which gives each map a random gain and sign, some near zero.

    `inputs`: the maps it takes, when fewer than `channels` (a divisor k of it): each input map
    then feeds k consecutive maps, each with its own coefficient and bias (LeNet-4's S2: "8
    subsampling maps connected in pairs to each first-layer feature map", sec. III-C); the
    backward passes add the k maps' terms.
    """

    trainable = ("coef", "bias")
    takes_block_order = True  # x may be in 2x2-block order (Conv2D's block_order)

    def __init__(self, channels, init="paper", average=False, coef_init=None, inputs=None) -> None:
        self.channels, self.init_scheme, self.average = channels, init, average
        self.coef_init = coef_init
        self.scale = 0.25 if average else 1.0  # of each block's sum
        self.inputs = inputs or channels
        if channels % self.inputs:
            raise ValueError(f"{channels} subsampling maps cannot share {self.inputs} input maps")
        self.copies = channels // self.inputs  # maps fed by each input map

    def out_shape(self, in_shape) -> tuple[int, ...]:
        if in_shape[0] != self.inputs:
            raise ValueError(f"Subsampling expects {self.inputs} input maps, got {in_shape[0]}")
        return (self.channels, *_check_even(self, in_shape)[1:])

    def _fan_out(self, s) -> Any:
        """(C_in, h, w, N) -> (C_in * copies, h, w, N): each input map repeated `copies` times."""
        if self.copies == 1:
            return s
        xp = array_namespace(s)
        c, h, w, n = s.shape
        spread = xp.broadcast_to(s[:, None, ...], (c, self.copies, h, w, n))
        return xp.reshape(spread, (c * self.copies, h, w, n))

    def _fan_in(self, g) -> Any:
        """Adjoint of _fan_out: (C_in * copies, h, w, N) -> (C_in, h, w, N), the copies summed."""
        if self.copies == 1:
            return g
        xp = array_namespace(g)
        _, h, w, n = g.shape
        return xp.sum(xp.reshape(g, (self.inputs, self.copies, h, w, n)), axis=1)

    def init(self, rng, backend) -> dict:
        coef = init_weights(rng, (self.channels,), 4, self.init_scheme)
        if self.coef_init is not None:
            # drawn anyway above, so that a seed gives every other layer the same weights either way
            coef = numpy.full(self.channels, float(self.coef_init))
        return {"coef": backend.asarray(coef), "bias": backend.asarray(numpy.zeros(self.channels))}

    def forward(self, params, x, train=False) -> tuple:
        coef, bias = params["coef"][:, None, None, None], params["bias"][:, None, None, None]
        s, a = fused.SUBSAMPLING(
            self._fan_out(sum_2x2(x)), self.scale, coef, bias
        )  # s: scaled sums
        return a, (s, in_block_order(x))

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        xp = array_namespace(dy)
        s, block_order = cache
        grads = {"coef": xp.sum(dy * s, axis=(1, 2, 3)), "bias": xp.sum(dy, axis=(1, 2, 3))}
        if not need_dx:
            return None, grads
        dx = fused.SUBSAMPLING_BACKWARD(dy, params["coef"][:, None, None, None], self.scale)
        return spread_2x2(self._fan_in(dx), block_order), grads

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        xp = array_namespace(d2y)
        s, block_order = cache
        h = {"coef": xp.sum(d2y * (s * s), axis=(1, 2, 3)), "bias": xp.sum(d2y, axis=(1, 2, 3))}
        coef = params["coef"] * self.scale if self.average else params["coef"]
        coef2 = coef * coef
        d2x = d2y * coef2[:, None, None, None]
        d2x = spread_2x2(self._fan_in(d2x), block_order) if need_dx else None
        return d2x, h


class AvgPool2x2(Parameterless):
    """Plain 2x2 average pooling: y = (sum of each 2x2 block) / 4.  (C, H, W, N) -> (C, H/2, W/2, N)."""

    takes_block_order = True

    def out_shape(self, in_shape) -> tuple[int, ...]:
        return _check_even(self, in_shape)

    def forward(self, params, x, train=False) -> tuple:
        return sum_2x2(x) * 0.25, in_block_order(x)

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        return (spread_2x2(dy * 0.25, cache) if need_dx else None), {}

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        # the weight of each connection is 1/4, so its square is 1/16 (not 1/4)
        return (spread_2x2(d2y * 0.0625, cache) if need_dx else None), {}
