"""One training update on a mini-batch: gather on the device, distort, shard, backprop, step.

Shared by the training script and the speed benchmark so both time the same code.
"""

from __future__ import annotations

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

    def __init__(self, model, optimizer, data, workers: int = 1, background: float = 0.0):
        self.model, self.optimizer, self.data = model, optimizer, data
        # batch statistics must see the whole batch for the step to be the batch's step
        self.workers = 1 if model.has_state else workers
        self.background = background
        self.parallel = DataParallel(model, self.workers)

    def shards(self, idx, maps=None):
        shards = []
        count = int(idx.shape[0])
        parts = (
            1 if self.model.has_state else shard_count(self.data.backend.name, count, self.workers)
        )
        for lo, hi in split(count, parts):
            x, labels = self.data.batch(idx[lo:hi])
            if maps is not None:
                x = apply_affine(x, maps[lo:hi, :], self.background)
            shards.append((x, labels))
        return shards

    def __call__(self, params, state, idx, epoch: int, maps=None):
        xp = self.data.backend.xp
        shards = self.shards(idx, maps)
        total, outs, grads, updates = self.parallel.train_pass(params, shards)
        params, state = self.optimizer.step(params, grads, state, int(idx.shape[0]), epoch)
        if updates:
            params = {**params, **updates}
        errors = None
        for out, (_, labels) in zip(outs, shards, strict=True):
            wrong = xp.count_nonzero(self.model.loss.predict(out) != labels)
            errors = wrong if errors is None else errors + wrong
        return params, state, total, errors

    def close(self):
        self.parallel.close()
