"""Backend resolver: a name -> array namespace, device and compute dtype.

    numpy             NumPy on the CPU (array_api_compat.numpy)
    cupy              CuPy on a CUDA GPU (the `cuda12` / `cuda13` extras)
    torch             PyTorch tensors as plain arrays (no autograd): CPU, CUDA or Apple's MPS
                      (the `torch` extra); `device` picks one, default the best available
    jax               JAX arrays on whatever device JAX finds, CPU or GPU (the `jax` extra)
    auto              CuPy when it imports and a CUDA device answers, else NumPy
    array_api_strict  the standard's reference namespace (for tests)

This is the only module that imports CuPy, PyTorch or JAX. Everything else computes through the
namespace returned here (``xp``), so the same layer code runs on every one of them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any

import numpy

from .errors import UserError

BACKENDS = ("auto", "numpy", "cupy", "torch", "jax", "array_api_strict")
CUPY_HINT = (
    "install the CUDA extra that matches your driver, e.g. pip install 'lenet5x[cuda12]' "
    "(or [cuda13]), or use --backend numpy"
)


class BackendError(UserError):
    """A backend was asked for that cannot be used here; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """An array namespace, the device to allocate on, and the dtype to compute in."""

    name: str  # one of BACKENDS but "auto"
    xp: Any  # array-API namespace
    device: Any
    dtype: Any
    note: str = ""  # how "auto" decided, for the user

    def asarray(self, host_array, dtype=None) -> Any:
        """Move a host (NumPy) array to this backend's device, in `dtype` (default: the compute dtype)."""
        return self.xp.asarray(
            host_array, dtype=self.dtype if dtype is None else dtype, device=self.device
        )

    def to_numpy(self, x) -> numpy.ndarray:
        """Copy an array of this backend back to a host NumPy array."""
        return to_numpy(x)

    def synchronize(self, *arrays) -> None:
        """Wait for queued device work (and, on JAX, for `arrays`); used only around timings."""
        if self.name == "cupy":
            import cupy

            cupy.cuda.get_current_stream().synchronize()
        elif self.name == "torch" and self.device.type in ("cuda", "mps"):
            import torch

            getattr(torch, self.device.type).synchronize()
        elif self.name == "jax" and arrays:
            import jax

            jax.block_until_ready(arrays)


def describe_device(backend: Backend) -> str:
    """A short description of what computes: the GPU's name, or the CPU model and core count."""
    if backend.name == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(backend.device.id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    if backend.name == "torch" and backend.device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(backend.device)
    if backend.name == "torch" and backend.device.type == "mps":
        return "Apple GPU (MPS)"
    if backend.name == "jax" and backend.device.platform != "cpu":
        return f"{backend.device.device_kind} ({backend.device.platform})"
    return describe_cpu()


def describe_cpu() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores"


def to_numpy(x) -> numpy.ndarray:
    """Any supported array (NumPy, CuPy, PyTorch, JAX, array-api-strict on any device) -> a
    writable NumPy array."""
    module = type(x).__module__
    if module.startswith("cupy"):
        return x.get()
    if module.startswith("torch"):
        return x.detach().cpu().numpy()
    if module.startswith("jax"):
        return numpy.array(x)  # numpy.asarray would be a read-only view
    if module.startswith("array_api_strict"):
        import array_api_strict

        return numpy.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    return numpy.asarray(x)


def _cupy_or_error():
    try:
        import cupy
    except ImportError as error:
        raise BackendError(f"CuPy is not installed ({error}); {CUPY_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError, driver missing, ...
        raise BackendError(
            f"CuPy is installed but no CUDA device answers ({error}); {CUPY_HINT}"
        ) from None
    if count < 1:
        raise BackendError(f"CuPy is installed but no CUDA device is visible; {CUPY_HINT}")
    return cupy


def _torch(device):
    """(array_api_compat.torch, a torch.device): `device` "cpu", "cuda", "cuda:1" or "mps", or
    None for the best available (CUDA, then MPS, then the CPU)."""
    try:
        import array_api_compat.torch as xp
        import torch
    except ImportError as error:
        raise BackendError(
            f"PyTorch is not installed ({error}); pip install 'lenet5x[torch]' (for a CPU-only "
            "build: pip install torch --index-url https://download.pytorch.org/whl/cpu), or use "
            "--backend numpy"
        ) from None
    if device is None:
        mps = getattr(torch.backends, "mps", None)
        device = (
            "cuda" if torch.cuda.is_available() else "mps" if mps and mps.is_available() else "cpu"
        )
    try:
        device = torch.zeros(1, device=torch.device(device)).device  # "cuda" -> "cuda:0"
    except (RuntimeError, AssertionError, TypeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BackendError(
            f"PyTorch cannot use the device {device!s} ({message}); pass --device cpu, cuda or mps"
        ) from None
    return xp, device


def _jax(device):
    """(jax.numpy, a jax Device): `device` "cpu" or "gpu", or None for JAX's default. float64
    and int64 (the index tables) need JAX's 64-bit mode, which is switched on here, and float32
    products full float32 precision."""
    try:
        import jax
        import jax.numpy as xp
    except ImportError as error:
        raise BackendError(
            f"JAX is not installed ({error}); pip install 'lenet5x[jax]', or use --backend numpy"
        ) from None
    jax.config.update("jax_enable_x64", True)
    # float32 products in float32, as on the other backends (on GPUs XLA's default is TF32)
    jax.config.update("jax_default_matmul_precision", "highest")
    try:
        return xp, jax.devices(device)[0] if device else jax.devices()[0]
    except RuntimeError as error:
        message = str(error).splitlines()[0]
        raise BackendError(f"JAX has no {device} device ({message}); pass --device cpu") from None


def resolve(name: str = "auto", dtype: str = "float32", device: Any = None) -> Backend:
    """Return the Backend for `name` (one of BACKENDS).

    dtype: "float32" or "float64". device: for torch "cpu", "cuda", "mps" (default: the best
    available), for jax "cpu" or "gpu", for array_api_strict a Device (tests); others ignore it.
    Raises BackendError with a one-line, actionable message.
    """
    if dtype not in ("float32", "float64"):
        raise BackendError(f"unknown dtype {dtype!r}: use float32 or float64")
    note = ""
    if name == "auto":
        try:
            _cupy_or_error()
            name, note = "cupy", "auto: CuPy found a CUDA device, using cupy"
        except BackendError as error:
            name, note = "numpy", f"auto: using numpy ({str(error).split(';')[0]})"
    if name == "numpy":
        import array_api_compat.numpy as xp

        device = "cpu"
    elif name == "cupy":
        cupy = _cupy_or_error()
        import array_api_compat.cupy as xp

        device = cupy.cuda.Device(0)
    elif name == "torch":
        xp, device = _torch(device)
    elif name == "jax":
        xp, device = _jax(device)
    elif name == "array_api_strict":
        import array_api_strict as xp

        device = xp.Device("CPU_DEVICE") if device is None else device
    else:
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return Backend(name=name, xp=xp, device=device, dtype=getattr(xp, dtype), note=note)


def compile_function(function, backend: Backend, carry: int = 0):
    """The whole `function` compiled for `backend`: jax.jit (traced once per shape and compiled by
    XLA), or on PyTorch's CUDA a CUDA graph replayed (GraphedFunction). Its first `carry`
    results are fed back as its first `carry` arguments on the next call (the parameters and the
    optimizer's arrays): a CUDA graph keeps them where they are instead of copying them in."""
    if backend.name == "jax":
        import jax

        return jax.jit(function)
    if backend.name == "torch" and backend.device.type == "cuda":
        return GraphedFunction(function, carry)
    raise BackendError(
        f"train.compile is offered on jax and on torch with a CUDA device, not {backend.name} on "
        f"{backend.device}"
    )


class GraphedFunction:
    """function(*args) replayed from a CUDA graph (torch.cuda.graphs), captured once per shape.

    Arguments are nests of dicts, tuples and lists of CUDA tensors, Python floats and other values;
    results, of CUDA tensors. A float argument becomes a 0-d float64 tensor of the graph, refilled
    each call, so a changing rate does not capture again; another value (None, an int) and any
    change of structure, shape or dtype captures anew. Each call copies into the graph the tensors it has not
    seen at the same place before (the batch's indices; not the data set, passed again as the same
    tensors), replays the graph, and returns the results as views of fresh tensors (one per dtype)
    that the next replay does not overwrite. The first `carry` results are copied, inside the
    graph, to where the first `carry` arguments live: passed back next call, they need no copy.
    The host never waits for the device.
    """

    def __init__(self, function, carry: int = 0) -> None:
        self.function, self.carry, self.graphs = function, carry, {}

    def __call__(self, *args):
        from torch.utils import _pytree as pytree

        leaves, spec = pytree.tree_flatten(args)
        key = (spec, tuple(_signature(x) for x in leaves))
        if key not in self.graphs:
            self.graphs[key] = self._capture(args, leaves, spec)
        g = self.graphs[key]
        for i, x in enumerate(leaves):
            if isinstance(x, float):
                g["inputs"][i].fill_(x)
            elif _is_tensor(x) and x is not g["seen"][i]:
                g["inputs"][i].copy_(x)
        g["graph"].replay()
        flats = {dtype: flat.clone() for dtype, flat in g["flats"].items()}
        results = [flats[dtype][a:b].view(shape) for dtype, a, b, shape in g["slices"]]
        g["seen"] = list(leaves)
        for i, position in g["fed_back"]:  # those arguments of the graph now hold these results
            g["seen"][position] = results[i]
        return pytree.tree_unflatten(results, g["out_spec"])

    def _capture(self, args, leaves, spec) -> dict:
        import torch
        from torch.utils import _pytree as pytree

        device = next(x.device for x in leaves if _is_tensor(x))
        inputs = [
            x.clone()
            if _is_tensor(x)
            else torch.tensor(x, dtype=torch.float64, device=device)
            if isinstance(x, float)
            else x
            for x in leaves
        ]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: lazy initialisations stay out of the graph
            for _ in range(2):
                self.function(*pytree.tree_unflatten(inputs, spec))
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.function(*pytree.tree_unflatten(inputs, spec))
            results, out_spec = pytree.tree_flatten(out)
            dtypes = list(dict.fromkeys(r.dtype for r in results))
            flats = {d: torch.cat([r.reshape(-1) for r in results if r.dtype == d]) for d in dtypes}
            fed_back = _fed_back(args, out, self.carry)
            for i, position in fed_back:
                inputs[position].copy_(results[i])
        slices, starts = [], dict.fromkeys(dtypes, 0)
        for r in results:
            a = starts[r.dtype]
            starts[r.dtype] = a + r.numel()
            slices.append((r.dtype, a, a + r.numel(), tuple(r.shape)))
        return {
            "graph": graph,
            "inputs": inputs,
            "flats": flats,
            "slices": slices,
            "out_spec": out_spec,
            "fed_back": fed_back,
            "seen": [None] * len(leaves),
        }


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch")


def _signature(x) -> tuple:
    """What a captured graph depends on: a tensor's shape, dtype and device; that a float is a
    float; any other value itself."""
    if _is_tensor(x):
        return ("tensor", tuple(x.shape), str(x.dtype), str(x.device))
    return ("float",) if isinstance(x, float) else ("value", x)


def _fed_back(args, out, carry: int) -> list[tuple[int, int]]:
    """[(result leaf, argument leaf), ...]: the leaves of results 0..carry-1 and of the arguments
    they are passed back as, where the two have one structure (Adam's first step has no moments
    yet: nothing of those is carried)."""
    from torch.utils import _pytree as pytree

    pairs = []
    for n in range(carry):
        (leaves, a_spec), o_spec = pytree.tree_flatten(args[n]), pytree.tree_flatten(out[n])[1]
        if a_spec == o_spec:
            a0, o0 = len(pytree.tree_leaves(args[:n])), len(pytree.tree_leaves(out[:n]))
            pairs += [(o0 + j, a0 + j) for j in range(len(leaves))]
    return pairs


def elementwise_kernel(inputs: str, outputs: str, body: str, name: str, preamble: str = ""):
    """A cupy.ElementwiseKernel (lenet5x/fused.py): inputs and outputs as "T x, int64 y", body
    the C statements, preamble the C++ definitions they use. CuPy compiles it on its first call;
    that call raises what kernel_compile_errors() names if the code does not compile."""
    import cupy

    return cupy.ElementwiseKernel(inputs, outputs, body, name, preamble=preamble)


def kernel_compile_errors() -> tuple[type, ...]:
    """What CuPy raises when NVRTC cannot compile a kernel's source."""
    from cupy.cuda.compiler import CompileException

    return (CompileException,)


def elementwise_kernel_cubin(
    inputs: str,
    outputs: str,
    body: str,
    name: str,
    preamble: str,
    dtype: str,
    scalars: bool,
    arch: str,
) -> bytes:
    """Compile, with NVRTC and no GPU, what CuPy compiles on the first call of
    elementwise_kernel(inputs, outputs, body, name, preamble) on a device of compute capability
    `arch` ("90": H100/H200), for T = dtype, every argument a contiguous array or (scalars) every
    input but the first a scalar. Returns the cubin; raises what kernel_compile_errors() names.

    The source is CuPy's own: its generator (cupy._core._kernel), headers and options (those of
    core.compile_with_cache and compiler._compile_with_cache_cuda), the architecture given instead
    of asked of a device. Private CuPy functions: a CuPy that changes them fails here, loudly."""
    import cupy
    from cupy._core import _kernel, core
    from cupy.cuda import compiler

    kernel = cupy.ElementwiseKernel(inputs, outputs, body, name, preamble=preamble)
    t = numpy.dtype(dtype)
    in_types = tuple(p.dtype if p.dtype is not None else t for p in kernel.in_params)
    out_types = tuple(p.dtype if p.dtype is not None else t for p in kernel.out_params)
    _, _, type_map = _kernel._decide_params_type(
        kernel.in_params, kernel.out_params, in_types, out_types
    )
    ndarray, indexer, scalar = 1, 2, 3  # cupy/_core/_kernel.pxd: _ArgKind
    infos = [
        _kernel._ArgInfo(scalar, cupy._core._scalar.CScalar, numpy.dtype(d), 0, True, True)
        if scalars and 0 < i < len(in_types)
        else _kernel._ArgInfo(ndarray, cupy.ndarray, numpy.dtype(d), 1, True, True)
        for i, d in enumerate(in_types + out_types)
    ]
    infos.append(_kernel._ArgInfo(indexer, cupy._core._carray.Indexer, None, 1, True, True))
    code = _kernel._get_elementwise_kernel_code(
        tuple(infos), type_map, kernel.params, kernel.operation, name, preamble
    )
    source = "".join(f"#include <{h}>\n" for h in core._cupy_header_list) + code
    options = core.assemble_cupy_compiler_options(())
    options += ("-ftz=true", f"-arch=sm_{arch}", "--device-as-default-execution-space")
    program = compiler._NVRTCProgram(source, f"{name}.cu", method="cubin")
    return program.compile(options)[0]


def keep_freed_host_memory() -> None:
    """Ask glibc's malloc to keep large freed blocks instead of returning them to the OS.

    A training step allocates the same large temporaries every time; by default glibc unmaps them
    on free and the next step pays page faults to get them back (docs/speed.md).
    This only changes the allocator's thresholds; elsewhere than glibc it does nothing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value on 64-bit
    mallopt(m_trim_threshold, 1 << 30)
    mallopt(m_top_pad, 64 << 20)
