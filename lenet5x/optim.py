"""Optimizers: SDLM (the paper's), SGD with momentum and weight decay, and Adam(W).

All are functional: `init_state(params)` gives a flat dict of arrays, and
`step(params, grads, state, batch_size, epoch)` returns new (params, state). `grads` are the
gradients of the loss *summed* over the mini-batch (model.backward); each optimizer says how it
combines them. Only keys present in `grads` (the trainable ones) are touched.

Each step works on all parameters as one flat vector (FlatVectors): a few array operations per
step instead of a few per parameter array, which on a GPU are a kernel launch each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from . import fused, paper
from .namespace import array_namespace, constant, launch_bound

Schedule = Sequence[tuple[int | None, float]]


def scheduled_rate(schedule: Schedule, epoch: int) -> float:
    """Piecewise-constant rate: [(passes, rate), ...]; epoch counts from 0; None = forever."""
    start = 0
    for passes, rate in schedule:
        if passes is None or epoch < start + passes:
            return rate
        start += passes
    return schedule[-1][1]


class FlatVectors:
    """Per-key arrays as one flat vector and back, without copying what it can reuse.

    Parameters and optimizer state stay one array per key (the layers and checkpoints use them
    so). `split` hands out views of a vector; `join` on arrays it has seen last under that name
    (the views it handed out, or the arrays it joined) returns the same vector again instead of
    concatenating them. Arrays are never changed in place in this project, so the same array
    objects hold the same numbers.
    """

    def __init__(self):
        self._known: dict[str, tuple[tuple, object]] = {}  # name -> (arrays, their flat vector)

    def join(self, arrays, name: str | None = None):
        """[arrays] -> (total size,) in order; remembered under `name` if given."""
        arrays = tuple(arrays)
        known = self._known.get(name)
        if known is not None and len(known[0]) == len(arrays):
            if all(a is b for a, b in zip(known[0], arrays, strict=True)):
                return known[1]
        xp = array_namespace(arrays[0])
        vector = xp.concat([a if a.ndim == 1 else xp.reshape(a, (-1,)) for a in arrays])
        if name is not None:
            self._known[name] = (arrays, vector)
        return vector

    def split(self, vector, shapes, name: str) -> list:
        """(total size,) -> views shaped `shapes`, in order; remembered under `name`."""
        xp = array_namespace(vector)
        views, offset = [], 0
        for shape in shapes:
            size = math.prod(shape)
            piece = vector[offset : offset + size]
            views.append(piece if len(shape) == 1 else xp.reshape(piece, shape))
            offset += size
        self._known[name] = (tuple(views), vector)
        return views

    def split_into(self, arrays: dict, like: dict, vector, name: str, prefix: str = "") -> dict:
        """A copy of `arrays` where, for each key of `like` in order, arrays[prefix + key] is the
        next view of `vector`, shaped like like[key] (split, remembered under `name`)."""
        views = self.split(vector, [a.shape for a in like.values()], name)
        return {**arrays, **{prefix + k: v for k, v in zip(like, views, strict=True)}}


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
        self.flat = FlatVectors()

    def init_state(self, params) -> dict:
        return {}

    def set_curvature(self, state, h, epoch: int) -> dict:
        """New state with per-parameter rates for `epoch` from h (key -> per-pattern h_kk)."""
        eta = scheduled_rate(self.schedule, epoch)
        rates = eta / (self.mu + self.flat.join(h.values()))
        return self.flat.split_into({}, h, rates, "rates", "rate/")

    def step(self, params, grads, state, batch_size: int, epoch: int):
        p = self.flat.join([params[k] for k in grads], "params")
        rates = self.flat.join([state[f"rate/{k}"] for k in grads], "rates")
        g = self.flat.join(grads.values())
        p = fused.SDLM_UPDATE(p, rates, g)  # p - rates * g: one kernel on a GPU
        return self.flat.split_into(params, grads, p, "params"), state

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
        self.flat = FlatVectors()

    def init_state(self, params) -> dict:
        return {}

    def step(self, params, grads, state, batch_size: int, epoch: int):
        lr = scheduled_rate(self.schedule, epoch)
        keys = list(grads)
        p = self.flat.join([params[k] for k in keys], "params")
        g = self.flat.join(grads.values()) / batch_size
        if self.weight_decay:
            g = g + self.weight_decay * (p * weight_mask(grads, p))
        new_state = state
        if self.momentum:
            velocity = g
            if f"velocity/{keys[0]}" in state:
                old = self.flat.join([state[f"velocity/{k}"] for k in keys], "velocity")
                velocity = self.momentum * old + g
            new_state = self.flat.split_into(state, grads, velocity, "velocity", "velocity/")
            g = g + self.momentum * velocity if self.nesterov else velocity
        return self.flat.split_into(params, grads, p - lr * g, "params"), new_state


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
        self.flat = FlatVectors()
        self._count = (None, 0)  # (the last state's "step" array, its value, known on the host)

    def init_state(self, params) -> dict:
        return {}

    def step(self, params, grads, state, batch_size: int, epoch: int):
        lr = scheduled_rate(self.schedule, epoch)
        keys = list(grads)
        b1, b2 = self.beta1, self.beta2
        t = self._steps_before(state) + 1
        g = self.flat.join(grads.values())  # summed over the batch: the mean is g / batch_size
        c1, c2 = (1 - b1) / batch_size, (1 - b2) / batch_size**2
        # bias corrections from the step count kept on the host: no device scalars, no sync
        correction, rate = 1 / math.sqrt(1 - b2**t), lr / (1 - b1**t)
        p = self.flat.join([params[key] for key in keys], "params")
        m0 = v0 = None
        if f"m/{keys[0]}" in state:
            m0 = self.flat.join([state[f"m/{key}"] for key in keys], "m")
            v0 = self.flat.join([state[f"v/{key}"] for key in keys], "v")
        xp = array_namespace(g)
        decay = lr * self.weight_decay
        if launch_bound(g):  # one kernel on a GPU (fused.py), the same numbers
            mask = weight_mask(grads, p) if decay else 0.0
            moments = (0.0, 0.0) if m0 is None else (m0, v0)
            constants = (b1, c1, b2, c2, correction, self.eps, decay, rate)
            m, v, p = fused.ADAM_UPDATE(g, *moments, p, mask, *constants)
        else:
            m, v = c1 * g, c2 * (g * g)
            if m0 is not None:
                m, v = b1 * m0 + m, b2 * v0 + v
            update = m / (xp.sqrt(v) * correction + self.eps)
            if decay:
                p = p - decay * (p * weight_mask(grads, p))
            p = p - rate * update

        counter = (
            state["step"] + 1 if "step" in state else xp.ones((), dtype=g.dtype, device=g.device)
        )
        self._count = (counter, t)
        new_state = {**state, "step": counter}
        for name, vector in (("m", m), ("v", v)):
            new_state = self.flat.split_into(new_state, grads, vector, name, f"{name}/")
        return self.flat.split_into(params, grads, p, "params"), new_state

    def _steps_before(self, state) -> int:
        """The steps taken so far: state["step"], read on the host only after a restore."""
        if "step" not in state:
            return 0
        counter, value = self._count
        if counter is not state["step"]:
            value = round(float(state["step"]))  # one device-to-host copy, after a resume
        return value


def weight_mask(grads, like):
    """Flat 1 for weights, 0 for biases and other parameters (weight decay applies to weights),
    in the order of grads' keys; made once per set of parameters, dtype and device."""
    shapes = tuple((k, tuple(g.shape)) for k, g in grads.items())

    def make(xp, dev):
        parts = [
            xp.full((math.prod(s),), float(k.endswith("weight")), dtype=like.dtype, device=dev)
            for k, s in shapes
        ]
        return xp.concat(parts)

    return constant(("weight mask", shapes, like.dtype), like, make)


def make_optimizer(name: str, schedule: Schedule, **options):
    """'sdlm', 'sgd' or 'adam' with its options (see each class)."""
    if name == "sdlm":
        return SDLM(schedule, **options)
    if name == "sgd":
        return SGD(schedule, **options)
    if name == "adam":
        return Adam(schedule, **options)
    raise ValueError(f"unknown optimizer {name!r}: use sdlm, sgd or adam")
