"""Data-parallel training steps on CPU cores: one thread per shard of a mini-batch.

NumPy releases the GIL inside its elementwise loops and BLAS calls, so shards of one batch run on
separate cores at once; the summed gradients are those of the whole batch (only the order of a
few floating-point additions differs). The layers are untouched: each thread runs the same
array-API code on its own shard. Used on the NumPy backend only; a GPU gets one shard.
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(backend_name: str, batch_size: int) -> int:
    """All cores for NumPy batches large enough to share (>= 128); one thread otherwise: below
    that the shards' threads lose more to the GIL (the Python between operations runs one thread
    at a time) than they gain (docs/speed.md, "Threads")."""
    return available_cores() if backend_name == "numpy" and batch_size >= 128 else 1


def one_blas_thread(backend_name: str, workers: int, batch_size: int) -> bool:
    """Whether BLAS should keep to one thread: with several workers (one core each), and on NumPy
    for batches under 64, whose small products cost more to split than they gain (docs/speed.md,
    "Threads")."""
    return workers > 1 or (backend_name == "numpy" and batch_size < 64)


# NumPy work is cut into shards of at most this many images: past it a pass's arrays outgrow the
# caches (docs/speed.md, "Threads").
CPU_SHARD = 256


def shard_count(backend_name: str, batch_size: int, workers: int) -> int:
    """How many shards a batch is cut into: one per worker, and on NumPy as many more as keep
    each at CPU_SHARD images or fewer (a multiple of `workers`, so the threads share them evenly).
    A GPU takes its batch whole."""
    if backend_name != "numpy":
        return workers
    return workers * max(1, math.ceil(batch_size / (workers * CPU_SHARD)))


def split(count: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of `parts` nearly equal contiguous shards of range(count) (no empty ones)."""
    parts = max(1, min(parts, count))
    bounds = [count * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


class DataParallel:
    """model.loss_and_grads over shards in `workers` threads (a thread takes the next shard when
    it is done with one); returns the sums, in shard order, and the per-shard outputs."""

    def __init__(self, model, workers: int) -> None:
        self.model, self.workers = model, workers
        self.pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def loss_and_grads(self, params, shards) -> tuple:
        """shards: [(x, labels), ...] -> (summed loss, [out per shard], summed grads)."""
        total, outs, grads, _ = self.train_pass(params, shards)
        return total, outs, grads

    def train_pass(self, params, shards) -> tuple:
        """As loss_and_grads, plus constant updates (batch-norm running statistics) averaged over
        shards; with several shards each normalizes with its own statistics ("ghost" batches)."""
        if self.pool is None or len(shards) == 1:
            results = [self.model.train_pass(params, x, labels) for x, labels in shards]
        else:
            results = list(self.pool.map(lambda s: self.model.train_pass(params, *s), shards))
        total, outs, grads, updates = (
            results[0][0],
            [results[0][1]],
            dict(results[0][2]),
            dict(results[0][3]),
        )
        for t, out, g, u in results[1:]:
            total = total + t
            outs.append(out)
            for k in grads:
                grads[k] = grads[k] + g[k]
            for k in updates:
                updates[k] = updates[k] + u[k]
        if len(results) > 1:
            updates = {k: v / len(results) for k, v in updates.items()}
        return total, outs, grads, updates

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


@contextlib.contextmanager
def single_threaded_blas(enabled: bool):
    """With several worker threads, keep BLAS to one thread each so the cores are not oversubscribed."""
    if not enabled:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
