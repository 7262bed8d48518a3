"""Batch normalization: training-mode gradients through the batch statistics, the documented
Gauss-Newton second-derivative pass (statistics held constant), running averages, and the
modern-bn model on every backend."""

from __future__ import annotations

import array_api_strict
import numpy
import pytest
from numerical import jacobian_columns, relative_error, sample_columns

from lenet5x.backend import resolve, to_numpy
from lenet5x.config import ConfigError, ModelConfig, load_config
from lenet5x.layers import BatchNorm
from lenet5x.model import build_model

SHAPES = [pytest.param((3, 4, 3, 5), id="maps"), pytest.param((4, 6), id="vectors")]


def setup(backend, rng, shape):
    layer = BatchNorm(shape[0])
    params = layer.init(rng, backend)
    params["gamma"] = backend.asarray(rng.uniform(0.5, 1.5, size=shape[0]))
    params["beta"] = backend.asarray(rng.normal(size=shape[0]))
    x_host = rng.normal(size=shape) * 2.0 + 0.5
    return layer, params, x_host


def train_forward(layer, params, backend, x_host):
    return to_numpy(layer.forward(params, backend.asarray(x_host), train=True)[0])


@pytest.mark.parametrize("shape", SHAPES)
def test_training_mode_gradients_include_the_batch_statistics(backend, rng, shape):
    layer, params, x_host = setup(backend, rng, shape)
    y, cache = layer.forward(params, backend.asarray(x_host), train=True)
    r = rng.normal(size=y.shape)
    dx, grads = layer.backward(params, cache, backend.asarray(r))

    def loss_of_x(xh):
        return numpy.array([numpy.sum(train_forward(layer, params, backend, xh) * r)])

    assert relative_error(dx, jacobian_columns(loss_of_x, x_host)[0].reshape(x_host.shape)) < 1e-7
    for key in ("gamma", "beta"):

        def loss_of_w(wh, key=key):
            changed = {**params, key: backend.asarray(wh)}
            return numpy.array([numpy.sum(train_forward(layer, changed, backend, x_host) * r)])

        numeric = jacobian_columns(loss_of_w, to_numpy(params[key]))[0]
        assert relative_error(grads[key], numeric) < 1e-7, key


@pytest.mark.parametrize("shape", SHAPES)
def test_backward2_is_gauss_newton_with_frozen_statistics(backend, rng, shape):
    layer, params, x_host = setup(backend, rng, shape)
    y, cache = layer.forward(params, backend.asarray(x_host), train=True)
    h_out = rng.uniform(size=y.shape)
    d2x, h = layer.backward2(params, cache, backend.asarray(h_out))
    # the same normalization with this batch's statistics frozen = evaluation mode with them as running stats
    frozen = {**params, "running_mean": cache["mean"], "running_var": cache["var"]}

    def f(xh, p=frozen):
        return to_numpy(layer.forward(p, backend.asarray(xh), train=False)[0])

    jac = jacobian_columns(f, x_host)
    assert relative_error(d2x, ((jac**2).T @ h_out.reshape(-1)).reshape(x_host.shape)) < 1e-7
    for key in ("gamma", "beta"):

        def g(wh, key=key):
            return f(x_host, {**frozen, key: backend.asarray(wh)})

        jac_w = jacobian_columns(g, to_numpy(params[key]))
        assert relative_error(h[key], (jac_w**2).T @ h_out.reshape(-1)) < 1e-7, key


def test_running_statistics_follow_the_batches(backend, rng):
    layer = BatchNorm(2, momentum=0.5)
    params = layer.init(rng, backend)
    x_host = rng.normal(size=(2, 50)) * numpy.array([[3.0], [0.5]]) + numpy.array([[1.0], [-2.0]])
    for _ in range(30):
        _, cache = layer.forward(params, backend.asarray(x_host), train=True)
        params = {**params, **layer.buffer_updates(params, cache)}
    numpy.testing.assert_allclose(to_numpy(params["running_mean"]), x_host.mean(axis=1), rtol=1e-6)
    numpy.testing.assert_allclose(
        to_numpy(params["running_var"]), x_host.var(axis=1, ddof=1), rtol=1e-6
    )
    # evaluation mode now normalizes this batch to zero mean and unit (biased-vs-unbiased) variance
    y = to_numpy(layer.forward(params, backend.asarray(x_host), train=False)[0])
    numpy.testing.assert_allclose(y.mean(axis=1), 0.0, atol=1e-6)
    _, eval_cache = layer.forward(params, backend.asarray(x_host), train=False)
    assert layer.buffer_updates(params, eval_cache) == {}


def test_modern_bn_model_gradients(rng):
    backend = resolve("numpy", "float64")
    model = build_model(ModelConfig(architecture="modern", batch_norm=True))
    params = model.init(rng, backend)
    x = backend.asarray(rng.normal(size=(1, 32, 32, 3)))
    labels = backend.asarray(numpy.array([1, 5, 7]), dtype=backend.xp.int64)
    _, _, grads = model.loss_and_grads(params, x, labels)
    for key in ("P2_bn.gamma", "P4_bn.beta", "C3.weight"):

        def loss_of(wh, key=key):
            out, _ = model.forward({**params, key: backend.asarray(wh)}, x, train=True)
            return numpy.array([float(to_numpy(model.loss(out, labels)[0]))])

        w = to_numpy(params[key])
        columns = sample_columns(w.size, 6, rng)
        numeric = jacobian_columns(loss_of, w, columns, eps=1e-5)[0]
        assert relative_error(to_numpy(grads[key]).reshape(-1)[columns], numeric) < 1e-7, key


def _bn_step(backend):
    from lenet5x.optim import Adam

    rng = numpy.random.default_rng(11)
    model = build_model(ModelConfig(architecture="modern", batch_norm=True))
    params = model.init(rng, backend)
    x = backend.asarray(rng.normal(size=(1, 32, 32, 4)))
    labels = backend.asarray(rng.integers(0, 10, size=4), dtype=backend.xp.int64)
    total, out, grads, updates = model.train_pass(params, x, labels)
    h = model.hessian_diagonal(params, x, labels)
    new, _ = Adam([(None, 1e-3)]).step(params, grads, {}, 4, 0)
    new.update(updates)
    result = {
        "loss": total,
        **{f"h/{k}": v for k, v in h.items()},
        **{f"p/{k}": v for k, v in new.items()},
    }
    return {k: to_numpy(v) for k, v in result.items()}


def test_modern_bn_step_on_array_api_strict_equals_numpy():
    reference = _bn_step(resolve("numpy", "float64"))
    strict = _bn_step(
        resolve("array_api_strict", "float64", device=array_api_strict.Device("device1"))
    )
    assert reference.keys() == strict.keys()
    assert "p/P2_bn.running_mean" in reference
    for key in reference:
        numpy.testing.assert_allclose(
            strict[key], reference[key], rtol=1e-12, atol=1e-12, err_msg=key
        )


def test_padding_lets_28x28_inputs_in():
    model = build_model(ModelConfig(architecture="classic", c1_padding=2))
    assert model.shapes[0] == (1, 28, 28) and model.shapes[1] == (6, 28, 28)
    with pytest.raises(ConfigError, match="must be 32"):
        load_config(None, ["data.input_size=28"])
