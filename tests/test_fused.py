"""Fused kernels (lenet5x/fused.py): their text means the same in Python and C, and computes
exactly what the CPU paths compute; on a GPU, CuPy's compiled kernel equals the text. (The
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
from lenet5x.namespace import gpu_paths

KERNELS = [k for k in vars(fused).values() if isinstance(k, fused.Kernel)]


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


def _both_paths(run):
    """run() on NumPy's CPU paths, then on its GPU paths (namespace.gpu_paths), where the layers
    call the kernels and the kernels' text is evaluated: both results."""
    with gpu_paths(False):
        portable = run()
    with gpu_paths(True):
        return portable, run()


def _assert_same_numbers(portable, kernel):
    for a, b in zip(portable, kernel, strict=True):
        if a is None:
            assert b is None
            continue
        assert numpy.array_equal(to_numpy(a), to_numpy(b))  # same operations, same order


@pytest.mark.parametrize("layer", [ReLU(), ScaledTanh()], ids=["relu", "scaled_tanh"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activation_kernels_give_the_portable_numbers(layer, dtype, rng):
    backend = resolve("numpy", dtype)
    x, g = (backend.asarray(rng.normal(size=(4, 6, 6, 3))) for _ in range(2))

    def run():
        y, cache = layer.forward({}, x)
        return y, layer.backward({}, cache, g)[0], layer.backward2({}, cache, g * g)[0]

    _assert_same_numbers(*_both_paths(run))


@pytest.mark.parametrize("average", [True, False])
def test_subsampling_kernels_give_the_portable_numbers(average, rng):
    # maps in block order: their 2x2 sums are one reduction on both paths (subsample.sum_2x2)
    backend = resolve("numpy", "float32")
    layer = Subsampling(4, average=average)
    params = layer.init(rng, backend)
    x = backend.asarray(rng.normal(size=(4, 2, 2, 3, 3, 5)))
    g = backend.asarray(rng.normal(size=(4, 3, 3, 5)))

    def run():
        a, cache = layer.forward(params, x)
        dx, grads = layer.backward(params, cache, g)
        return a, cache[0], dx, grads["coef"], grads["bias"]

    _assert_same_numbers(*_both_paths(run))


@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_adam_kernel_gives_the_portable_numbers(decay, rng):
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

    _assert_same_numbers(*_both_paths(run))


def test_sdlm_kernel_gives_the_portable_numbers(rng):
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

    _assert_same_numbers(*_both_paths(run))


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
