"""What one array operation costs before it computes anything, per library: the floor under a
training step that is a few hundred small operations (benchmarks/op_count.py counts them).

    python benchmarks/dispatch.py

Times `a + b` and `tanh(a)` on 1,000 float32 numbers through each namespace lenet5x uses (NumPy,
PyTorch through array-api-compat, JAX eager, and 20 operations compiled by jax.jit), the median
of many calls, and prints a table.
"""

from __future__ import annotations

import statistics
import time

import numpy


def per_call(function, repeat: int = 2000, rounds: int = 7) -> float:
    """Median seconds per call of function()."""
    function()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(repeat):
            function()
        times.append((time.perf_counter() - t0) / repeat)
    return statistics.median(times)


def library_rows(name: str, backend, host) -> list:
    """[(label, seconds per a + b, seconds per tanh or None)] for one library."""
    xp, a = backend.xp, backend.asarray(host)
    wait = (lambda y: y.block_until_ready()) if name == "jax" else (lambda y: y)
    found = [(name, per_call(lambda: wait(a + a)), per_call(lambda: wait(xp.tanh(a))))]
    if name == "jax":
        import jax

        @jax.jit
        def twenty(x):
            for _ in range(10):
                x = xp.tanh(x + x)
            return x

        each = per_call(lambda: twenty(a).block_until_ready()) / 20
        found.append(("jax.jit (20 operations, per operation)", each, None))
    return found


def rows():
    from lenet5x.backend import resolve

    host = numpy.random.default_rng(0).normal(size=1000).astype(numpy.float32)
    for name in ("numpy", "torch", "jax"):
        try:
            backend = resolve(name, "float32", "cpu" if name != "numpy" else None)
        except Exception as error:  # a library that is not installed: no row
            print(f"({name}: {str(error).split(';')[0]})")
            continue
        yield from library_rows(name, backend, host)


def main():
    print("| library | a + b (us) | tanh(a) (us) |")
    print("|---|---:|---:|")
    for name, add, tanh in rows():
        print(
            f"| {name} | {add * 1e6:.2f} | {'' if tanh is None else f'{tanh * 1e6:.2f}'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
