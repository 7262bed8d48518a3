"""The Euclidean RBF output layer of LeNet-5 (eq. 7), with fixed prototypes (Fig. 3)."""

from __future__ import annotations

import numpy

from .. import fused, paper
from ..arrays import array_namespace


class EuclideanRBF:
    """y_i = sum_j (x_j - w_ij)^2.  x: (84, N) -> y: (10, N); prediction = argmin_i y_i.

    The 10x84 prototypes w are the +1/-1 7x12 bitmaps of the digits; they are constants, not
    trainable parameters (params["prototypes"], never updated). With prototypes="place" they are
    place codes instead, +1 at the class and -1 elsewhere (classes x classes): y_i is then the
    squared error to class i's target, the output code of the paper's earlier networks (LeNet-1
    and LeNet-4 here).

    Second-derivative pass: y is quadratic in x, so besides the Gauss-Newton term
    sum_i (dy_i/dx_j)^2 d2E/dy_i^2 it keeps its own curvature sum_i dy_i d2y_i/dx_j^2
    = 2 sum_i dy_i for the weights dy the criterion names (`curvature` in losses.py: the squared
    error to the target prototype, y_{D_p}, for MSE and MAP alike), which gives exactly
    d2E/dx_j^2 = 2 with the MSE criterion (eq. 8).
    """

    trainable: tuple[str, ...] = ()

    def __init__(self, in_features=84, classes=10, prototypes="digits") -> None:
        self.in_features, self.classes, self.prototypes = in_features, classes, prototypes
        if prototypes not in ("digits", "place"):
            raise ValueError(f"RBF prototypes: 'digits' or 'place', not {prototypes!r}")
        if prototypes == "digits" and (classes, in_features) != (10, 84):
            raise ValueError(
                f"RBF digit prototypes are 10 classes of 84 inputs (Fig. 3's 7x12 bitmaps), "
                f"not {classes} of {in_features}"
            )
        if prototypes == "place" and in_features != classes:
            raise ValueError(
                f"RBF place prototypes take as many inputs as classes, not {in_features} for "
                f"{classes}"
            )

    def out_shape(self, in_shape) -> tuple[int, ...]:
        if tuple(in_shape) != (self.in_features,):
            raise ValueError(f"EuclideanRBF expects ({self.in_features},) inputs, got {in_shape}")
        return (self.classes,)

    def init(self, rng, backend) -> dict:
        if self.prototypes == "place":
            prototypes = 2.0 * numpy.eye(self.classes, self.in_features) - 1.0
        else:
            prototypes = paper.rbf_prototypes()
        if prototypes.shape != (self.classes, self.in_features):
            raise ValueError(
                f"RBF prototypes are {prototypes.shape}, not {self.classes}x{self.in_features}"
            )
        return {"prototypes": backend.asarray(prototypes)}

    def forward(self, params, x, train=False) -> tuple:
        xp = array_namespace(x)
        w = params["prototypes"]
        # |x - w_i|^2 = -2 w_i . x + |x|^2 + |w_i|^2 (-2 is a power of two: -2 (w x) == (-2 w) x)
        q, w2 = xp.sum(x * x, axis=0)[None, :], xp.sum(w * w, axis=1)[:, None]
        return fused.RBF_DISTANCES(w @ x, -2.0, q, w2), x

    def backward(self, params, cache, dy, need_dx=True) -> tuple:
        xp = array_namespace(dy)
        x = cache
        # dE/dx = sum_i dy_i 2 (x - w_i) = x (2 sum_i dy_i) - 2 w^T dy
        wt_dy = params["prototypes"].T @ dy
        return fused.RBF_BACKWARD(x, xp.sum(dy, axis=0)[None, :], 2.0, -2.0, wt_dy), {}

    def backward2(self, params, cache, d2y, dy=None, need_dx=True) -> tuple:
        xp = array_namespace(d2y)
        x, w = cache, params["prototypes"]
        # sum_i (2 (x_j - w_ij))^2 d2y_i = 4 (x_j^2 s - 2 x_j (w^T d2y)_j + (w^2)^T d2y), s = sum_i d2y_i
        s = xp.sum(d2y, axis=0)[None, :]
        d2x = (x * x) * s
        d2x -= 2.0 * x * (w.T @ d2y)
        d2x += (w * w).T @ d2y
        d2x *= 4.0
        if dy is not None:
            d2x += 2.0 * xp.sum(dy, axis=0)[None, :]
        return d2x, {}
