"""Elementwise chains as one GPU kernel: the scaled tanh's passes and the optimizers' updates.

On a GPU a LeNet-5 step is bound by kernel launches, not arithmetic (README, Speed): the scaled
tanh's backward pass is four array operations, so four launches, for one multiply-add's worth of
work per number. A `Kernel` here is such a chain written once, as one expression per output in
the syntax common to Python and C (numbers, names, + - * /, parentheses, tanh and sqrt):

- on CuPy it is one `cupy.ElementwiseKernel` (every name typed T, the arrays' float dtype);
- on every other array it is evaluated as Python with the array namespace's operations. That is
  how the tests run the kernels' own text on NumPy and array-api-strict, through every gradient
  and second-derivative check, with no GPU.

The layers and optimizers call a kernel where `active(x)`: on CuPy arrays (a GPU), and under
`namespace.gpu_paths()` (the tests' GPU paths, benchmarks/op_count.py); elsewhere they keep their
portable, in-place code, which moves less memory on a CPU. Each kernel computes exactly what that
code computes, in the same order. `LENET5X_FUSED=0` in the environment turns the kernels off
(CuPy then runs the portable code, for comparisons). A kernel that CuPy cannot compile warns once
and is evaluated as Python on CuPy instead: correct, not fused.
"""

from __future__ import annotations

import ast
import os
import warnings

from array_api_compat import is_cupy_array

from .namespace import array_namespace, launch_bound

ENABLED = os.environ.get("LENET5X_FUSED", "1") != "0"
_FUNCTIONS = ("tanh", "sqrt")  # the functions a kernel may call, the same name in C and xp


def active(x) -> bool:
    """Whether the elementwise chains on x run as Kernels (module docstring)."""
    return ENABLED and launch_bound(x)


class Kernel:
    """outputs(*inputs) for arrays and Python floats that broadcast together.

    inputs: names, in call order; outputs: (name, expression) in the order computed (a later
    expression may read an earlier output). Returns one array, or a tuple for several outputs.
    """

    def __init__(self, name: str, inputs: str, outputs: tuple[tuple[str, str], ...]):
        self.name, self.inputs, self.outputs = name, tuple(inputs.split()), outputs
        known = set(self.inputs)
        for out, text in outputs:
            _check_common_syntax(text, known, f"kernel {name}, output {out}")
            known.add(out)
        self._python = [
            (out, compile(text, f"<kernel {name}: {out}>", "eval")) for out, text in outputs
        ]
        self._device = None  # the cupy.ElementwiseKernel, made on first use; False if it failed

    def source(self) -> str:
        """The kernel's body as CuPy compiles it."""
        return "; ".join(f"{out} = {text}" for out, text in self.outputs)

    def __call__(self, *args):
        if self._device is not False and is_cupy_array(args[0]):
            try:
                return (self._device or self._build())(*args)
            except _compile_errors() as error:  # evaluated only when something was raised
                self._failed(error)
        return self.evaluate(*args)

    def evaluate(self, *args):
        """The outputs evaluated as Python, each operation one array operation of args[0]'s
        namespace (what the kernel computes, unfused)."""
        xp = array_namespace(args[0])
        scope = {f: getattr(xp, f) for f in _FUNCTIONS}
        scope.update(zip(self.inputs, args, strict=True))
        for out, code in self._python:
            scope[out] = eval(code, {"__builtins__": {}}, scope)
        results = tuple(scope[out] for out, _ in self.outputs)
        return results[0] if len(results) == 1 else results

    def _build(self):
        from .backend import elementwise_kernel

        self._device = elementwise_kernel(
            ", ".join(f"T {name}" for name in self.inputs),
            ", ".join(f"T {out}" for out, _ in self.outputs),
            self.source(),
            f"lenet5x_{self.name}",
        )
        return self._device

    def _failed(self, error):
        warnings.warn(
            f"lenet5x: the fused kernel {self.name} did not compile ({error}); "
            "it runs as separate array operations",
            RuntimeWarning,
            stacklevel=3,
        )
        self._device = False


def _check_common_syntax(text: str, names: set[str], what: str) -> None:
    """Raise ValueError unless `text` means the same in Python and in C: names from `names`,
    + - * / and unary minus, parentheses, and calls of tanh and sqrt. No numbers: in C `1/2` is 0
    and `0.5` a double, which would compute float32 arrays in double; a number is an input
    (T-typed, so cast like the arrays). Python's ** // % and comparisons are not C's."""
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div)
    allowed += (ast.USub, ast.Name, ast.Load, ast.Call)
    for node in ast.walk(ast.parse(text, mode="eval")):
        if isinstance(node, ast.Constant):
            raise ValueError(f"{what}: the number {node.value!r} must be an input")
        if not isinstance(node, allowed):
            raise ValueError(f"{what}: {type(node).__name__} is not in the common syntax")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords
        ):
            raise ValueError(f"{what}: only {' and '.join(_FUNCTIONS)} may be called")
        if isinstance(node, ast.Name) and node.id not in names and node.id not in _FUNCTIONS:
            raise ValueError(f"{what}: {node.id} is neither an input nor an earlier output")


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

# -- trainable subsampling (layers/subsample.py, sec. II-B) ------------------------------------
# forward, from the 2x2 block sums s: t = q s (q = 1/4 where the layer averages), a = coef t + bias
# (t is kept for the backward pass); backward: dx = dy (coef q), spread over each block.
SUBSAMPLING = Kernel("subsampling", "s q c b", (("t", "s * q"), ("a", "t * c + b")))
SUBSAMPLING_BACKWARD = Kernel("subsampling_backward", "g c q", (("dx", "g * (c * q)"),))

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
