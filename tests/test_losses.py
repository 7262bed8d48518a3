"""The criteria: gradient and second derivative against finite differences of the value."""

from __future__ import annotations

import numpy
import pytest
from numerical import jacobian_columns, relative_error

from lenet5x.backend import to_numpy
from lenet5x.losses import MAPCriterion, MSEPrototype, SoftmaxCrossEntropy, make_loss

LOSSES = [
    pytest.param(MSEPrototype, id="mse"),
    pytest.param(lambda: MAPCriterion(j=1.5), id="map"),
    pytest.param(SoftmaxCrossEntropy, id="cross_entropy"),
]


@pytest.mark.parametrize("make", LOSSES)
def test_loss_derivatives(make, backend, rng):
    loss = make()
    out_host = rng.uniform(0.0, 4.0, size=(10, 3))
    labels = backend.asarray(numpy.array([3, 0, 9]), dtype=backend.xp.int64)
    total, grad = loss(backend.asarray(out_host), labels)
    d2, _ = loss.curvature(backend.asarray(out_host), labels)

    def value(o):
        return numpy.array([float(to_numpy(loss(backend.asarray(o), labels)[0]))])

    numeric = jacobian_columns(value, out_host)[0].reshape(out_host.shape)
    assert relative_error(grad, numeric) < 1e-7
    # the diagonal of the Hessian, column by column (patterns are independent)
    numeric_d2 = numpy.empty_like(out_host)
    for i in range(out_host.shape[0]):
        for n in range(out_host.shape[1]):

            def g(o, i=i, n=n):
                return to_numpy(loss(backend.asarray(o), labels)[1])[i, n : n + 1]

            numeric_d2[i, n] = jacobian_columns(g, out_host, [i * out_host.shape[1] + n])[0, 0]
    assert relative_error(d2, numeric_d2) < 1e-6
    assert numpy.all(to_numpy(d2) >= 0)


def _direct_totals(out, labels, j):
    """The three criteria written from their equations, in float64 with no stabilizing shift."""
    picked = out[labels, numpy.arange(out.shape[1])]
    return {
        "mse": picked.sum(),  # eq. 8
        "map": (picked + numpy.log(numpy.exp(-j) + numpy.exp(-out).sum(axis=0))).sum(),  # eq. 9
        "cross_entropy": (numpy.log(numpy.exp(out).sum(axis=0)) - picked).sum(),
    }


@pytest.mark.parametrize("name", ["mse", "map", "cross_entropy"])
def test_loss_values_follow_the_equations(name, backend, rng):
    out = rng.uniform(-3.0, 6.0, size=(10, 7))
    labels = numpy.array([3, 0, 9, 9, 1, 5, 2])
    loss = make_loss(name, map_j=1.5)
    total, _ = loss(backend.asarray(out), backend.asarray(labels, dtype=backend.xp.int64))
    want = _direct_totals(out, labels, 1.5)[name]
    assert abs(float(to_numpy(total)) - want) < 1e-9 * abs(want)


def test_map_is_stable_for_large_distances(backend):
    loss = MAPCriterion(j=2.0)
    out = backend.asarray(numpy.full((10, 1), 2000.0))
    total, grad = loss(out, backend.asarray(numpy.array([1]), dtype=backend.xp.int64))
    # every RBF far away: log(e^-j + sum e^-y) ~ -j, so E ~ 2000 - 2
    assert abs(float(to_numpy(total)) - 1998.0) < 1e-6
    assert numpy.all(numpy.isfinite(to_numpy(grad)))


def test_predictions():
    from lenet5x.backend import resolve

    b = resolve("numpy", "float64")
    out = b.asarray(numpy.array([[1.0, 5.0], [0.5, 6.0], [2.0, 4.0]]))
    assert to_numpy(MSEPrototype().predict(out)).tolist() == [1, 2]
    assert to_numpy(SoftmaxCrossEntropy().predict(out)).tolist() == [2, 1]


def test_make_loss_rejects_unknown():
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge")
    with pytest.raises(ValueError, match="positive"):
        make_loss("map", map_j=0.0)
