"""What every layer is: hyperparameters only; parameters, gradients and caches are passed in and out.

A layer has four passes (EBLearn's fprop / bprop / bbprop, plus init):

    init(rng, backend)                          -> params  {name: array}
    forward(params, x, train=False)             -> y, cache
    backward(params, cache, dy, need_dx=True)   -> dx, grads   (grads has the trainable keys)
    backward2(params, cache, d2y, dy=None, need_dx=True)
                                                -> d2x, h      (diagonal Gauss-Newton terms)

backward2 propagates the diagonal Gauss-Newton approximation of d2E/dx^2 (LeCun et al. 1998,
appendix C, eqs. 25-27): the backward pass with squared weights, squared inputs and squared slopes;
for a shared weight, h sums the terms of every connection that shares it (eq. 23). `dy` is used only
by a layer whose own curvature the estimate keeps (the RBF output layer, see rbf.py).

Keys of `params` not listed in `trainable` are constants that live on the device with the
parameters (the RBF prototypes, the C3 connection index) and are never updated by an optimizer.
All arrays use the batch-last layout: (C, H, W, N) for maps, (F, N) for vectors.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy


class Layer(Protocol):
    trainable: tuple[str, ...]

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]: ...

    def init(self, rng: numpy.random.Generator, backend) -> dict[str, Any]: ...

    def forward(self, params, x, train: bool = False) -> tuple[Any, Any]: ...  # y, cache

    def backward(
        self, params, cache, dy, need_dx: bool = True
    ) -> tuple[Any, dict]: ...  # dx, grads

    def backward2(
        self, params, cache, d2y, dy=None, need_dx: bool = True
    ) -> tuple[Any, dict]: ...  # d2x, h


def paper_uniform(rng: numpy.random.Generator, shape, fan_in: int) -> numpy.ndarray:
    """Appendix A: weights uniform in [-2.4/F_i, +2.4/F_i], F_i the fan-in of the receiving unit."""
    bound = 2.4 / fan_in
    return rng.uniform(-bound, bound, size=shape)


def he_normal(rng: numpy.random.Generator, shape, fan_in: int) -> numpy.ndarray:
    """He et al. 2015: normal with standard deviation sqrt(2 / fan_in), for ReLU networks."""
    return rng.normal(0.0, (2.0 / fan_in) ** 0.5, size=shape)


def paper_sqrt_uniform(rng: numpy.random.Generator, shape, fan_in: int) -> numpy.ndarray:
    """Uniform in [-2.4/sqrt(F_i), +2.4/sqrt(F_i)]: appendix A's rule for *independent* inputs.

    Appendix A divides by F_i because the standard deviation of a weighted sum grows linearly
    with F_i when the inputs are highly correlated, and like sqrt(F_i) when they are independent.
    With 1/F_i the signal shrinks layer after layer in this network (docs/reproducing.md, step 1).
    """
    bound = 2.4 / fan_in**0.5
    return rng.uniform(-bound, bound, size=shape)


def lecun_uniform(rng: numpy.random.Generator, shape, fan_in: int) -> numpy.ndarray:
    """Uniform in [-sqrt(3/F_i), +sqrt(3/F_i)]: standard deviation 1/sqrt(F_i), the rule of
    LeCun, Bottou, Orr and Mueller, "Efficient BackProp" (1998, sec. 4.6), written for the same
    scaled tanh: a unit's weighted sum then has about the spread of its inputs.
    """
    bound = (3.0 / fan_in) ** 0.5
    return rng.uniform(-bound, bound, size=shape)


INIT_SCHEMES = ("paper", "paper_sqrt", "lecun", "he")


def init_weights(rng: numpy.random.Generator, shape, fan_in: int, scheme: str) -> numpy.ndarray:
    """Host-side (NumPy float64) weights for `scheme` in INIT_SCHEMES."""
    if scheme == "paper":
        return paper_uniform(rng, shape, fan_in)
    if scheme == "paper_sqrt":
        return paper_sqrt_uniform(rng, shape, fan_in)
    if scheme == "lecun":
        return lecun_uniform(rng, shape, fan_in)
    if scheme == "he":
        return he_normal(rng, shape, fan_in)
    raise ValueError(f"unknown init scheme {scheme!r}: use one of {', '.join(INIT_SCHEMES)}")


class Parameterless:
    """Mixin for layers without parameters: empty init, no trainable keys."""

    trainable: tuple[str, ...] = ()

    def init(self, rng, backend) -> dict:
        return {}
