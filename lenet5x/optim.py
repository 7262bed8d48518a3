"""Optimizers: SDLM (the paper's), SGD with momentum and weight decay, and Adam(W).

All are functional: `init_state(params)` gives a flat dict of arrays, and
`step(params, grads, state, batch_size, epoch)` returns new (params, state). `grads` are the
gradients of the loss *summed* over the mini-batch (model.backward); each optimizer says how it
combines them. Only keys present in `grads` (the trainable ones) are touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from . import paper
from .namespace import array_namespace

Schedule = Sequence[tuple[int | None, float]]


def scheduled_rate(schedule: Schedule, epoch: int) -> float:
    """Piecewise-constant rate: [(passes, rate), ...]; epoch counts from 0; None = forever."""
    start = 0
    for passes, rate in schedule:
        if passes is None or epoch < start + passes:
            return rate
        start += passes
    return schedule[-1][1]


class SDLM:
    """Stochastic Diagonal Levenberg-Marquardt (sec. III-B, appendix C).

    Each parameter k has its own rate eps_k = eta / (mu + h_kk) (eq. 21), where h_kk is the
    diagonal Gauss-Newton second derivative averaged per pattern over `hessian_samples` training
    patterns (model.hessian_diagonal), re-estimated before every pass and fixed during it; eta
    follows the paper's schedule over passes.

    Mini-batches: the paper updates after every pattern, w <- w - eps_k dE_p/dw (eq. 18). A batch
    of B patterns applies the *sum* of their B per-pattern steps, w <- w - eps_k sum_p dE_p/dw,
    with every gradient taken at the batch's starting point. The paper's eta keeps its meaning
    (a pass moves the weights as far as B single-pattern updates would), and batch size 1 is the
    paper's on-line rule exactly. Biases and subsampling coefficients get their own rates like
    every other parameter (a bias is a weight whose input is always 1).
    """

    needs_curvature = True

    def __init__(
        self,
        schedule: Schedule = paper.SDLM_SCHEDULE,
        mu: float = paper.SDLM_MU,
        hessian_samples: int = paper.SDLM_HESSIAN_SAMPLES,
    ):
        self.schedule, self.mu, self.hessian_samples = tuple(schedule), mu, hessian_samples

    def init_state(self, params) -> dict:
        return {}

    def set_curvature(self, state, h, epoch: int) -> dict:
        """New state with per-parameter rates for `epoch` from h (key -> per-pattern h_kk)."""
        eta = scheduled_rate(self.schedule, epoch)
        return {f"rate/{k}": eta / (self.mu + v) for k, v in h.items()}

    def step(self, params, grads, state, batch_size: int, epoch: int):
        new = dict(params)
        for k, g in grads.items():
            new[k] = params[k] - state[f"rate/{k}"] * g
        return new, state

    @staticmethod
    def rates(state) -> dict:
        """key -> per-parameter rate array (for logging and the paper's built-in check)."""
        return {k[len("rate/") :]: v for k, v in state.items() if k.startswith("rate/")}


class SGD:
    """w <- w - lr (v), v <- momentum v + mean gradient + weight_decay w (weights only)."""

    needs_curvature = False

    def __init__(
        self,
        schedule: Schedule,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        self.schedule, self.momentum, self.weight_decay = tuple(schedule), momentum, weight_decay
        self.nesterov = nesterov

    def init_state(self, params) -> dict:
        return {}

    def step(self, params, grads, state, batch_size: int, epoch: int):
        lr = scheduled_rate(self.schedule, epoch)
        new, new_state = dict(params), dict(state)
        for k, g in grads.items():
            g = g / batch_size
            if self.weight_decay and k.endswith("weight"):
                g = g + self.weight_decay * params[k]
            if self.momentum:
                v = self.momentum * state[f"velocity/{k}"] + g if f"velocity/{k}" in state else g
                new_state[f"velocity/{k}"] = v
                g = g + self.momentum * v if self.nesterov else v
            new[k] = params[k] - lr * g
        return new, new_state


class Adam:
    """Adam (Kingma & Ba 2015) on the mean gradient; weight_decay is decoupled (AdamW) on weights."""

    needs_curvature = False

    def __init__(
        self,
        schedule: Schedule,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.schedule, self.beta1, self.beta2, self.eps = tuple(schedule), beta1, beta2, eps
        self.weight_decay = weight_decay
        self._masks = {}  # (parameter shapes, dtype, device) -> flat weight-decay mask

    def init_state(self, params) -> dict:
        return {}

    def step(self, params, grads, state, batch_size: int, epoch: int):
        # All parameters as one flat vector: a dozen array operations per step instead of a dozen
        # per parameter array (on a GPU each is a kernel launch). The state stays one array per
        # parameter (views of the flat moments), as checkpoints store it.
        lr = scheduled_rate(self.schedule, epoch)
        keys = list(grads)
        some = grads[keys[0]]
        xp = array_namespace(some)
        t = state.get("step", xp.zeros((), dtype=some.dtype, device=some.device)) + 1
        c1 = 1 - self.beta1**t  # bias corrections, kept on the device (no host sync)
        c2 = 1 - self.beta2**t

        def flat(arrays):
            return xp.concat([xp.reshape(a, (-1,)) for a in arrays])

        g = flat(grads[k] for k in keys) / batch_size
        m, v = (1 - self.beta1) * g, (1 - self.beta2) * (g * g)
        if f"m/{keys[0]}" in state:
            m += self.beta1 * flat(state[f"m/{k}"] for k in keys)
            v += self.beta2 * flat(state[f"v/{k}"] for k in keys)
        update = (m / c1) / (xp.sqrt(v / c2) + self.eps)
        p = flat(params[k] for k in keys)
        if self.weight_decay:
            update += self.weight_decay * (p * self._decay_mask(keys, grads, p))
        p = p - lr * update

        new, new_state = dict(params), {**state, "step": t}
        offset = 0
        for k in keys:
            shape, size = grads[k].shape, math.prod(grads[k].shape)
            piece = slice(offset, offset + size)
            new[k] = xp.reshape(p[piece], shape)
            new_state[f"m/{k}"] = xp.reshape(m[piece], shape)
            new_state[f"v/{k}"] = xp.reshape(v[piece], shape)
            offset += size
        return new, new_state

    def _decay_mask(self, keys, grads, like):
        """Flat 1 for weights, 0 for biases and other parameters (decay applies to weights);
        made once per set of parameters, dtype and device."""
        shapes = tuple((k, tuple(grads[k].shape)) for k in keys)
        cache_key = (shapes, str(like.dtype), repr(like.device))
        if cache_key not in self._masks:
            self._masks[cache_key] = self._make_decay_mask(keys, grads, like)
        return self._masks[cache_key]

    def _make_decay_mask(self, keys, grads, like):
        xp = array_namespace(like)
        return xp.concat(
            [
                xp.full(
                    (math.prod(grads[k].shape),),
                    float(k.endswith("weight")),
                    dtype=like.dtype,
                    device=like.device,
                )
                for k in keys
            ]
        )


def make_optimizer(name: str, schedule: Schedule, **options):
    """'sdlm', 'sgd' or 'adam' with its options (see each class)."""
    if name == "sdlm":
        return SDLM(schedule, **options)
    if name == "sgd":
        return SGD(schedule, **options)
    if name == "adam":
        return Adam(schedule, **options)
    raise ValueError(f"unknown optimizer {name!r}: use sdlm, sgd or adam")
