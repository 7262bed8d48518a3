"""Whole models: the paper's parameter count, end-to-end gradient checks, the whole model's
second-derivative pass (classic, LeNet-1, LeNet-4) against an independent layer-by-layer Jacobian
computation, and one full training step on array_api_strict equal to NumPy."""

from __future__ import annotations

import array_api_strict
import numpy
import pytest
from numerical import jacobian_columns, relative_error, sample_columns

from lenet5x.backend import resolve, to_numpy
from lenet5x.config import ConfigError, ModelConfig
from lenet5x.model import build_model
from lenet5x.optim import SDLM, Adam

# the paper read literally (docs/reproducing.md, step 1): what these tests were written against
LITERAL = dict(init="paper", subsampling="sum", subsampling_coef=None)
PAPER_COUNTS = {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}


def test_classic_has_the_papers_60000_parameters():
    model = build_model()
    params = model.init(numpy.random.default_rng(0), resolve("numpy"))
    counts = model.parameter_count(params)
    assert counts == PAPER_COUNTS
    assert sum(counts.values()) == 60_000
    assert (
        model.shapes[1] == (6, 28, 28)
        and model.shapes[5] == (16, 10, 10)
        and model.shapes[-1] == (10,)
    )


def test_modern_shapes_and_count():
    model = build_model(ModelConfig(architecture="modern"))
    params = model.init(numpy.random.default_rng(0), resolve("numpy"))
    assert sum(model.parameter_count(params).values()) == 156 + 2416 + 48120 + 10164 + 850


def test_subsampling_coef_sets_every_coefficient_and_leaves_the_rest_alone():
    drawn = build_model(ModelConfig(subsampling_coef=None))
    fixed = build_model(ModelConfig(subsampling_coef=0.75))
    a = drawn.init(numpy.random.default_rng(3), resolve("numpy", "float64"))
    b = fixed.init(numpy.random.default_rng(3), resolve("numpy", "float64"))
    for key in a:
        if key in ("S2.coef", "S4.coef"):
            assert numpy.all(to_numpy(b[key]) == 0.75)
            assert numpy.unique(to_numpy(a[key])).size == a[key].shape[0]  # drawn: all different
        else:
            assert numpy.array_equal(to_numpy(a[key]), to_numpy(b[key])), key


def test_model_configs_reject_bad_settings():
    with pytest.raises(TypeError, match="depth"):
        ModelConfig(architecture="classic", depth=3)
    with pytest.raises(ConfigError, match="architecture: 'alexnet' is not one of classic, modern"):
        ModelConfig(architecture="alexnet")
    with pytest.raises(ConfigError, match="loss: 'mse' is not one of cross_entropy"):
        ModelConfig(architecture="modern", loss="mse")


def test_the_default_model_is_the_papers_lenet5_as_configs_lenet5_yaml_trains_it():
    from lenet5x.config import load_config

    assert ModelConfig() == load_config("configs/lenet5.yaml").model
    model = build_model()
    assert model.loss.name == "map" and model.loss.j == 10.0
    layers = dict(model.layers)
    assert layers["C1"].init_scheme == "paper_sqrt" and layers["S2"].average
    assert layers["S2"].coef_init == 1.0 and layers["S4"].coef_init == 1.0


def _inputs(rng, backend, n=2, shape=(1, 32, 32)):
    x = backend.asarray(rng.normal(size=(*shape, n)))
    labels = backend.asarray(rng.integers(0, 10, size=n), dtype=backend.xp.int64)
    return x, labels


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(ModelConfig(loss="mse", **LITERAL), id="classic-mse"),
        pytest.param(ModelConfig(loss="map", map_j=0.5, **LITERAL), id="classic-map"),
        pytest.param(ModelConfig(), id="classic-default"),
        pytest.param(ModelConfig(architecture="modern"), id="modern"),
        pytest.param(ModelConfig(architecture="lenet1", loss="mse", **LITERAL), id="lenet1-mse"),
        pytest.param(ModelConfig(architecture="lenet1"), id="lenet1-map"),
        pytest.param(ModelConfig(architecture="lenet4", loss="mse", **LITERAL), id="lenet4-mse"),
        pytest.param(ModelConfig(architecture="lenet4"), id="lenet4-map"),
    ],
)
def test_model_gradients_match_finite_differences(config, backend, rng):
    model = build_model(config)
    params = model.init(rng, backend)
    x, labels = _inputs(rng, backend, shape=model.input_shape)
    _, _, grads = model.loss_and_grads(params, x, labels)

    for key in model.trainable_keys:
        w = to_numpy(params[key])
        columns = sample_columns(w.size, 6, rng)

        def loss_of(wh, key=key):
            changed = dict(params)
            changed[key] = backend.asarray(wh)
            out, _ = model.forward(changed, x)
            return numpy.array([float(to_numpy(model.loss(out, labels)[0]))])

        # the summed loss is O(100): a larger step keeps rounding error small next to small gradients
        numeric = jacobian_columns(loss_of, w, columns, eps=1e-4)[0]
        analytic = to_numpy(grads[key]).reshape(-1)[columns]
        assert relative_error(analytic, numeric) < 1e-7, key


@pytest.mark.parametrize("architecture", ["classic", "lenet1", "lenet4"])
@pytest.mark.parametrize("loss", ["mse", "map"])
def test_backward2_matches_layerwise_jacobians(architecture, loss, rng):
    """Appendix C's recursion, rebuilt independently: at each layer d2_in = (J_x**2).T d2_out and
    h_w = (J_w**2).T d2_out with J from finite differences of the layer's forward pass alone. The
    top, at F6's output x: the exact second derivative of the squared error y_D = |x - w_D|^2,
    plus, for MAP (j small enough that its log term matters), Gauss-Newton on the log term
    L(y) = log(e^-j + sum_i e^-y_i): (J_y**2).T diag(d2L/dy^2), J_y and d2L/dy^2 by finite
    differences of the RBF layer and of L alone. LeNet-1 and LeNet-4 end in place-coded RBFs
    (y_D the squared error to class D's code) and LeNet-4's S2 feeds each C1 map to two maps."""
    backend = resolve("numpy", "float64")
    model = build_model(ModelConfig(architecture=architecture, loss=loss, **LITERAL))
    params = model.init(rng, backend)
    x, labels = _inputs(rng, backend, n=1, shape=model.input_shape)
    out, caches = model.forward(params, x)
    if loss == "map":  # j just above the nearest prototype's y: the log term's curvature matters
        model.loss.j = float(to_numpy(out).min()) + 0.5
    d2out, kept = model.loss.curvature(out, labels)
    h_model = model.backward2(params, caches, d2out, kept)

    inputs = [to_numpy(x)]  # input of each layer
    for name, layer in model.layers[:-1]:
        y, _ = layer.forward(model.by_layer(params)[name], backend.asarray(inputs[-1]))
        inputs.append(to_numpy(y))

    rbf_name, rbf = model.layers[-1]

    def distances(f6):
        return to_numpy(rbf.forward(model.by_layer(params)[rbf_name], backend.asarray(f6))[0])

    def second_difference(f, v, eps=1e-3):
        """Diagonal of the Hessian of the scalar f at v (float64, central differences)."""
        d2 = numpy.empty(v.size)
        for i in range(v.size):
            plus, minus = v.reshape(-1).copy(), v.reshape(-1).copy()
            plus[i] += eps
            minus[i] -= eps
            d2[i] = (f(plus.reshape(v.shape)) - 2 * f(v) + f(minus.reshape(v.shape))) / eps**2
        return d2

    f6 = inputs[-1]
    label = int(to_numpy(labels)[0])
    d2 = second_difference(lambda v: float(distances(v)[label, 0]), f6)
    if loss == "map":

        def log_term(y):
            return float(numpy.logaddexp.reduce([-model.loss.j, *(-y.reshape(-1))]))

        d2_log = second_difference(log_term, distances(f6))
        assert d2_log.min() > 0.01
        jac_y = jacobian_columns(lambda v: distances(v).reshape(-1), f6)
        d2 = d2 + (jac_y**2).T @ d2_log

    for index in range(len(model.layers) - 2, -1, -1):
        name, layer = model.layers[index]
        lp = model.by_layer(params)[name]
        x_in = inputs[index]

        for key in layer.trainable:
            w = to_numpy(lp[key])
            columns = sample_columns(w.size, 40, rng)

            def f_w(wh, key=key, layer=layer, lp=lp, x_in=x_in):
                changed = dict(lp)
                changed[key] = backend.asarray(wh)
                return to_numpy(layer.forward(changed, backend.asarray(x_in))[0])

            jac_w = jacobian_columns(f_w, w, columns)
            expected = (jac_w**2).T @ d2
            got = to_numpy(h_model[f"{name}.{key}"]).reshape(-1)[columns]
            assert relative_error(got, expected) < 1e-6, f"{name}.{key}"
        if index > 0:
            jac_x = jacobian_columns(
                lambda xh, layer=layer, lp=lp: to_numpy(layer.forward(lp, backend.asarray(xh))[0]),
                x_in,
            )
            d2 = (jac_x**2).T @ d2


def _train_step(backend, config, seed=3):
    """forward, loss, backward, second-derivative pass, parameter update; returns host arrays."""
    rng = numpy.random.default_rng(seed)
    model = build_model(config)
    params = model.init(rng, backend)
    x, labels = _inputs(rng, backend, n=4, shape=model.input_shape)
    h = model.hessian_diagonal(params, x, labels)
    if config.loss in ("map", "mse"):  # an RBF output: the paper's way
        optimizer = SDLM()
        state = optimizer.set_curvature(optimizer.init_state(params), h, epoch=0)
    else:
        optimizer = Adam([(None, 1e-3)], weight_decay=1e-4)
        state = optimizer.init_state(params)
    total, out, grads = model.loss_and_grads(params, x, labels)
    new_params, state = optimizer.step(params, grads, state, batch_size=4, epoch=0)
    new_params, state = optimizer.step(new_params, grads, state, batch_size=4, epoch=0)
    result = {"loss": total, "out": out}
    result.update({f"grad/{k}": v for k, v in grads.items()})
    result.update({f"h/{k}": v for k, v in h.items()})
    result.update({f"param/{k}": v for k, v in new_params.items()})
    return {k: to_numpy(v) for k, v in result.items()}


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(ModelConfig(loss="mse", **LITERAL), id="classic-mse"),
        pytest.param(ModelConfig(loss="map", map_j=10.0, **LITERAL), id="classic-map"),
        pytest.param(ModelConfig(), id="classic-default"),
        pytest.param(ModelConfig(architecture="modern"), id="modern"),
        pytest.param(ModelConfig(architecture="lenet1"), id="lenet1"),
        pytest.param(ModelConfig(architecture="lenet4", loss="mse", **LITERAL), id="lenet4-mse"),
        pytest.param(ModelConfig(architecture="lenet4"), id="lenet4"),
    ],
)
def test_training_step_on_array_api_strict_equals_numpy(config):
    reference = _train_step(resolve("numpy", "float64"), config)
    strict = _train_step(
        resolve("array_api_strict", "float64", device=array_api_strict.Device("device1")), config
    )
    assert reference.keys() == strict.keys()
    for key in reference:
        numpy.testing.assert_allclose(
            strict[key], reference[key], rtol=1e-12, atol=1e-12, err_msg=key
        )


@pytest.mark.parametrize("library", ["torch", "jax"])
@pytest.mark.parametrize(
    "config",
    [
        pytest.param(ModelConfig(), id="classic"),
        pytest.param(ModelConfig(architecture="modern"), id="modern"),
        pytest.param(ModelConfig(architecture="modern", batch_norm=True), id="modern-bn"),
    ],
)
def test_training_step_on_torch_and_jax_equals_numpy(library, config):
    """The same hand-written passes on another library's arrays: one whole step, float64."""
    pytest.importorskip(library)
    reference = _train_step(resolve("numpy", "float64"), config)
    other = _train_step(resolve(library, "float64", device="cpu"), config)
    assert reference.keys() == other.keys()
    for key in reference:
        numpy.testing.assert_allclose(
            other[key], reference[key], rtol=1e-10, atol=1e-10, err_msg=key
        )
