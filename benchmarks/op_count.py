"""Array operations per training step, counted: what bounds the step on a GPU, measured on a CPU.

    python benchmarks/op_count.py [--batch 256] [--by-file]

On a GPU a small network's step is bound by the host, not the device: every array operation is
a Python call into CuPy, and every one that computes is a kernel launch (docs/speed.md). So the
count of operations per step is a figure that needs no GPU: this script runs one training step
as a GPU would (one shard, and the paths chosen for a GPU where the code chooses by cost) on
array-api-strict, where every operation is a Python call, and counts the calls the lenet5x code
makes into the array library:

    kernels:    operations that compute or write memory: elementwise, reductions, matmul,
                creation (zeros), copies (stack, concat, astype, a reshape that copies),
                in-place operators and item assignment. Each is at least one CuPy kernel launch.
                A fused kernel (lenet5x/fused.py) counts once: on a GPU it is one launch.
    views:      operations that return a view of an input (slices, a reshape that does not copy,
                permute_dims, broadcast_to): no kernel, but still a Python call each.

Metadata (shape, dtype, device) is not counted. A batch of synthetic images stands in for MNIST:
the count does not depend on the pixels.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from markdown_block import written_to  # noqa: E402  (scripts beside this one)
from step_profile import make_step  # noqa: E402

METADATA = {"shape", "dtype", "device", "ndim", "size", "__array_namespace__"}
GENERIC = {"func": "(elementwise)", "wrapper": "(elementwise)"}  # array-api-strict's wrapper names


class OperationCounter:
    """A sys.setprofile hook counting calls from outside array_api_strict into it."""

    def __init__(self):
        import array_api_compat
        import array_api_strict

        self.strict = os.path.dirname(array_api_strict.__file__)
        self.library = (self.strict, os.path.dirname(array_api_compat.__file__))
        self.array_type = type(array_api_strict.asarray(0.0))
        from lenet5x.fused import Kernel

        self.kernel_call = Kernel.__call__.__code__
        self._in_kernel = 0  # depth of Kernel calls the profiler is in
        self.kernels: collections.Counter = collections.Counter()  # (caller file, op) -> n
        self.views: collections.Counter = collections.Counter()
        self._arguments: dict[int, tuple[list, str]] = {}

    def __call__(self, frame, event, arg):
        code = frame.f_code
        if code is self.kernel_call:  # a fused kernel (lenet5x/fused.py): one launch on a GPU
            if event == "call":
                where = os.path.basename(frame.f_back.f_code.co_filename)
                self.kernels[(where, f"kernel {frame.f_locals['self'].name}")] += 1
                self._in_kernel += 1
            elif event == "return":
                self._in_kernel -= 1
            return
        if self._in_kernel or not code.co_filename.startswith(self.strict):
            return  # not an array operation, or one of a kernel's, evaluated on the CPU
        if code.co_name in METADATA:
            return
        caller = frame.f_back
        if caller is None or caller.f_code.co_filename.startswith(self.library):
            return
        if event == "call":
            inputs = [v for v in frame.f_locals.values() if isinstance(v, self.array_type)]
            self._arguments[id(frame)] = (inputs, os.path.basename(caller.f_code.co_filename))
        elif event == "return" and id(frame) in self._arguments:
            inputs, where = self._arguments.pop(id(frame))
            name = GENERIC.get(code.co_name, code.co_name)
            if not inputs and not isinstance(arg, self.array_type):
                return  # about dtypes or devices, not arrays
            if self._is_view(name, inputs, arg):
                self.views[(where, name)] += 1
            else:
                self.kernels[(where, name)] += 1

    def _is_view(self, name: str, inputs: list, result) -> bool:
        if name == "__setitem__" or (name.startswith("__i") and name != "__int__"):
            return False  # writes memory
        if not isinstance(result, self.array_type):
            return False  # a result that is not one array (a tuple of arrays) was computed
        out = result._array
        return any(numpy.shares_memory(out, x._array) for x in inputs)


def one_step(architecture: str, batch: int):
    """A training step closure on array-api-strict: one shard of `batch` synthetic images, as
    benchmarks/step_profile.py builds it, run once (the first step builds what later steps
    reuse: masks, index tables, the optimizer's state)."""
    from lenet5x.backend import resolve

    run, *_ = make_step(architecture, resolve("array_api_strict", "float32"), batch)
    run()
    return run


def count(architecture: str, batch: int) -> OperationCounter:
    from lenet5x.arrays import gpu_paths

    counter = OperationCounter()
    with gpu_paths():
        run = one_step(architecture, batch)
        sys.setprofile(counter)
        try:
            run()
        finally:
            sys.setprofile(None)
    return counter


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256, help="images in the one shard")
    parser.add_argument("--models", default="classic,modern")
    parser.add_argument("--by-file", action="store_true", help="also break the counts down by file")
    parser.add_argument(
        "--write", metavar="FILE", help="also put the table into FILE (docs/speed.md)"
    )
    args = parser.parse_args()
    counters = {m: count(m, args.batch) for m in args.models.split(",")}
    with written_to(args.write, "op-count-table"):
        table(counters, args)


def table(counters: dict, args) -> None:
    print(
        f"Array operations per training step (batch {args.batch}, one shard, GPU paths, "
        "array-api-strict):"
    )
    print("| model | kernels | views | all calls |")
    print("|---|---:|---:|---:|")
    for model, c in counters.items():
        k, v = sum(c.kernels.values()), sum(c.views.values())
        print(f"| {model} | {k} | {v} | {k + v} |")
    if args.by_file:
        for model, c in counters.items():
            print(f"\n{model}, by the file that calls:")
            print("| file | kernels | views | top kernels |")
            print("|---|---:|---:|---|")
            files = collections.Counter()
            for (where, _), n in c.kernels.items():
                files[where] += n
            for where, _ in c.views:
                files[where] += 0
            for where, n in sorted(files.items(), key=lambda kv: -kv[1]):
                views = sum(m for (w, _), m in c.views.items() if w == where)
                top = sorted(
                    ((m, op) for (w, op), m in c.kernels.items() if w == where), reverse=True
                )
                ops = ", ".join(f"{op} {m}" for m, op in top[:4])
                print(f"| {where} | {n} | {views} | {ops} |")


if __name__ == "__main__":
    main()
