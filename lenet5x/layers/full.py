"""Fully connected layer, and Flatten (maps -> vectors)."""

from __future__ import annotations

import numpy

from ..arrays import array_namespace
from .base import Parameterless, init_weights


class FullyConnected:
    """a = W x + b.  x: (F_in, N) -> a: (F_out, N); W: (F_out, F_in), b: (F_out,)."""

    trainable = ("weight", "bias")

    def __init__(self, in_features, out_features, init="paper") -> None:
        self.in_features, self.out_features, self.init_scheme = in_features, out_features, init

    def out_shape(self, in_shape) -> tuple[int, ...]:
        if tuple(in_shape) != (self.in_features,):
            raise ValueError(f"FullyConnected expects ({self.in_features},) inputs, got {in_shape}")
        return (self.out_features,)

    def init(self, rng, backend) -> dict:
        w = init_weights(
            rng, (self.out_features, self.in_features), self.in_features, self.init_scheme
        )
        return {
            "weight": backend.asarray(w),
            "bias": backend.asarray(numpy.zeros(self.out_features)),
        }

    def forward(self, params, x, train=False) -> tuple:
        a = params["weight"] @ x
        a += params["bias"][:, None]
        return a, x

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        xp = array_namespace(dy)
        x = cache
        grads = {"weight": dy @ x.T, "bias": xp.sum(dy, axis=1)}
        return (params["weight"].T @ dy if need_dx else None), grads

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        # eq. 25 and 27 (linear part): squared inputs for h, squared weights for d2x
        xp = array_namespace(d2y)
        x = cache
        w = params["weight"]
        h = {"weight": d2y @ (x * x).T, "bias": xp.sum(d2y, axis=1)}
        return ((w * w).T @ d2y if need_dx else None), h


class Flatten(Parameterless):
    """(C, H, W, N) -> (C*H*W, N); free, because the batch is the last axis."""

    def out_shape(self, in_shape) -> tuple[int, ...]:
        return (int(numpy.prod(in_shape)),)

    def forward(self, params, x, train=False) -> tuple:
        xp = array_namespace(x)
        return xp.reshape(x, (-1, x.shape[-1])), x.shape

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        xp = array_namespace(dy)
        return (xp.reshape(dy, cache) if need_dx else None), {}

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        xp = array_namespace(d2y)
        return (xp.reshape(d2y, cache) if need_dx else None), {}
