"""Elementwise chains as one GPU kernel: activations' passes, criteria, optimizer updates.

On a GPU a LeNet-5 step is bound by kernel launches, not arithmetic (docs/speed.md): the scaled
tanh's backward pass is four array operations, so four launches, for one multiply-add's worth of
work per number. A `Kernel` here is such a chain written once, as one expression per output in
the syntax common to Python and C (names, + - * /, parentheses and the calls in FUNCTIONS):

- on CuPy it is one `cupy.ElementwiseKernel` (every input typed T, the arrays' float dtype,
  unless it names its own: "first:int64");
- on every other array, and on CuPy with LENET5X_FUSED=0 in the environment, it is evaluated as
  Python: each operation one array operation of the namespace. That is how the tests run the
  kernels' own text on NumPy and array-api-strict, through every gradient and second-derivative
  check, with no GPU.

The layers, the criteria and the optimizers call their kernels on every backend: one code path.
A kernel that CuPy cannot compile warns once and is evaluated as Python on CuPy instead:
correct, not fused.
"""

from __future__ import annotations

import ast
import os
import warnings
from typing import Any

from array_api_compat import is_cupy_array

from .arrays import array_namespace

ENABLED = os.environ.get("LENET5X_FUSED", "1") != "0"

# The calls a kernel may make: name -> (the Python function, given the namespace; its C++
# definition for the kernel, "" where CUDA has it).
FUNCTIONS = {
    "tanh": (lambda xp: xp.tanh, ""),
    "sqrt": (lambda xp: xp.sqrt, ""),
    "exp": (lambda xp: xp.exp, ""),
    "log": (lambda xp: xp.log, ""),
    "where_positive": (  # g where y > 0, else 0: ReLU's gradient routed by its output y
        lambda xp: lambda y, g: xp.where(y > 0, g, 0.0),
        "template <typename F> __device__ F where_positive(F y, F g)"
        " { return y > F(0) ? g : F(0); }",
    ),
    "where_equal": (  # g where the integers a and b are equal, else 0: a max pooling's routing
        lambda xp: lambda a, b, g: xp.where(a == b, g, 0.0),
        "template <typename I, typename F> __device__ F where_equal(I a, I b, F g)"
        " { return a == b ? g : F(0); }",
    ),
}


class Kernel:
    """outputs(*inputs) for arrays and Python floats that broadcast together.

    inputs: names in call order, each "name" (typed T) or "name:dtype" (e.g. "first:int64"),
    the first always given an array (it decides the backend);
    outputs: (name, expression) in the order computed (a later expression may read an earlier
    output). Returns one array, or a tuple for several outputs.
    """

    def __init__(self, name: str, inputs: str, outputs: tuple[tuple[str, str], ...]) -> None:
        self.name, self.outputs = name, outputs
        specs = [spec.partition(":") for spec in inputs.split()]
        self.inputs = tuple(n for n, _, _ in specs)
        self.input_types = tuple(t or "T" for _, _, t in specs)
        names = self.inputs + tuple(out for out, _ in outputs)
        for n in names:  # CuPy's own: the loop index i, the size n, names that start with _
            if n in ("i", "n") or n.startswith("_") or names.count(n) > 1 or n in FUNCTIONS:
                raise ValueError(f"kernel {name}: {n!r} cannot name an input or output")
        known, calls = set(self.inputs), set()
        for out, text in outputs:
            calls |= _check_common_syntax(text, known, f"kernel {name}, output {out}")
            known.add(out)
        self.calls = tuple(sorted(calls))
        # the text as one Python function of the inputs and the functions it calls, made once:
        # lambda x, a, s, tanh: ((y := a * tanh(s * x)),)
        parameters = ", ".join(self.inputs + self.calls)
        body = "".join(f"({out} := {text}), " for out, text in outputs)
        code = compile(f"lambda {parameters}: ({body})", f"<kernel {name}>", "eval")
        # no builtins but __import__, which C code reaches through the running frame's builtins
        # (PyTorch imports modules from C++ under a dispatch mode, a lazy CUDA start, ...)
        self._python = eval(code, {"__builtins__": {"__import__": __import__}})
        self._functions: dict = {}  # namespace -> the functions the text calls, in it
        self._device = None  # the cupy.ElementwiseKernel, made on first use; False if it failed

    def source(self) -> str:
        """The kernel's body as CuPy compiles it."""
        return "; ".join(f"{out} = {text}" for out, text in self.outputs)

    def __call__(self, *args):
        if ENABLED and self._device is not False and is_cupy_array(args[0]):
            try:
                return (self._device or self._build())(*args)
            except _compile_errors() as error:  # evaluated only when something was raised
                self._failed(error)
        return self.evaluate(*args)

    def evaluate(self, *args) -> Any:
        """The outputs evaluated as Python, each operation one array operation of args[0]'s
        namespace (what the kernel computes, unfused)."""
        xp = array_namespace(args[0])
        functions = self._functions.get(xp)
        if functions is None:
            functions = self._functions[xp] = tuple(FUNCTIONS[f][0](xp) for f in self.calls)
        results = self._python(*args, *functions)
        return results[0] if len(results) == 1 else results

    def cubin(self, arch: str, dtype: str, scalars: bool = False) -> bytes:
        """The kernel compiled by NVRTC for a GPU of compute capability `arch` ("90"), with no
        GPU: what CuPy compiles on its first call there with T = dtype, every argument an array
        or (scalars) every input but the first a number (backend.elementwise_kernel_cubin)."""
        from .backend import elementwise_kernel_cubin

        return elementwise_kernel_cubin(*self._cupy_arguments(), dtype, scalars, arch)

    def _cupy_arguments(self) -> tuple[str, str, str, str, str]:
        """inputs, outputs, body, name and preamble of the cupy.ElementwiseKernel."""
        return (
            ", ".join(f"{t} {n}" for t, n in zip(self.input_types, self.inputs, strict=True)),
            ", ".join(f"T {out}" for out, _ in self.outputs),
            self.source(),
            f"lenet5x_{self.name}",
            "\n".join(FUNCTIONS[f][1] for f in self.calls if FUNCTIONS[f][1]),
        )

    def _build(self):
        from .backend import elementwise_kernel

        self._device = elementwise_kernel(*self._cupy_arguments())
        return self._device

    def _failed(self, error) -> None:
        warnings.warn(
            f"lenet5x: the fused kernel {self.name} did not compile ({error}); "
            "it runs as separate array operations",
            RuntimeWarning,
            stacklevel=3,
        )
        self._device = False


def _check_common_syntax(text: str, names: set[str], what: str) -> set[str]:
    """The FUNCTIONS `text` calls; ValueError unless it means the same in Python and in C: names
    from `names`, + - * / and unary minus, parentheses, calls of FUNCTIONS. No numbers: in C
    `1/2` is 0 and `0.5` a double, which would compute float32 arrays in double; a number is an
    input (T-typed, so cast like the arrays). Python's ** // % and comparisons are not C's."""
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div)
    allowed += (ast.USub, ast.Name, ast.Load, ast.Call)
    calls = set()
    for node in ast.walk(ast.parse(text, mode="eval")):
        if isinstance(node, ast.Constant):
            raise ValueError(f"{what}: the number {node.value!r} must be an input")
        if not isinstance(node, allowed):
            raise ValueError(f"{what}: {type(node).__name__} is not in the common syntax")
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise ValueError(f"{what}: only {', '.join(FUNCTIONS)} may be called")
            if node.keywords:
                raise ValueError(f"{what}: no keyword arguments")
            calls.add(node.func.id)
        elif isinstance(node, ast.Name) and node.id not in names and node.id not in FUNCTIONS:
            raise ValueError(f"{what}: {node.id} is neither an input nor an earlier output")
    return calls


def _compile_errors() -> tuple[type, ...]:
    from .backend import kernel_compile_errors

    return kernel_compile_errors()


# -- the scaled tanh, f(a) = A tanh(S a) (layers/activation.py) --------------------------------
# forward: y = A tanh(S x); backward: dx = (y^2 - A^2) (-S/A) dy = f'(a) dy; second-derivative
# pass: f'(a)^2 d2y (eq. 27).
SCALED_TANH = Kernel("scaled_tanh", "x a s", (("y", "a * tanh(s * x)"),))
SCALED_TANH_BACKWARD = Kernel("scaled_tanh_backward", "y g a2 k", (("dx", "(y * y - a2) * k * g"),))
SCALED_TANH_BACKWARD2 = Kernel(
    "scaled_tanh_backward2", "y g a2 k", (("dx", "(y * y - a2) * k * ((y * y - a2) * k) * g"),)
)

# -- ReLU (layers/activation.py) and a max pooling's routing (layers/convpool.py) ---------------
# dx = g where the output y > 0, else 0; da = g on the place `first` of each block's maximum.
RELU_BACKWARD = Kernel("relu_backward", "y g", (("dx", "where_positive(y, g)"),))
MAX_POOL_ROUTE = Kernel(
    "max_pool_route", "first:int64 places:int64 g", (("da", "where_equal(first, places, g)"),)
)

# -- trainable subsampling (layers/subsample.py, sec. II-B) ------------------------------------
# forward, from the 2x2 block sums s: t = q s (q = 1/4 where the layer averages), a = coef t + bias
# (t is kept for the backward pass); backward: dx = dy (coef q), spread over each block.
SUBSAMPLING = Kernel("subsampling", "s q c b", (("t", "s * q"), ("a", "t * c + b")))
SUBSAMPLING_BACKWARD = Kernel("subsampling_backward", "g c q", (("dx", "g * (c * q)"),))

# -- the RBF output (layers/rbf.py, eq. 7), on every backend: the same operations as unfused code
# y_i = |x - w_i|^2 = -2 w_i . x + |x|^2 + |w_i|^2 from the three terms; dx = x (2 sum_i dy_i)
# + (-2 w^T dy).
# (m = w x, c = -2; wt = w^T dy, c = -2; a power of two, so c * m is exact)
RBF_DISTANCES = Kernel("rbf_distances", "m c q w2", (("y", "c * m + q + w2"),))
RBF_BACKWARD = Kernel("rbf_backward", "x s two c wt", (("dx", "x * (two * s) + c * wt"),))

# -- the criteria (losses.py), on every backend: the same operations as unfused code -------------
# softmax cross-entropy: s = o - max, e = exp(s), z = sum e; dE/do = e / z - onehot
SHIFTED_EXP = Kernel("shifted_exp", "o top", (("s", "o - top"), ("e", "exp(s)")))
SOFTMAX_GRADIENT = Kernel("softmax_gradient", "e z t", (("d", "e / z - t"),))
# MAP (eq. 9), exponents shifted by shift = min(min_i y_i, j) <= every y_i and j:
# e_i = e^{shift - y_i}, z = sum_i e_i + e^{shift - j}, log(e^-j + sum_i e^-y_i) = log z - shift,
# dE/dy = onehot - e / z
MAP_EXP = Kernel("map_exp", "o shift", (("e", "exp(shift - o)"),))
MAP_NORMALIZER = Kernel(
    "map_normalizer",
    "total shift j",
    (("z", "total + exp(shift - j)"), ("log_z", "log(z) - shift")),
)
MAP_GRADIENT = Kernel("map_gradient", "e z t", (("d", "t - e / z"),))

# -- optimizer updates on flat vectors (optim.py) ----------------------------------------------
# SDLM (eq. 18 with eq. 21's rates): w <- w - eps_k g_k.
SDLM_UPDATE = Kernel("sdlm_update", "p0 r g", (("p", "p0 - r * g"),))
# Adam(W): the moments from the summed gradient g (c1 = (1 - b1)/B, c2 = (1 - b2)/B^2), the step
# with the bias corrections k = 1/sqrt(1 - b2^t) and rate = lr/(1 - b1^t), decoupled weight
# decay lrwd = lr * weight_decay on the weights (mask 1) only.
ADAM_UPDATE = Kernel(
    "adam_update",
    "g m0 v0 p0 mask b1 c1 b2 c2 k eps lrwd rate",
    (
        ("m", "b1 * m0 + c1 * g"),
        ("v", "b2 * v0 + c2 * (g * g)"),
        ("p", "p0 - lrwd * (p0 * mask) - rate * (m / (sqrt(v) * k + eps))"),
    ),
)

KERNELS = tuple(k for k in tuple(globals().values()) if isinstance(k, Kernel))


def compile_all(arch: str = "90") -> int:
    """Compile every kernel of KERNELS with NVRTC for compute capability `arch` (90: H100/H200),
    with no GPU, for float32 and float64, every input an array and every input but the first a
    number. Returns the number compiled; raises the first compile error (CuPy's
    CompileException, with NVRTC's log). tests/test_nvrtc.py runs it in CI, and
    docker/build_images.sh in the built CUDA image."""
    count = 0
    for kernel in KERNELS:
        for dtype in ("float32", "float64"):
            for scalars in (False, True):
                kernel.cubin(arch, dtype, scalars)
                count += 1
    return count
