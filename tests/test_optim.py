"""Adam works on all parameters as one flat vector; it must equal Adam done array by array."""

from __future__ import annotations

import math

import numpy
import pytest

from lenet5x.backend import resolve, to_numpy
from lenet5x.optim import Adam


def adam_by_hand(params, grads_per_step, lr, beta1, beta2, eps, decay, batch):
    """AdamW written out per array on the host (Kingma & Ba 2015, alg. 1; decoupled decay)."""
    params = {k: v.copy() for k, v in params.items()}
    m = {k: numpy.zeros_like(v) for k, v in params.items()}
    v = {k: numpy.zeros_like(p) for k, p in params.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        for k, g in grads.items():
            g = g / batch
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            update = (m[k] / (1 - beta1**t)) / (numpy.sqrt(v[k] / (1 - beta2**t)) + eps)
            if k.endswith("weight"):
                update = update + decay * params[k]
            params[k] = params[k] - lr * update
    return params, m, v


@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_flat_adam_equals_adam_per_array(decay):
    rng = numpy.random.default_rng(4)
    shapes = {"C1.weight": (6, 1, 5, 5), "C1.bias": (6,), "F6.weight": (84, 120), "F6.bias": (84,)}
    host = {k: rng.normal(size=s) for k, s in shapes.items()}
    steps = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(3)]
    expected, m, v = adam_by_hand(host, steps, 0.01, 0.9, 0.999, 1e-8, decay, batch=8)

    backend = resolve("numpy", "float64")
    adam = Adam([(None, 0.01)], weight_decay=decay)
    params = {k: backend.asarray(a) for k, a in host.items()}
    state = adam.init_state(params)
    for grads in steps:
        params, state = adam.step(
            params, {k: backend.asarray(g) for k, g in grads.items()}, state, 8, 0
        )
    assert math.isclose(float(to_numpy(state["step"])), 3.0)
    for k in shapes:
        assert params[k].shape == shapes[k] and state[f"m/{k}"].shape == shapes[k]
        numpy.testing.assert_allclose(to_numpy(params[k]), expected[k], rtol=1e-12, err_msg=k)
        numpy.testing.assert_allclose(to_numpy(state[f"m/{k}"]), m[k], rtol=1e-12, err_msg=k)
        numpy.testing.assert_allclose(to_numpy(state[f"v/{k}"]), v[k], rtol=1e-12, err_msg=k)
