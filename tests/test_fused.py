"""Fused kernels (lenet5x/fused.py): their text means the same in Python and C, and computes
exactly what the portable code computes; on a GPU, CuPy's compiled kernel equals the text."""

from __future__ import annotations

import warnings

import numpy
import pytest
from conftest import HAVE_GPU

from lenet5x import fused
from lenet5x.backend import resolve, to_numpy
from lenet5x.layers.activation import ScaledTanh
from lenet5x.layers.subsample import Subsampling
from lenet5x.namespace import gpu_paths

KERNELS = [
    fused.SCALED_TANH,
    fused.SCALED_TANH_BACKWARD,
    fused.SCALED_TANH_BACKWARD2,
    fused.SUBSAMPLING,
    fused.SUBSAMPLING_BACKWARD,
    fused.SDLM_UPDATE,
    fused.ADAM_UPDATE,
]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("x ** x", "Pow"),  # a pointer dereference in C
        ("x // x", "FloorDiv"),
        ("x % x", "Mod"),
        ("x > x", "Compare"),
        ("x * 2", "the number 2 must be an input"),  # 1/2 is 0 in C
        ("x * 0.5", "the number 0.5 must be an input"),  # a double in C
        ("abs(x)", "only tanh and sqrt"),
        ("x + z", "z is neither"),
    ],
)
def test_kernel_text_outside_the_common_syntax_is_refused(text, problem):
    with pytest.raises(ValueError, match=problem):
        fused.Kernel("bad", "x", (("y", text),))


def test_a_later_output_reads_an_earlier_one_not_a_later_one():
    fused.Kernel("chain", "x", (("y", "x * x"), ("z", "y + x")))
    with pytest.raises(ValueError, match="z is neither"):
        fused.Kernel("chain", "x", (("y", "z + x"), ("z", "x * x")))


def test_kernels_are_active_on_gpu_paths_unless_turned_off(monkeypatch):
    x = resolve("numpy", "float32").asarray(numpy.ones(3))
    assert not fused.active(x)
    with gpu_paths():
        assert fused.active(x)
        monkeypatch.setattr(fused, "ENABLED", False)
        assert not fused.active(x)


def _both_paths(run, monkeypatch):
    """run() with the portable code, then with the kernels (their text evaluated): both results.
    Only the kernels change: every other path stays NumPy's own."""
    monkeypatch.setattr(fused, "active", lambda x: False)
    portable = run()
    monkeypatch.setattr(fused, "active", lambda x: True)
    return portable, run()


def _assert_same_numbers(portable, kernel):
    for a, b in zip(portable, kernel, strict=True):
        if a is None:
            assert b is None
            continue
        assert numpy.array_equal(to_numpy(a), to_numpy(b))  # same operations, same order


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scaled_tanh_kernels_give_the_portable_numbers(dtype, rng, monkeypatch):
    backend = resolve("numpy", dtype)
    layer = ScaledTanh()
    x, g = (backend.asarray(rng.normal(size=(4, 6, 6, 3))) for _ in range(2))

    def run():
        y, cache = layer.forward({}, x)
        return y, layer.backward({}, cache, g)[0], layer.backward2({}, cache, g * g)[0]

    _assert_same_numbers(*_both_paths(run, monkeypatch))


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("block_order", [False, True])
def test_subsampling_kernels_give_the_portable_numbers(average, block_order, rng, monkeypatch):
    backend = resolve("numpy", "float32")
    layer = Subsampling(4, average=average)
    params = layer.init(rng, backend)
    shape = (4, 2, 2, 3, 3, 5) if block_order else (4, 6, 6, 5)
    x = backend.asarray(rng.normal(size=shape))
    g = backend.asarray(rng.normal(size=(4, 3, 3, 5)))

    def run():
        a, cache = layer.forward(params, x)
        dx, grads = layer.backward(params, cache, g)
        return a, cache[0], dx, grads["coef"], grads["bias"]

    _assert_same_numbers(*_both_paths(run, monkeypatch))


@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_adam_kernel_gives_the_portable_numbers(decay, rng, monkeypatch):
    from lenet5x.optim import Adam

    backend = resolve("numpy", "float32")
    shapes = {"F6.weight": (84, 120), "F6.bias": (84,)}
    start = {k: backend.asarray(rng.normal(size=s)) for k, s in shapes.items()}
    steps = [{k: backend.asarray(rng.normal(size=s)) for k, s in shapes.items()} for _ in range(3)]

    def run():
        adam, params, state = Adam([(None, 0.01)], weight_decay=decay), start, {}
        for grads in steps:  # the first step has no moments yet; the later ones do
            params, state = adam.step(params, grads, state, 8, 0)
        return [params[k] for k in shapes] + [state[f"{m}/{k}"] for m in "mv" for k in shapes]

    _assert_same_numbers(*_both_paths(run, monkeypatch))


def test_sdlm_kernel_gives_the_portable_numbers(rng, monkeypatch):
    from lenet5x.optim import SDLM

    backend = resolve("numpy", "float32")
    shapes = {"C1.weight": (6, 1, 5, 5), "C1.bias": (6,)}
    start = {k: backend.asarray(rng.normal(size=s)) for k, s in shapes.items()}
    h = {k: backend.asarray(rng.uniform(0.0, 2.0, size=s)) for k, s in shapes.items()}
    grads = {k: backend.asarray(rng.normal(size=s)) for k, s in shapes.items()}

    def run():
        sdlm = SDLM([(None, 0.001)])
        state = sdlm.set_curvature({}, h, epoch=0)
        params, _ = sdlm.step(start, grads, state, 8, 0)
        return [params[k] for k in shapes]

    _assert_same_numbers(*_both_paths(run, monkeypatch))


# -- on a GPU: CuPy compiles each text into a kernel equal to the text evaluated --------------


def _arguments(kernel, backend, rng):
    """Random arguments for `kernel`: arrays of one shape, with Python floats for the inputs
    named like constants (a, s, b1, ...), positive where a square root or a division needs it."""
    constants = {"a", "s", "a2", "k", "q", "b1", "c1", "b2", "c2", "eps", "lrwd", "rate"}
    args = []
    for name in kernel.inputs:
        if name in constants:
            args.append(float(rng.uniform(0.1, 2.0)))
        else:
            low = 0.0 if name in ("v0", "r") else -2.0
            args.append(backend.asarray(rng.uniform(low, 2.0, size=(6, 5, 7))))
    return args


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="no CuPy / CUDA device")
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-6), ("float64", 1e-13)])
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_cupy_kernel_equals_its_text(kernel, dtype, rtol, rng):
    backend = resolve("cupy", dtype)
    args = _arguments(kernel, backend, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a kernel that did not compile warns: fail
        got = kernel(*args)
    want = kernel.evaluate(*args)
    got, want = (r if isinstance(r, tuple) else (r,) for r in (got, want))
    for g, w in zip(got, want, strict=True):
        assert type(g).__module__.startswith("cupy") and str(g.dtype) == dtype
        numpy.testing.assert_allclose(to_numpy(g), to_numpy(w), rtol=rtol, atol=rtol)


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="no CuPy / CUDA device")
def test_a_kernel_cupy_cannot_compile_warns_once_and_still_computes():
    backend = resolve("cupy", "float32")
    broken = fused.Kernel("c_keyword", "x int", (("y", "x + int"),))  # `int` is C's keyword
    x = backend.asarray(numpy.arange(4.0))
    with pytest.warns(RuntimeWarning, match="c_keyword did not compile"):
        y = broken(x, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = broken(x, x)  # no second warning
    assert to_numpy(y).tolist() == [0.0, 2.0, 4.0, 6.0]
