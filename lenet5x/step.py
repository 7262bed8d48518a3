"""One training update on a mini-batch: gather on the device, distort, shard, backprop, step.

This is where a training step is assembled; loop.py calls it once per mini-batch, and the speed
benchmarks time the same code. CompiledStep is the same step compiled whole (jax.jit, or a CUDA graph on PyTorch).
"""

from __future__ import annotations

import copy

from .backend import compile_function
from .data.distort import apply_affine
from .parallel import DataParallel, shard_count, split


class TrainStep:
    """step(params, state, idx, epoch, maps) -> (params, state, summed loss (0-d), errors (0-d)).

    idx: (B,) int64 device indices into `data`; maps: (B, 6) device inverse affine maps
    (data/distort.py), one per pattern of the batch, or None for undistorted patterns. The
    batch is cut into contiguous shards computed in `workers` threads: one shard per worker, and
    on NumPy none larger than parallel.CPU_SHARD images; one shard for a model with batch
    statistics (parallel.py).
    """

    def __init__(self, model, optimizer, data, workers: int = 1, background: float = 0.0) -> None:
        self.model, self.optimizer, self.data = model, optimizer, data
        # batch statistics must see the whole batch for the step to be the batch's step
        self.workers = 1 if model.has_state else workers
        self.background = background
        self.parallel = DataParallel(model, self.workers)

    def shards(self, idx, maps=None, data=None) -> list:
        """[(x (1, S, S, b), labels (b,)), ...]: the batch's shards, distorted by `maps`."""
        data = data or self.data
        shards = []
        count = int(idx.shape[0])
        parts = 1 if self.model.has_state else shard_count(data.backend.name, count, self.workers)
        for lo, hi in split(count, parts):
            x, labels = data.batch(idx[lo:hi])
            if maps is not None:
                x = apply_affine(x, maps[lo:hi, :], self.background)
            shards.append((x, labels))
        return shards

    def gradients(self, params, idx, maps=None, data=None) -> tuple:
        """(summed loss, errors, gradients, constant updates) of the batch idx."""
        xp = (data or self.data).backend.xp
        shards = self.shards(idx, maps, data)
        total, outs, grads, updates = self.parallel.train_pass(params, shards)
        errors = None
        for out, (_, labels) in zip(outs, shards, strict=True):
            wrong = xp.count_nonzero(self.model.loss.predict(out) != labels)
            errors = wrong if errors is None else errors + wrong
        return total, errors, grads, updates

    def __call__(self, params, state, idx, epoch: int, maps=None):
        total, errors, grads, updates = self.gradients(params, idx, maps)
        params, state = self.optimizer.step(params, grads, state, int(idx.shape[0]), epoch)
        if updates:
            params = {**params, **updates}
        return params, state, total, errors

    def close(self) -> None:
        self.parallel.close()


class CompiledStep(TrainStep):
    """TrainStep compiled whole (train.compile): the gather, distortions, passes and the
    optimizer's update on the arrays, as one XLA program (jax.jit) on JAX, or one CUDA graph
    replayed on PyTorch's CUDA (backend.GraphedFunction). The optimizer's host numbers
    (Optimizer.numbers: rates, bias corrections) are computed outside and passed in, so they
    change without a recompile; a new batch size compiles once more."""

    def __init__(self, model, optimizer, data, workers: int = 1, background: float = 0.0) -> None:
        super().__init__(model, optimizer, data, 1, background)
        self._compiled = compile_function(self._arrays_step, data.backend, carry=2)

    def _arrays_step(self, params, arrays, idx, maps, numbers, images, ready, labels):
        data = copy.copy(self.data)  # the split's arrays as arguments, not baked-in constants
        data.images, data.ready, data.labels = images, ready, labels
        total, errors, grads, updates = self.gradients(params, idx, maps, data)
        params, arrays = self.optimizer.forgetting().update(params, grads, arrays, numbers)
        return {**params, **updates}, arrays, total, errors

    def __call__(self, params, state, idx, epoch: int, maps=None):
        host = {k: state[k] for k in self.optimizer.scalars if k in state}
        arrays = {k: v for k, v in state.items() if k not in host}
        numbers = self.optimizer.numbers(state, int(idx.shape[0]), epoch)
        d = self.data
        params, arrays, total, errors = self._compiled(
            params, arrays, idx, maps, numbers, d.images, d.ready, d.labels
        )
        return params, {**arrays, **host, **self.optimizer.advance(state)}, total, errors
