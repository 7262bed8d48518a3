"""The optimizers work on all parameters as one flat vector (optim.FlatVectors); each must equal
its rule done array by array, and must not depend on which arrays it has seen before (a resumed
run, a pass started again)."""

from __future__ import annotations

import numpy
import pytest

from lenet5x.backend import resolve, to_numpy
from lenet5x.optim import SDLM, SGD, Adam


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
def test_flat_adam_equals_adam_per_array(decay, paths):
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
    assert state["steps"] == 3
    for k in shapes:
        assert params[k].shape == shapes[k] and state[f"m/{k}"].shape == shapes[k]
        numpy.testing.assert_allclose(to_numpy(params[k]), expected[k], rtol=1e-12, err_msg=k)
        numpy.testing.assert_allclose(to_numpy(state[f"m/{k}"]), m[k], rtol=1e-12, err_msg=k)
        numpy.testing.assert_allclose(to_numpy(state[f"v/{k}"]), v[k], rtol=1e-12, err_msg=k)


SHAPES = {"C1.weight": (6, 1, 5, 5), "C1.bias": (6,), "F6.weight": (84, 120), "F6.bias": (84,)}


def sgd_by_hand(params, grads_per_step, lr, momentum, decay, nesterov, batch):
    params = {k: v.copy() for k, v in params.items()}
    velocity = {}
    for grads in grads_per_step:
        for k, g in grads.items():
            g = g / batch
            if k.endswith("weight"):
                g = g + decay * params[k]
            if momentum:
                velocity[k] = momentum * velocity[k] + g if k in velocity else g
                g = g + momentum * velocity[k] if nesterov else velocity[k]
            params[k] = params[k] - lr * g
    return params


@pytest.mark.parametrize(
    "momentum, decay, nesterov", [(0.0, 0.0, False), (0.9, 0.01, False), (0.9, 0.01, True)]
)
def test_flat_sgd_equals_sgd_per_array(momentum, decay, nesterov):
    rng = numpy.random.default_rng(5)
    host = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    steps = [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(3)]
    expected = sgd_by_hand(host, steps, 0.05, momentum, decay, nesterov, batch=8)
    backend = resolve("numpy", "float64")
    sgd = SGD([(None, 0.05)], momentum=momentum, weight_decay=decay, nesterov=nesterov)
    params, state = {k: backend.asarray(a) for k, a in host.items()}, {}
    for grads in steps:
        params, state = sgd.step(
            params, {k: backend.asarray(g) for k, g in grads.items()}, state, 8, 0
        )
    for k in SHAPES:
        numpy.testing.assert_allclose(to_numpy(params[k]), expected[k], rtol=1e-12, err_msg=k)


def test_flat_sdlm_equals_sdlm_per_array(paths):
    """w <- w - eta / (mu + h_kk) * g, parameter by parameter (eq. 21)."""
    rng = numpy.random.default_rng(6)
    host = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    h = {k: rng.uniform(0.0, 2.0, size=s) for k, s in SHAPES.items()}
    steps = [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(2)]
    backend = resolve("numpy", "float64")
    sdlm = SDLM([(None, 0.001)], mu=0.02)
    state = sdlm.set_curvature({}, {k: backend.asarray(a) for k, a in h.items()}, epoch=0)
    params = {k: backend.asarray(a) for k, a in host.items()}
    for grads in steps:
        params, state = sdlm.step(
            params, {k: backend.asarray(g) for k, g in grads.items()}, state, 8, 0
        )
    for k in SHAPES:
        rate = 0.001 / (0.02 + h[k])
        numpy.testing.assert_allclose(to_numpy(state[f"rate/{k}"]), rate, rtol=1e-12, err_msg=k)
        want = host[k] - rate * steps[0][k] - rate * steps[1][k]
        numpy.testing.assert_allclose(to_numpy(params[k]), want, rtol=1e-12, err_msg=k)


def make_each():
    sdlm = SDLM([(None, 0.001)], mu=0.02)
    return {
        "sdlm": sdlm,
        "sgd": SGD([(None, 0.05)], momentum=0.9, weight_decay=0.01, nesterov=True),
        "adam": Adam([(None, 0.01)], weight_decay=0.01),
    }


@pytest.mark.parametrize("name", ["sdlm", "sgd", "adam"])
def test_flat_optimizers_do_not_depend_on_what_they_have_seen(name):
    """Three steps in one go equal two steps, a copy of everything through the host (a resumed
    run, with a new optimizer), and the third; a step taken again from an earlier point (a pass
    started over) gives the same numbers; no step changes its inputs."""
    rng = numpy.random.default_rng(7)
    backend = resolve("numpy", "float64")
    host = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    steps = [{k: backend.asarray(rng.normal(size=s)) for k, s in SHAPES.items()} for _ in range(3)]
    h = {k: backend.asarray(rng.uniform(0.0, 2.0, size=s)) for k, s in SHAPES.items()}

    def start(optimizer):
        state = optimizer.set_curvature({}, h, 0) if name == "sdlm" else {}
        return {k: backend.asarray(a) for k, a in host.items()}, state

    def copied(arrays):
        return {k: backend.asarray(numpy.array(to_numpy(a))) for k, a in arrays.items()}

    optimizer = make_each()[name]
    params, state = start(optimizer)
    history = [(params, state)]
    for grads in steps:
        params, state = optimizer.step(params, grads, state, 8, 0)
        history.append((params, state))
    resumed = make_each()[name]
    p2, s2 = history[2]
    p3, s3 = resumed.step(copied(p2), steps[2], copied(s2), 8, 0)
    earlier_params, earlier_state = history[1]
    again, _ = optimizer.step(earlier_params, steps[1], earlier_state, 8, 0)  # started over
    frozen = copied(earlier_params)
    optimizer.step(earlier_params, steps[1], earlier_state, 8, 0)
    for k in SHAPES:
        numpy.testing.assert_allclose(to_numpy(p3[k]), to_numpy(params[k]), rtol=1e-12, err_msg=k)
        numpy.testing.assert_array_equal(to_numpy(again[k]), to_numpy(history[2][0][k]))
        numpy.testing.assert_array_equal(to_numpy(earlier_params[k]), to_numpy(frozen[k]))
    for k in state:
        numpy.testing.assert_allclose(to_numpy(s3[k]), to_numpy(state[k]), rtol=1e-12, err_msg=k)
