"""Training criteria: value, gradient and diagonal second derivative w.r.t. the network output.

Every criterion takes the output `out` (K, N) and integer labels (N,) and returns
    total:  0-d array, the *sum* over the batch of the per-pattern losses E_p,
    grad:   (K, N), dE_p/dout for each pattern.
Optimizers decide how a batch is combined (SDLM sums per-pattern steps, SGD/Adam average).
`predict(out)` gives the class of each column. The elementwise chains are fused.py's kernels on
every backend (the same operations on a CPU; one launch each on a GPU).

`curvature(out, labels)` gives what the Gauss-Newton second-derivative pass starts from
(appendix C): d2 (K, N), the diagonal of d2E_p/dout^2 (>= 0), and `kept` (K, N) = dE_p/dy of
the terms of E that *are* an RBF squared distance (y_{D_p}, the squared error to the target
prototype), whose own curvature 2 the RBF layer keeps exactly, as for any squared error;
Gauss-Newton drops the rest of sum_i dE/dy_i d2y_i/dx^2 (like the f'' terms it drops in
eq. 27). None where there is no RBF.
"""

from __future__ import annotations

from typing import Any

from . import fused
from .arrays import array_namespace, constant, scalar


def one_hot(labels, classes: int, dtype) -> Any:
    """labels: (N,) integers -> (classes, N) with 1 at the label, 0 elsewhere."""
    xp = array_namespace(labels)
    numbers = constant(  # arange(classes) as a column
        ("classes", classes),
        labels,
        lambda xp, dev: xp.reshape(xp.arange(classes, device=dev), (-1, 1)),
    )
    return xp.astype(labels[None, :] == numbers, dtype)


class MSEPrototype:
    """Eq. 8: E_p = y_{D_p}, the RBF output (squared distance) of the correct class.

    Linear in y, so d2E/dy^2 = 0; the curvature 2 of the squared distance is kept by the RBF
    layer's second-derivative pass (rbf.py).
    """

    name = "mse"

    def __call__(self, out, labels):
        xp = array_namespace(out)
        target = one_hot(labels, out.shape[0], out.dtype)
        return xp.sum(out * target), target

    def curvature(self, out, labels) -> tuple:
        target = one_hot(labels, out.shape[0], out.dtype)
        return array_namespace(out).zeros_like(out), target

    def predict(self, out) -> Any:
        return array_namespace(out).argmin(out, axis=0)


class MAPCriterion:
    """Eq. 9: E_p = y_{D_p} + log(e^{-j} + sum_i e^{-y_i}), j > 0.

    With p_i = e^{-y_i} / (e^{-j} + sum_k e^{-y_k}): dE/dy_i = [i = D_p] - p_i and
    d2E/dy_i^2 = p_i (1 - p_i) (the diagonal of the Hessian of the log term).

    Curvature: y_{D_p} is a squared error (its curvature 2 is kept), the log term is a function
    of the distances y, taken by Gauss-Newton as sum_i p_i (1 - p_i) (dy_i/dx)^2. Its other part,
    -2 sum_i p_i, is dropped: kept, it cancels the 2 once y_{D_p} < j (a learned pattern), every
    h_kk collapses, every rate jumps to eta/mu, and pass 2 kills the network (docs/reproducing.md, steps 4i and 5).
    """

    name = "map"

    def __init__(self, j: float = 1.0) -> None:
        if not j > 0:
            raise ValueError(f"the MAP constant j must be positive, got {j}")
        self.j = j

    def _exponentials(self, out) -> tuple:
        """(e (K, N), z (1, N), log z (N,)): p = e / z, with the exponents shifted so that none
        is positive (e_i = e^{shift - y_i}, z = e^{shift - j} + sum_i e_i, log z unshifted)."""
        xp = array_namespace(out)
        shift = xp.minimum(xp.min(out, axis=0), scalar(self.j, out))  # (N,)
        e = fused.MAP_EXP(out, shift[None, :])
        z, log_z = fused.MAP_NORMALIZER(xp.sum(e, axis=0), shift, self.j)
        return e, z[None, :], log_z

    def __call__(self, out, labels):
        xp = array_namespace(out)
        target = one_hot(labels, out.shape[0], out.dtype)
        e, z, log_z = self._exponentials(out)
        total = xp.sum(out * target) + xp.sum(log_z)
        return total, fused.MAP_GRADIENT(e, z, target)

    def curvature(self, out, labels) -> tuple:
        e, z, _ = self._exponentials(out)
        p = e / z
        return p * (1.0 - p), one_hot(labels, out.shape[0], out.dtype)

    def predict(self, out) -> Any:
        return array_namespace(out).argmin(out, axis=0)


class SoftmaxCrossEntropy:
    """E_p = -log softmax(z)_{D_p};  dE/dz = p - onehot;  d2E/dz_i^2 = p_i (1 - p_i)."""

    name = "cross_entropy"

    @staticmethod
    def _exponentials(out) -> tuple:
        """(the shifted outputs s = out - max (K, N), e = exp(s) (K, N), z = sum e (1, N)):
        p = e / z."""
        xp = array_namespace(out)
        s, e = fused.SHIFTED_EXP(out, xp.max(out, axis=0)[None, :])
        return s, e, xp.sum(e, axis=0)[None, :]

    def __call__(self, out, labels):
        xp = array_namespace(out)
        target = one_hot(labels, out.shape[0], out.dtype)
        s, e, z = self._exponentials(out)
        # -log p_D = log sum_i e^{s_i} - s_D: the shift cancels, so it is never added back
        total = xp.sum(xp.log(z)) - xp.sum(s * target)
        return total, fused.SOFTMAX_GRADIENT(e, z, target)

    def curvature(self, out, labels) -> tuple:
        _, e, z = self._exponentials(out)
        p = e / z
        return p * (1.0 - p), None

    def predict(self, out) -> Any:
        return array_namespace(out).argmax(out, axis=0)


def make_loss(name: str, map_j: float = 1.0) -> Any:
    """'mse' (eq. 8), 'map' (eq. 9, constant j) or 'cross_entropy'."""
    if name == "mse":
        return MSEPrototype()
    if name == "map":
        return MAPCriterion(map_j)
    if name == "cross_entropy":
        return SoftmaxCrossEntropy()
    raise ValueError(f"unknown loss {name!r}: use mse, map or cross_entropy")
