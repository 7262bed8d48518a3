"""Elementwise activations: the paper's scaled tanh and ReLU."""

from __future__ import annotations

from .. import fused, paper
from ..arrays import array_namespace, scalar
from .base import Parameterless


class ScaledTanh(Parameterless):
    """f(a) = A tanh(S a), A = 1.7159, S = 2/3 (eq. 6, appendix A).  Any shape in, same shape out.

    The slope is computed from the output: f'(a) = A S (1 - tanh^2) = (y^2 - A^2) (-S/A), so the
    cache is y alone. Each pass is one fused kernel (fused.py): one launch on a GPU, the same
    operations on every other backend.
    """

    elementwise = True  # any shape, any memory order (Conv2D's block_order passes through)

    def __init__(self, amplitude=paper.A, slope=paper.S) -> None:
        self.amplitude, self.slope = amplitude, slope

    def out_shape(self, in_shape) -> tuple[int, ...]:
        return in_shape

    def forward(self, params, x, train=False) -> tuple:
        y = fused.SCALED_TANH(x, self.amplitude, self.slope)
        return y, y

    def _slope_constants(self) -> tuple:
        """(A^2, -S/A): f'(a) = (y^2 - A^2) (-S/A)."""
        return self.amplitude**2, -self.slope / self.amplitude

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        if not need_dx:
            return None, {}
        return fused.SCALED_TANH_BACKWARD(cache, dy, *self._slope_constants()), {}

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        # eq. 27: d2E/da^2 = f'(a)^2 d2E/dy^2 (Gauss-Newton: the f'' term is dropped)
        if not need_dx:
            return None, {}
        return fused.SCALED_TANH_BACKWARD2(cache, d2y, *self._slope_constants()), {}


class ReLU(Parameterless):
    """f(a) = max(a, 0).  Any shape in, same shape out; slope 1 where a > 0, else 0.

    The cache is the output y: y > 0 exactly where a > 0.
    """

    elementwise = True

    def out_shape(self, in_shape) -> tuple[int, ...]:
        return in_shape

    def forward(self, params, x, train=False) -> tuple:
        xp = array_namespace(x)
        y = xp.maximum(x, scalar(0.0, x))
        return y, y

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        return (fused.RELU_BACKWARD(cache, dy) if need_dx else None), {}

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        return (fused.RELU_BACKWARD(cache, d2y) if need_dx else None), {}
