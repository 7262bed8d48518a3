"""Every layer, on every backend, in float64: backward against finite differences, and
backward2 against the exact diagonal Gauss-Newton term (J**2).T @ h built from a finite-difference
Jacobian J (independent of the layer's own backward passes)."""

from __future__ import annotations

import numpy
import pytest
from numerical import jacobian_columns, relative_error

from lenet5x import paper
from lenet5x.backend import to_numpy
from lenet5x.im2col import plain_order
from lenet5x.layers import (
    AvgPool2x2,
    Conv2D,
    ConvMaxPool,
    EuclideanRBF,
    Flatten,
    FullyConnected,
    MaxPool2x2,
    ReLU,
    ScaledTanh,
    Subsampling,
)
from lenet5x.layers.base import init_weights
from lenet5x.losses import make_loss
from lenet5x.model import Model


def away_from_zero(rng, shape):
    """Values in +-[0.2, 1.2]: no ReLU kinks within finite-difference reach."""
    return rng.uniform(0.2, 1.2, size=shape) * rng.choice([-1.0, 1.0], size=shape)


# (id, layer factory, input shape (..., N), input generator)
LAYER_CASES = [
    ("conv", lambda: Conv2D(2, 3, 3), (2, 6, 5, 2), None),
    ("conv-table", lambda: Conv2D(4, 3, 3, table=((0, 1), (1, 2, 3), (0, 3))), (4, 6, 6, 2), None),
    ("conv-C3", lambda: Conv2D(6, 16, 5, table=paper.C3_TABLE), (6, 6, 6, 1), None),
    ("conv-padded", lambda: Conv2D(1, 2, 3, padding=1), (1, 5, 5, 2), None),
    # odd output sizes take the plain path (im2col), even ones the 2x2-blocked one
    ("conv-batch-40", lambda: Conv2D(2, 2, 3), (2, 5, 4, 40), None),  # col2im's large-batch path
    ("conv-blocked-batch-40", lambda: Conv2D(2, 2, 3), (2, 4, 6, 40), None),
    (
        "conv-blocked",
        lambda: Conv2D(1, 3, 3),
        (1, 6, 8, 2),
        None,
    ),  # 2x2-blocked path (one input map)
    ("conv-blocked-padded", lambda: Conv2D(1, 2, 5, padding=2), (1, 6, 6, 2), None),
    ("conv-he", lambda: Conv2D(2, 2, 2, init="he"), (2, 4, 4, 2), None),
    ("convmaxpool", lambda: ConvMaxPool(1, 3, 3), (1, 6, 8, 2), None),  # blocked
    ("convmaxpool-padded", lambda: ConvMaxPool(1, 2, 5, padding=2), (1, 6, 6, 2), None),
    ("convmaxpool-plain", lambda: ConvMaxPool(2, 3, 3), (2, 6, 8, 2), None),  # two layers in turn
    ("subsampling", lambda: Subsampling(3), (3, 4, 6, 2), None),
    ("subsampling-average", lambda: Subsampling(3, average=True), (3, 4, 6, 2), None),
    # fewer input maps than maps: each feeds 2 (LeNet-4's S2) or 3 consecutive ones
    ("subsampling-pairs", lambda: Subsampling(6, inputs=3), (3, 4, 6, 2), None),
    (
        "subsampling-triples-average",
        lambda: Subsampling(6, inputs=2, average=True),
        (2, 4, 4, 2),
        None,
    ),
    ("avgpool", lambda: AvgPool2x2(), (2, 4, 4, 2), None),
    ("maxpool", lambda: MaxPool2x2(), (2, 4, 6, 2), None),
    ("tanh", lambda: ScaledTanh(), (3, 4, 2), None),
    ("relu", lambda: ReLU(), (3, 4, 2), away_from_zero),
    ("full", lambda: FullyConnected(5, 4), (5, 3), None),
    ("full-he", lambda: FullyConnected(5, 4, init="he"), (5, 3), None),
    ("flatten", lambda: Flatten(), (2, 3, 2, 2), None),
    ("rbf", lambda: EuclideanRBF(84, 10), (84, 2), None),
    ("rbf-place", lambda: EuclideanRBF(10, 10, prototypes="place"), (10, 2), None),
]
CASE_IDS = [case[0] for case in LAYER_CASES]


def setup(case, backend, rng):
    _, make, shape, gen = case
    layer = make()
    params = layer.init(rng, backend)
    # trainable values away from zero-ish symmetric init so every path carries signal
    for key in layer.trainable:
        host = to_numpy(params[key])
        params[key] = backend.asarray(host + rng.uniform(-0.5, 0.5, size=host.shape))
    x_host = gen(rng, shape) if gen else rng.normal(size=shape)
    return layer, params, x_host


def forward_host(layer, params, backend, x_host):
    y, _ = layer.forward(params, backend.asarray(x_host))
    return to_numpy(y)


def with_param(params, key, value, backend):
    changed = dict(params)
    changed[key] = backend.asarray(value)
    return changed


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_out_shape_matches_forward(case, backend, rng):
    layer, params, x_host = setup(case, backend, rng)
    y = forward_host(layer, params, backend, x_host)
    assert y.shape == (*layer.out_shape(x_host.shape[:-1]), x_host.shape[-1])


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_backward_matches_finite_differences(case, backend, rng, paths):
    layer, params, x_host = setup(case, backend, rng)
    y, cache = layer.forward(params, backend.asarray(x_host))
    r = rng.normal(size=y.shape)
    dx, grads = layer.backward(params, cache, backend.asarray(r))
    assert sorted(grads) == sorted(layer.trainable)

    def loss_of_x(xh):
        return numpy.array([numpy.sum(forward_host(layer, params, backend, xh) * r)])

    numeric_dx = jacobian_columns(loss_of_x, x_host)[0].reshape(x_host.shape)
    assert relative_error(dx, numeric_dx) < 1e-7
    for key in layer.trainable:
        w = to_numpy(params[key])

        def loss_of_w(wh, key=key):
            return numpy.array(
                [
                    numpy.sum(
                        forward_host(layer, with_param(params, key, wh, backend), backend, x_host)
                        * r
                    )
                ]
            )

        numeric = jacobian_columns(loss_of_w, w)[0].reshape(w.shape)
        assert grads[key].shape == params[key].shape
        assert relative_error(grads[key], numeric) < 1e-7, key


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_backward2_is_gauss_newton_diagonal(case, backend, rng, paths):
    layer, params, x_host = setup(case, backend, rng)
    y, cache = layer.forward(params, backend.asarray(x_host))
    h_out = rng.uniform(0.0, 1.0, size=y.shape)  # d2E/dy^2 >= 0
    d2x, h = layer.backward2(params, cache, backend.asarray(h_out))

    jac_x = jacobian_columns(lambda xh: forward_host(layer, params, backend, xh), x_host)
    expected = (jac_x**2).T @ h_out.reshape(-1)
    assert relative_error(d2x, expected.reshape(x_host.shape)) < 1e-7
    for key in layer.trainable:
        w = to_numpy(params[key])
        jac_w = jacobian_columns(
            lambda wh, key=key: forward_host(
                layer, with_param(params, key, wh, backend), backend, x_host
            ),
            w,
        )
        expected_w = (jac_w**2).T @ h_out.reshape(-1)
        assert relative_error(h[key], expected_w.reshape(w.shape)) < 1e-7, key


@pytest.mark.parametrize(
    "make",
    [lambda: Conv2D(1, 4, 5), lambda: Conv2D(6, 16, 5, table=paper.C3_TABLE)],
    ids=["C1-like", "C3-table"],
)
def test_blocked_path_equals_the_plain_one(make, backend, rng, paths):
    """The 2x2-blocked computation (even output) gives the plain one's numbers."""
    layer = make()
    params = layer.init(rng, backend)
    c = layer.in_channels
    x = backend.asarray(rng.normal(size=(c, 12, 10, 3)))
    assert layer.blocked(8, 6)
    y, cache = layer.forward(params, x)
    dy = backend.asarray(rng.normal(size=(layer.out_channels, 8, 6, 3)))
    dx, grads = layer.backward(params, cache, dy)
    d2x, h = layer.backward2(params, cache, dy * dy)
    layer.blocked = lambda out_h, out_w: False
    y0, cache0 = layer.forward(params, x)
    dx0, grads0 = layer.backward(params, cache0, dy)
    d2x0, h0 = layer.backward2(params, cache0, dy * dy)
    for got, want in [
        (y, y0),
        (dx, dx0),
        (d2x, d2x0),
        *((grads[k], grads0[k]) for k in grads),
        *((h[k], h0[k]) for k in h),
    ]:
        assert relative_error(got, want) < 1e-12


POOLS = {
    "subsampling": lambda: Subsampling(3),
    "average": lambda: AvgPool2x2(),
    "pairs": lambda: Subsampling(6, inputs=3, average=True),  # LeNet-4's S2: 2 maps per input
}


@pytest.mark.parametrize("pool", list(POOLS))
def test_block_order_gives_the_plain_order_numbers(pool, backend, rng, paths):
    """Conv2D(block_order) -> ScaledTanh -> 2x2 subsampling: the same numbers as in plain order,
    every pass; the maps in between are the plain ones rearranged."""

    def chain(block_order):
        return [Conv2D(2, 3, 3, block_order=block_order), ScaledTanh(), POOLS[pool]()]

    fast, slow = chain(True), chain(False)
    params = [layer.init(numpy.random.default_rng(3), backend) for layer in fast]
    params[2] = {k: v + 0.3 for k, v in params[2].items()}
    x = backend.asarray(rng.normal(size=(2, 10, 8, 3)))
    dy = backend.asarray(rng.normal(size=(fast[2].out_shape((3, 8, 6))[0], 4, 3, 3)))
    results = []
    for layers in (fast, slow):
        out, caches, maps = x, [], []
        for layer, p in zip(layers, params, strict=True):
            out, cache = layer.forward(p, out)
            caches.append(cache)
            maps.append(plain_order(out))
        g, d2, grads = dy, dy * dy, []
        for layer, p, cache in reversed(list(zip(layers, params, caches, strict=True))):
            g, gw = layer.backward(p, cache, g)
            d2, hw = layer.backward2(p, cache, d2)
            grads += [gw[k] for k in sorted(gw)] + [hw[k] for k in sorted(hw)]
        results.append([*maps, g, d2, *grads])
    assert fast[0].forward(params[0], x)[0].ndim == 6
    for got, want in zip(*results, strict=True):
        assert got.shape == want.shape
        assert relative_error(got, want) < 1e-12


def test_block_order_must_reach_a_subsampling():
    layers = [("C1", Conv2D(1, 2, 3, block_order=True)), ("A", ReLU()), ("P", MaxPool2x2())]
    with pytest.raises(ValueError, match="block order"):
        Model(layers, make_loss("cross_entropy"), (1, 6, 6))


@pytest.mark.parametrize("in_channels", [1, 2], ids=["blocked", "plain"])
def test_convmaxpool_equals_conv_then_maxpool(in_channels, backend, rng, paths):
    """Same numbers as the two layers, ties included: integer inputs and weights tie often."""
    fused = ConvMaxPool(in_channels, 3, 3)
    conv, pool = Conv2D(in_channels, 3, 3), MaxPool2x2()
    params = {
        "weight": backend.asarray(rng.integers(-1, 2, size=(3, in_channels, 3, 3)).astype(float)),
        "bias": backend.asarray(numpy.array([0.0, 1.0, -2.0])),
    }
    x = backend.asarray(rng.integers(0, 2, size=(in_channels, 8, 6, 4)).astype(float))
    y, cache = fused.forward(params, x)
    a, conv_cache = conv.forward(params, x)
    y0, pool_cache = pool.forward({}, a)
    dy = backend.asarray(rng.normal(size=y0.shape))
    got = [y, *fused.backward(params, cache, dy)]
    got += fused.backward2(params, cache, dy * dy)
    da, _ = pool.backward({}, pool_cache, dy)
    d2a, _ = pool.backward2({}, pool_cache, dy * dy)
    want = [y0, *conv.backward(params, conv_cache, da), *conv.backward2(params, conv_cache, d2a)]
    for g, w in zip(got, want, strict=True):
        if isinstance(g, dict):
            assert sorted(g) == sorted(w)
            for k in g:
                assert relative_error(g[k], w[k]) < 1e-12, k
        else:
            assert relative_error(g, w) < 1e-12


def test_backward_can_skip_input_gradient(backend, rng):
    layer = Conv2D(1, 2, 3)
    params = layer.init(rng, backend)
    y, cache = layer.forward(params, backend.asarray(rng.normal(size=(1, 5, 5, 2))))
    dx, grads = layer.backward(params, cache, y, need_dx=False)
    d2x, h = layer.backward2(params, cache, y, need_dx=False)
    assert dx is None and d2x is None and set(grads) == set(h) == {"weight", "bias"}


@pytest.mark.parametrize("features, prototypes", [(84, "digits"), (10, "place")])
def test_rbf_keeps_its_own_curvature(features, prototypes, backend, rng):
    """backward2 with dy adds sum_i dy_i d2y_i/dx_j^2: the exact Hessian diagonal of E = sum_i g_i y_i."""
    layer = EuclideanRBF(features, 10, prototypes=prototypes)
    params = layer.init(rng, backend)
    x_host = rng.normal(size=(features, 2))
    g = rng.uniform(0.0, 1.0, size=(10, 2))
    _, cache = layer.forward(params, backend.asarray(x_host))
    d2x, _ = layer.backward2(
        params, cache, backend.asarray(numpy.zeros((10, 2))), dy=backend.asarray(g)
    )

    def energy(xh):
        return numpy.sum(forward_host(layer, params, backend, xh) * g)

    eps = 1e-3  # E is quadratic in x: second differences are exact up to rounding
    flat = x_host.reshape(-1)
    exact = numpy.empty_like(flat)
    for i in range(flat.size):
        plus, minus = flat.copy(), flat.copy()
        plus[i] += eps
        minus[i] -= eps
        exact[i] = (
            energy(plus.reshape(x_host.shape))
            - 2 * energy(x_host)
            + energy(minus.reshape(x_host.shape))
        ) / eps**2
    assert relative_error(d2x, exact.reshape(x_host.shape)) < 1e-6


def test_paired_subsampling_feeds_each_input_map_to_consecutive_maps(backend, rng):
    """Subsampling(channels, inputs): map k reads input map k // (channels / inputs), each with
    its own coefficient and bias (sec. III-C: LeNet-4's "8 subsampling maps connected in pairs to
    each first-layer feature map"); in 2x2-block order too."""
    layer = Subsampling(6, inputs=2)
    coef, bias = rng.uniform(0.5, 1.5, size=6), rng.normal(size=6)
    params = {"coef": backend.asarray(coef), "bias": backend.asarray(bias)}
    x = rng.normal(size=(2, 4, 6, 3))
    sums = x.reshape(2, 2, 2, 3, 2, 3).sum(axis=(2, 4))  # (2, 2, 3, 3): each 2x2 block's sum
    expected = numpy.stack([coef[k] * sums[k // 3] + bias[k] for k in range(6)])
    y, _ = layer.forward(params, backend.asarray(x))
    assert relative_error(y, expected) < 1e-12
    blocked = x.reshape(2, 2, 2, 3, 2, 3).transpose(0, 2, 4, 1, 3, 5)  # (C, 2, 2, h, w, N)
    y_blocked, _ = layer.forward(params, backend.asarray(numpy.ascontiguousarray(blocked)))
    assert relative_error(y_blocked, expected) < 1e-12


def test_subsampling_refuses_the_wrong_input_maps():
    assert Subsampling(8, inputs=4).out_shape((4, 28, 28)) == (8, 14, 14)
    with pytest.raises(ValueError, match="expects 4 input maps, got 8"):
        Subsampling(8, inputs=4).out_shape((8, 28, 28))
    with pytest.raises(ValueError, match="expects 6 input maps, got 3"):
        Subsampling(6).out_shape((3, 28, 28))
    with pytest.raises(ValueError, match="8 subsampling maps cannot share 3 input maps"):
        Subsampling(8, inputs=3)
    with pytest.raises(ValueError, match="even height and width"):
        Subsampling(8, inputs=4).out_shape((4, 27, 28))


def test_place_prototypes_are_the_classic_target_codes(backend, rng):
    """prototypes="place": +1 at the class and -1 elsewhere, so y_i is the squared error of x to
    class i's target code; digit prototypes take Fig. 3's 84 inputs, place ones one per class."""
    layer = EuclideanRBF(10, 10, prototypes="place")
    params = layer.init(rng, backend)
    codes = numpy.where(numpy.eye(10) == 1, 1.0, -1.0)
    numpy.testing.assert_array_equal(to_numpy(params["prototypes"]), codes)
    x = rng.normal(size=(10, 3))
    y, _ = layer.forward(params, backend.asarray(x))
    errors = [[numpy.sum((x[:, n] - codes[i]) ** 2) for n in range(3)] for i in range(10)]
    assert relative_error(y, numpy.array(errors)) < 1e-12
    with pytest.raises(ValueError, match="as many inputs as classes"):
        EuclideanRBF(12, 10, prototypes="place")
    with pytest.raises(ValueError, match="84 inputs"):
        EuclideanRBF(10, 10)
    with pytest.raises(ValueError, match="'digits' or 'place'"):
        EuclideanRBF(10, 10, prototypes="bitmaps")


def test_maxpool_ties_send_gradient_to_one_input(backend):
    layer = MaxPool2x2()
    x = backend.asarray(numpy.ones((1, 2, 2, 1)))
    y, cache = layer.forward({}, x)
    dx, _ = layer.backward({}, cache, backend.asarray(numpy.full((1, 1, 1, 1), 3.0)))
    dx = to_numpy(dx)
    assert dx.sum() == 3.0 and numpy.count_nonzero(dx) == 1


def test_maxpool_gives_each_block_gradient_to_its_first_maximum(backend):
    # integers 0-2 make ties of every kind; the first maximum in row-major order takes the gradient
    values = numpy.random.default_rng(7).integers(0, 3, size=(3, 6, 8, 5)).astype(float)
    dy = numpy.random.default_rng(8).uniform(1.0, 2.0, size=(3, 3, 4, 5))
    expected = numpy.zeros_like(values)
    for c, bi, bj, n in numpy.ndindex(3, 3, 4, 5):
        block = values[c, 2 * bi : 2 * bi + 2, 2 * bj : 2 * bj + 2, n]
        i, j = numpy.unravel_index(numpy.argmax(block), (2, 2))
        expected[c, 2 * bi + i, 2 * bj + j, n] = dy[c, bi, bj, n]
    layer = MaxPool2x2()
    _, cache = layer.forward({}, backend.asarray(values))
    dx, _ = layer.backward({}, cache, backend.asarray(dy))
    numpy.testing.assert_array_equal(to_numpy(dx), expected)


def test_table_connections_are_the_only_parameters(backend, rng):
    layer = Conv2D(6, 16, 5, table=paper.C3_TABLE)
    params = layer.init(rng, backend)
    assert params["weight"].shape == (60, 5, 5)
    dense = to_numpy(layer.dense_weight(params)).reshape(16, 6, 25)
    for o in range(16):
        for c in range(6):
            assert (numpy.any(dense[o, c] != 0)) == (c in paper.C3_TABLE[o])


def test_paper_init_bounds(backend, rng):
    layer = Conv2D(6, 16, 5, table=paper.C3_TABLE)
    w = to_numpy(layer.init(rng, backend)["weight"])
    start = 0
    for row in paper.C3_TABLE:  # fan-in of a C3 unit is 25 x (number of maps it reads)
        block = w[start : start + len(row)]
        assert numpy.abs(block).max() <= 2.4 / (25 * len(row))
        assert numpy.abs(block).max() > 0.5 * 2.4 / (25 * len(row))
        start += len(row)


@pytest.mark.parametrize(
    "scheme, bound",
    [
        ("paper", lambda f: 2.4 / f),
        ("paper_sqrt", lambda f: 2.4 / f**0.5),
        ("lecun", lambda f: (3 / f) ** 0.5),
    ],
)
def test_uniform_init_schemes_fill_their_bounds(scheme, bound):
    for fan_in in (4, 25, 400):
        w = init_weights(numpy.random.default_rng(fan_in), (20_000,), fan_in, scheme)
        assert numpy.abs(w).max() <= bound(fan_in)
        assert numpy.abs(w).max() > 0.99 * bound(fan_in)
        assert abs(w.std() - bound(fan_in) / 3**0.5) < 0.02 * bound(fan_in)  # uniform: b/sqrt(3)


def test_conv_rejects_bad_table():
    with pytest.raises(ValueError, match="input map"):
        Conv2D(2, 1, 3, table=((0, 5),))
    with pytest.raises(ValueError, match="rows"):
        Conv2D(2, 2, 3, table=((0,),))


def test_same_seed_same_weights_on_every_backend(backend):
    from lenet5x.backend import resolve

    reference = Conv2D(2, 3, 3).init(numpy.random.default_rng(7), resolve("numpy", "float64"))
    mine = Conv2D(2, 3, 3).init(numpy.random.default_rng(7), backend)
    for key in reference:
        numpy.testing.assert_array_equal(to_numpy(mine[key]), to_numpy(reference[key]))
