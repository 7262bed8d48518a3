"""Batch normalization (Ioffe & Szegedy 2015), per channel for maps and per unit for vectors."""

from __future__ import annotations

import math

import numpy

from ..arrays import array_namespace


class BatchNorm:
    """y = gamma * (x - mean) / sqrt(var + eps) + beta.

    x: (C, H, W, N) (statistics per channel, over H, W and N) or (F, N) (per unit, over N).
    Training mode normalizes with the batch's statistics and returns, through
    `buffer_updates(cache)`, running averages moved by `momentum` towards them; evaluation mode
    normalizes with the running averages. Constants: running_mean, running_var (never touched by
    an optimizer; saved in checkpoints with the parameters).

    backward is exact, including the dependence of the batch statistics on x. backward2 is a
    diagonal Gauss-Newton approximation that treats the batch statistics as constants:
    d2x = (gamma / sigma)^2 d2y, h_gamma = sum d2y xhat^2, h_beta = sum d2y.
    """

    trainable = ("gamma", "beta")
    buffers = ("running_mean", "running_var")  # changed by training, not by the optimizer

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        self.channels, self.momentum, self.eps = channels, momentum, eps

    def out_shape(self, in_shape) -> tuple[int, ...]:
        if in_shape[0] != self.channels:
            raise ValueError(f"BatchNorm expects {self.channels} channels, got {in_shape[0]}")
        return in_shape

    def init(self, rng, backend) -> dict:
        ones, zeros = numpy.ones(self.channels), numpy.zeros(self.channels)
        return {
            "gamma": backend.asarray(ones),
            "beta": backend.asarray(zeros),
            "running_mean": backend.asarray(zeros),
            "running_var": backend.asarray(ones),
        }

    @staticmethod
    def _axes(x):
        return tuple(range(1, x.ndim))

    @staticmethod
    def _column(v, x):
        """(C,) -> broadcastable against x (C, ...)."""
        return v[(slice(None),) + (None,) * (x.ndim - 1)]

    def forward(self, params, x, train=False) -> tuple:
        xp = array_namespace(x)
        axes = self._axes(x)
        if train:
            mean = xp.mean(x, axis=axes)
            centred = x - self._column(mean, x)
            var = xp.mean(centred * centred, axis=axes)
        else:
            mean, var = params["running_mean"], params["running_var"]
            centred = x - self._column(mean, x)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        xhat = centred * self._column(inv_std, x)
        y = xhat * self._column(params["gamma"], x) + self._column(params["beta"], x)
        count = math.prod(x.shape) // x.shape[0]
        return y, {
            "xhat": xhat,
            "inv_std": inv_std,
            "mean": mean,
            "var": var,
            "train": train,
            "count": count,
        }

    def buffer_updates(self, params, cache) -> dict:
        """New running averages after a training-mode forward (unbiased variance), else {}."""
        if not cache["train"]:
            return {}
        m, n = self.momentum, cache["count"]
        unbiased = cache["var"] * (n / max(n - 1, 1))
        return {
            "running_mean": (1 - m) * params["running_mean"] + m * cache["mean"],
            "running_var": (1 - m) * params["running_var"] + m * unbiased,
        }

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        xp = array_namespace(dy)
        axes = self._axes(dy)
        xhat = cache["xhat"]
        grads = {"gamma": xp.sum(dy * xhat, axis=axes), "beta": xp.sum(dy, axis=axes)}
        if not need_dx:
            return None, grads
        scale = self._column(params["gamma"] * cache["inv_std"], dy)
        if not cache["train"]:
            return dy * scale, grads
        # d/dx of the normalization with batch statistics:
        # dx = gamma/sigma * (dy - mean(dy) - xhat * mean(dy * xhat))
        n = cache["count"]
        mean_dy = self._column(grads["beta"] / n, dy)
        mean_dy_xhat = self._column(grads["gamma"] / n, dy)
        return scale * (dy - mean_dy - xhat * mean_dy_xhat), grads

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        xp = array_namespace(d2y)
        axes = self._axes(d2y)
        xhat = cache["xhat"]
        h = {"gamma": xp.sum(d2y * (xhat * xhat), axis=axes), "beta": xp.sum(d2y, axis=axes)}
        if not need_dx:
            return None, h
        scale = self._column(params["gamma"] * cache["inv_std"], d2y)
        return d2y * (scale * scale), h
