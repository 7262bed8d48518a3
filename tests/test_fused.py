"""Fused kernels (lenet5x/fused.py): their text means the same in Python and C, and computes
what the paper's formulas say; on a GPU, CuPy's compiled kernel equals the text. (The
criteria and the RBF layer call their kernels on every backend: their own tests check them.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings

import numpy
import pytest
from conftest import HAVE_GPU

from lenet5x import fused
from lenet5x.backend import resolve, to_numpy
from lenet5x.layers.activation import ReLU, ScaledTanh
from lenet5x.layers.subsample import Subsampling

KERNELS = fused.KERNELS


@pytest.mark.parametrize(
    "text, problem",
    [
        ("x ** x", "Pow"),  # a pointer dereference in C
        ("x // x", "FloorDiv"),
        ("x % x", "Mod"),
        ("x > x", "Compare"),
        ("x * 2", "the number 2 must be an input"),  # 1/2 is 0 in C
        ("x * 0.5", "the number 0.5 must be an input"),  # a double in C
        ("abs(x)", "may be called"),
        ("x + z", "z is neither"),
    ],
)
def test_kernel_text_outside_the_common_syntax_is_refused(text, problem):
    with pytest.raises(ValueError, match=problem):
        fused.Kernel("bad", "x", (("y", text),))


@pytest.mark.parametrize(
    "inputs, output", [("x i", "y"), ("x _raw", "y"), ("x y", "y"), ("x x", "y"), ("x", "exp")]
)
def test_names_cupy_or_the_kernel_uses_itself_are_refused(inputs, output):
    with pytest.raises(ValueError, match="cannot name an input or output"):
        fused.Kernel("bad", inputs, ((output, "x"),))


def test_a_later_output_reads_an_earlier_one_not_a_later_one():
    fused.Kernel("chain", "x", (("y", "x * x"), ("z", "y + x")))
    with pytest.raises(ValueError, match="z is neither"):
        fused.Kernel("chain", "x", (("y", "z + x"), ("z", "x * x")))


def _close(got, want, dtype):
    tolerance = 1e-13 if dtype == "float64" else 2e-6
    numpy.testing.assert_allclose(to_numpy(got), want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_scaled_tanh_kernels_compute_eq_6_and_its_derivatives(dtype, rng):
    backend = resolve("numpy", dtype)
    x, g = rng.normal(size=(4, 6, 6, 3)), rng.normal(size=(4, 6, 6, 3))
    layer, (a, s) = ScaledTanh(), (1.7159, 2 / 3)
    y, cache = layer.forward({}, backend.asarray(x))
    slope = a * s * (1 - numpy.tanh(s * x) ** 2)  # f'(x), from the formula
    _close(y, a * numpy.tanh(s * x), dtype)
    _close(layer.backward({}, cache, backend.asarray(g))[0], slope * g, dtype)
    _close(layer.backward2({}, cache, backend.asarray(g * g))[0], slope**2 * g * g, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_relu_kernel_routes_the_gradient_where_the_output_is_positive(dtype, rng):
    backend = resolve("numpy", dtype)
    x, g = rng.normal(size=(4, 6, 6, 3)), rng.normal(size=(4, 6, 6, 3))
    layer = ReLU()
    _, cache = layer.forward({}, backend.asarray(x))
    numpy.testing.assert_array_equal(
        to_numpy(layer.backward({}, cache, backend.asarray(g))[0]),
        numpy.where(x > 0, g, 0.0).astype(dtype),
    )


@pytest.mark.parametrize("average", [True, False])
def test_the_subsampling_kernels_compute_sec_ii_b(average, rng):
    backend = resolve("numpy", "float64")
    layer = Subsampling(4, average=average, coef_init=None)
    params = layer.init(rng, backend)
    coef, bias = to_numpy(params["coef"]), to_numpy(params["bias"]) + 0.3
    params["bias"] = backend.asarray(bias)
    x = rng.normal(size=(4, 2, 2, 3, 3, 5))  # maps in block order: (C, di, dj, h, w, N)
    g = rng.normal(size=(4, 3, 3, 5))
    a, cache = layer.forward(params, backend.asarray(x))
    q = 0.25 if average else 1.0
    sums = x.sum(axis=(1, 2)) * q
    _close(a, sums * coef[:, None, None, None] + bias[:, None, None, None], "float64")
    dx, grads = layer.backward(params, cache, backend.asarray(g))
    _close(
        dx,
        numpy.broadcast_to((g * coef[:, None, None, None] * q)[:, None, None], x.shape),
        "float64",
    )
    _close(grads["coef"], (g * sums).sum(axis=(1, 2, 3)), "float64")


@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_the_adam_kernel_computes_adamw(decay, rng):
    from lenet5x.optim import Adam

    backend = resolve("numpy", "float64")
    shapes = {"F6.weight": (84, 120), "F6.bias": (84,)}
    params = {k: backend.asarray(rng.normal(size=s)) for k, s in shapes.items()}
    steps = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(3)]
    want = {k: to_numpy(v).copy() for k, v in params.items()}
    m = {k: 0.0 for k in shapes}
    v = {k: 0.0 for k in shapes}
    adam, state, lr, batch = Adam([(None, 0.01)], weight_decay=decay), {}, 0.01, 8
    for t, grads in enumerate(steps, start=1):  # the first step has no moments yet
        params, state = adam.step(
            params, {k: backend.asarray(g) for k, g in grads.items()}, state, batch, 0
        )
        for k, g in grads.items():  # Kingma & Ba, on the mean gradient; decay on weights only
            mean = g / batch
            m[k] = 0.9 * m[k] + 0.1 * mean
            v[k] = 0.999 * v[k] + 0.001 * mean**2
            step = (m[k] / (1 - 0.9**t)) / (numpy.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
            want[k] = want[k] - lr * decay * want[k] * k.endswith("weight") - lr * step
    for k in shapes:
        numpy.testing.assert_allclose(to_numpy(params[k]), want[k], rtol=1e-9, atol=1e-9)


def test_the_sdlm_kernel_takes_eq_21s_rates(rng):
    from lenet5x.optim import SDLM

    backend = resolve("numpy", "float64")
    shapes = {"C1.weight": (6, 1, 5, 5), "C1.bias": (6,)}
    start = {k: rng.normal(size=s) for k, s in shapes.items()}
    h = {k: rng.uniform(0.0, 2.0, size=s) for k, s in shapes.items()}
    grads = {k: rng.normal(size=s) for k, s in shapes.items()}
    sdlm = SDLM([(None, 0.001)])
    state = sdlm.set_curvature({}, {k: backend.asarray(a) for k, a in h.items()}, epoch=0)
    params, _ = sdlm.step(
        {k: backend.asarray(a) for k, a in start.items()},
        {k: backend.asarray(a) for k, a in grads.items()},
        state,
        8,
        0,
    )
    for k in shapes:
        _close(params[k], start[k] - 0.001 / (0.02 + h[k]) * grads[k], "float64")


# -- the C text, compiled by the host's C++ compiler: the same numbers as the Python text ------

CXX = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def _host_program(kernel, ctype: str) -> str:
    """A C++ program that reads each element's inputs from stdin and prints its outputs: the
    kernel's body as CuPy compiles it, with the arrays' type T = ctype (CuPy's typedef) and its
    preamble, on the host instead of the GPU."""
    body = []
    for name, dtype in zip(kernel.inputs, kernel.input_types, strict=True):
        if dtype == "int64":
            body.append(f'long long {name}_in; scanf("%lld", &{name}_in);')
            body.append(f"const long long {name} = {name}_in;")
        else:
            body.append(f'double {name}_in; scanf("%lf", &{name}_in);')
            body.append(f"const T {name} = (T){name}_in;")
    outputs = [out for out, _ in kernel.outputs]
    body += [f"T {out};" for out in outputs]
    body.append(kernel.source() + ";")
    newline = "\\n"
    body += [f'printf("%.17g{newline}", (double){out});' for out in outputs]
    preamble = "\n".join(fused.FUNCTIONS[f][1] for f in kernel.calls)
    loop = "\n        ".join(body)
    return f"""
#include <cmath>
#include <cstdio>
using std::exp; using std::log; using std::sqrt; using std::tanh;
#define __device__
typedef {ctype} T;
{preamble}
int main() {{
    long _count;
    if (scanf("%ld", &_count) != 1) return 1;
    for (long _e = 0; _e < _count; ++_e) {{
        {loop}
    }}
    return 0;
}}
"""


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
@pytest.mark.parametrize("dtype, rtol", [("float32", 4e-6), ("float64", 1e-13)])
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_kernel_text_means_the_same_in_c(kernel, dtype, rtol, rng, tmp_path):
    backend = resolve("numpy", dtype)
    args = _arguments(kernel, backend, rng)
    shape = (6, 5, 7)
    columns = [numpy.broadcast_to(numpy.asarray(a), shape).ravel() for a in args]
    source = tmp_path / "kernel.cpp"
    source.write_text(_host_program(kernel, "float" if dtype == "float32" else "double"))
    program = tmp_path / "kernel"
    subprocess.run([CXX, "-O1", "-o", str(program), str(source)], check=True)
    lines = [str(columns[0].size)]
    for e in range(columns[0].size):
        lines.append(
            " ".join(repr(int(c[e])) if c.dtype.kind == "i" else repr(float(c[e])) for c in columns)
        )
    run = subprocess.run([str(program)], input="\n".join(lines), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = numpy.array(run.stdout.split(), dtype=float).reshape(-1, len(kernel.outputs))
    want = kernel.evaluate(*args)
    want = want if isinstance(want, tuple) else (want,)
    for k, w in enumerate(want):
        numpy.testing.assert_allclose(got[:, k], to_numpy(w).ravel(), rtol=rtol, atol=rtol)


# -- on a GPU: CuPy compiles each text into a kernel equal to the text evaluated --------------


def _arguments(kernel, backend, rng):
    """Random arguments for `kernel`: arrays of one shape, with Python floats for the inputs
    named like constants (a, s, b1, ...), positive where a square root or a division needs it."""
    constants = {
        "a",
        "s",
        "a2",
        "k",
        "q",
        "b1",
        "c1",
        "b2",
        "c2",
        "eps",
        "lrwd",
        "rate",
        "two",
        "j",
    }
    args = []
    for name, dtype in zip(kernel.inputs, kernel.input_types, strict=True):
        if dtype == "int64":
            args.append(backend.asarray(rng.integers(0, 4, size=(6, 5, 7)), dtype=backend.xp.int64))
        elif name in constants and args:  # the first input is always an array
            args.append(float(rng.uniform(0.1, 2.0)))
        else:
            low = 0.1 if name in ("v0", "r", "z", "total") else -2.0  # square roots, divisions
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


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="no CuPy / CUDA device")
def test_with_lenet5x_fused_0_a_kernel_is_its_text_evaluated(monkeypatch, rng):
    backend = resolve("cupy", "float32")
    kernel = fused.Kernel("unused", "x y", (("z", "x * y"),))
    monkeypatch.setattr(fused, "ENABLED", False)
    x = backend.asarray(rng.normal(size=5))
    assert numpy.array_equal(to_numpy(kernel(x, x)), to_numpy(x * x))
    assert kernel._device is None  # never built
