"""Scoring a model on a device split: mean loss, error rate and the predictions."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy

from .backend import to_numpy
from .parallel import CPU_SHARD


@dataclasses.dataclass
class Scores:
    loss: float  # mean per-pattern loss
    error: float  # fraction misclassified
    count: int
    predictions: numpy.ndarray  # (count,) predicted classes (host)
    outputs: numpy.ndarray  # (count, K) network outputs (host): RBF distances or logits


def score(model, params, data, batch_size: int = 1000, workers: int = 1) -> Scores:
    """Forward passes in evaluation mode over a DeviceData split, in order; one host copy at the
    end. workers > 1 scores that many batches at once in threads (CPU; see parallel.py). On
    NumPy a batch holds at most parallel.CPU_SHARD images (the same scores, sooner)."""
    xp = data.backend.xp
    if data.backend.name == "numpy":
        batch_size = min(batch_size, CPU_SHARD)

    def score(start) -> Scores:
        x, labels = data.slice(start, min(start + batch_size, len(data)))
        out, _ = model.forward(params, x, train=False)
        total, _ = model.loss(out, labels)
        return out, model.loss.predict(out), total

    starts = range(0, len(data), batch_size)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            scored = list(pool.map(score, starts))
    else:
        scored = [score(start) for start in starts]
    outs, preds, losses = ([s[i] for s in scored] for i in range(3))
    predictions = to_numpy(xp.concat(preds))
    outputs = to_numpy(xp.concat(outs, axis=1)).T
    loss = float(to_numpy(xp.sum(xp.stack(losses)))) / max(len(data), 1)
    labels = to_numpy(data.labels)
    error = float(numpy.mean(predictions != labels)) if len(data) else 0.0
    return Scores(loss, error, len(data), predictions, outputs)
