"""Optimizers: SDLM (the paper's), SGD with momentum and weight decay, and Adam(W).

All are functional and share one small protocol (Optimizer), so the training loop never asks
which one it holds:

    init_state(params)                        -> state
    before_pass(state, epoch, curvature)      -> state   (SDLM: h_kk on 500 patterns, eq. 21)
    step(params, grads, state, batch, epoch)  -> params, state
    after_pass(start, state, train_error)     -> state, redo, note   (SDLM: the damping redo)
    pass_record(state, epoch)                 -> what to log for the pass (SDLM's rates)

A step is three parts, so that its array part can be compiled whole (step.CompiledStep, JAX):
numbers(state, batch, epoch) computes the step's constants on the host (rates, Adam's bias
corrections), update(params, grads, state, numbers) is the arrays' update alone, and
advance(state) the host numbers after it (Adam's step count).

`state` is a flat dict: arrays on the device ("rate/C1.weight", "m/...", ...) and host numbers
(SDLM's damping mu, Adam's step count), all of it saved in a checkpoint (checkpoint.py keeps the
numbers in its metadata). `grads` are the gradients of the loss *summed* over the mini-batch
(model.backward); each optimizer says how it combines them. Only keys present in `grads` (the
trainable ones) are touched.

Each step works on all parameters as one flat vector (FlatVectors): a few array operations per
step instead of a few per parameter array, which on a GPU are a kernel launch each.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from . import fused, paper
from .arrays import array_namespace, constant

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

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple, object]] = {}  # name -> (arrays, their flat vector)

    def join(self, arrays, name: str | None = None) -> Any:
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


class Optimizer:
    """What every optimizer has; SGD and Adam keep the defaults around a pass, SDLM does not."""

    #: host numbers kept in the state (the rest of the state is arrays)
    scalars: tuple[str, ...] = ()

    def init_state(self, params) -> dict:
        return {}

    def forgetting(self) -> Optimizer:
        """A copy that remembers no vector between calls (a new FlatVectors): what a compiled step
        updates with. A join answered from memory would be compiled in as a constant (a CUDA
        graph reads the vector of its warm-up call forever) instead of computed each step."""
        fresh = copy.copy(self)
        fresh.flat = FlatVectors()
        return fresh

    def step(self, params, grads, state, batch_size: int, epoch: int) -> tuple:
        """One update of `params` by the summed gradients `grads` of a batch: (params, state)."""
        numbers = self.numbers(state, batch_size, epoch)
        params, state = self.update(params, grads, state, numbers)
        return params, {**state, **self.advance(state)}

    def numbers(self, state: dict, batch_size: int, epoch: int) -> tuple:
        """The host numbers (Python floats) this step's update needs."""
        return ()

    def update(self, params, grads, state, numbers: tuple) -> tuple:
        """The update on the arrays alone: (params, state); no host numbers are read or made."""
        raise NotImplementedError

    def advance(self, state: dict) -> dict:
        """The state's host numbers after a step (only those that change)."""
        return {}

    def before_pass(self, state: dict, epoch: int, curvature) -> dict:
        """Called before pass `epoch` starts from its first step; curvature(count) -> h (key ->
        the diagonal second derivatives per pattern on `count` training patterns,
        model.hessian_diagonal), for an optimizer that wants them."""
        return state

    def after_pass(self, start: dict | None, state: dict, train_error: float) -> tuple:
        """After a whole pass: (state to go on with, whether to redo the pass from its start,
        a line saying why). start: the state the pass began with, None if it was resumed midway."""
        return state, False, ""

    def pass_record(self, state: dict, epoch: int) -> dict:
        """Metrics to log for pass `epoch` (plain numbers)."""
        return {}

    def state_shapes(self, shapes: dict) -> dict:
        """The state's arrays in a checkpoint (always saved after a step): key -> shape, given
        the trainable parameters' shapes."""
        return {}

    def check_scalars(self, values: dict) -> str | None:
        """What is wrong with the host numbers of a loaded state, or None."""
        return None


# a pass whose training error is above DEAD and over twice the last pass's has killed the network
DEAD = 0.5  # (chance is 90%)


class SDLM(Optimizer):
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

    Damping (not in the paper): a pass that kills the network (training error above 50% and over
    twice the last pass's) is redone from its start with mu ten times larger, Levenberg-
    Marquardt's own answer to a failed step, at most `damping_retries` times in a run. The state
    carries mu in force, the retries left and the last pass's training error.
    """

    scalars = ("mu", "retries_left", "last_train_error")

    def __init__(
        self,
        schedule: Schedule = paper.SDLM_SCHEDULE,
        mu: float = paper.SDLM_MU,
        hessian_samples: int = paper.SDLM_HESSIAN_SAMPLES,
        damping_retries: int = 0,
    ) -> None:
        self.schedule, self.mu, self.hessian_samples = tuple(schedule), mu, hessian_samples
        self.damping_retries = damping_retries
        self.flat = FlatVectors()

    def init_state(self, params) -> dict:
        return {"mu": self.mu, "retries_left": self.damping_retries, "last_train_error": None}

    def set_curvature(self, state, h, epoch: int) -> dict:
        """New state with per-parameter rates for `epoch` from h (key -> per-pattern h_kk)."""
        eta = scheduled_rate(self.schedule, epoch)
        rates = eta / (state.get("mu", self.mu) + self.flat.join(h.values()))
        return self.flat.split_into(state, h, rates, "rates", "rate/")

    def before_pass(self, state, epoch, curvature) -> dict:
        return self.set_curvature(state, curvature(self.hessian_samples), epoch)

    def update(self, params, grads, state, numbers) -> tuple:
        p = self.flat.join([params[k] for k in grads], "params")
        rates = self.flat.join([state[f"rate/{k}"] for k in grads], "rates")
        g = self.flat.join(grads.values())
        p = fused.SDLM_UPDATE(p, rates, g)  # p - rates * g: one kernel on a GPU
        return self.flat.split_into(params, grads, p, "params"), state

    def after_pass(self, start, state, train_error) -> tuple:
        last = state["last_train_error"]
        died = last is not None and train_error > DEAD and train_error > 2 * last
        if died and start is not None and state["retries_left"]:
            mu = state["mu"] * 10
            redo = {**start, "mu": mu, "retries_left": state["retries_left"] - 1}
            note = (
                f"training error {train_error:.1%}, the network died; "
                f"redoing this epoch from its start with SDLM damping mu = {mu:g}"
            )
            return redo, True, note
        return {**state, "last_train_error": train_error}, False, ""

    def pass_record(self, state, epoch) -> dict:
        return {
            "sdlm_rates": layer_rates(self.rates(state)),
            "eta": scheduled_rate(self.schedule, epoch),
            "sdlm_mu": state["mu"],
        }

    def state_shapes(self, shapes) -> dict:
        return {f"rate/{k}": s for k, s in shapes.items()}

    def check_scalars(self, values):
        mu, retries, last = (values.get(k) for k in self.scalars)
        if not (_number(mu) and mu > 0):
            return f"corrupted SDLM damping mu {mu!r}"
        if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
            return f"corrupted damping retry count {retries!r}"
        if last is not None and not (_number(last) and 0 <= last <= 1):
            return f"corrupted last training error {last!r}"
        return None

    @staticmethod
    def rates(state) -> dict:
        """key -> per-parameter rate array (for logging and the paper's built-in check)."""
        return {k[len("rate/") :]: v for k, v in state.items() if k.startswith("rate/")}


def layer_rates(rates: dict) -> dict:
    """Per-parameter rates (key -> array) -> {layer: [mean, min, max]} as host floats."""
    per_layer: dict[str, list] = {}
    for key, value in rates.items():
        per_layer.setdefault(key.split(".", 1)[0], []).append(value)
    summary = {}
    for layer, parts in per_layer.items():
        xp = array_namespace(parts[0])
        v = xp.concat([xp.reshape(p, (-1,)) for p in parts])
        summary[layer] = [float(xp.mean(v)), float(xp.min(v)), float(xp.max(v))]
    return summary


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class SGD(Optimizer):
    """w <- w - lr (v), v <- momentum v + mean gradient + weight_decay w (weights only)."""

    def __init__(
        self,
        schedule: Schedule,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        self.schedule, self.momentum, self.weight_decay = tuple(schedule), momentum, weight_decay
        self.nesterov = nesterov
        self.flat = FlatVectors()

    def numbers(self, state, batch_size, epoch):
        return scheduled_rate(self.schedule, epoch), batch_size

    def update(self, params, grads, state, numbers) -> tuple:
        lr, batch_size = numbers
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

    def state_shapes(self, shapes) -> dict:
        return {f"velocity/{k}": s for k, s in shapes.items()} if self.momentum else {}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) on the mean gradient; weight_decay is decoupled (AdamW) on weights.

    The state holds the moments m and v and the number of steps taken, a host integer: the bias
    corrections need no device scalar and no synchronization."""

    scalars = ("steps",)

    def __init__(
        self,
        schedule: Schedule,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.schedule, self.beta1, self.beta2, self.eps = tuple(schedule), beta1, beta2, eps
        self.weight_decay = weight_decay
        self.flat = FlatVectors()

    def init_state(self, params) -> dict:
        return {"steps": 0}

    def numbers(self, state, batch_size, epoch):
        lr, b1, b2 = scheduled_rate(self.schedule, epoch), self.beta1, self.beta2
        t = state.get("steps", 0) + 1
        c1, c2 = (1 - b1) / batch_size, (1 - b2) / batch_size**2  # g is the batch's sum
        correction, rate = 1 / math.sqrt(1 - b2**t), lr / (1 - b1**t)
        return c1, c2, correction, rate, lr * self.weight_decay

    def update(self, params, grads, state, numbers) -> tuple:
        keys = list(grads)
        g = self.flat.join(grads.values())  # summed over the batch: the mean is g / batch_size
        p = self.flat.join([params[key] for key in keys], "params")
        moments = (0.0, 0.0)  # m and v before the first step
        if f"m/{keys[0]}" in state:
            moments = tuple(self.flat.join([state[f"{n}/{k}"] for k in keys], n) for n in "mv")
        c1, c2, correction, rate, decay = numbers
        mask = weight_mask(grads, p) if self.weight_decay else 0.0
        constants = (self.beta1, c1, self.beta2, c2, correction, self.eps, decay, rate)
        m, v, p = fused.ADAM_UPDATE(g, *moments, p, mask, *constants)  # one kernel on a GPU
        new_state = state
        for name, vector in (("m", m), ("v", v)):
            new_state = self.flat.split_into(new_state, grads, vector, name, f"{name}/")
        return self.flat.split_into(params, grads, p, "params"), new_state

    def advance(self, state):
        return {"steps": state.get("steps", 0) + 1}

    def state_shapes(self, shapes) -> dict:
        return {f"{n}/{k}": s for n in "mv" for k, s in shapes.items()}

    def check_scalars(self, values):
        steps = values.get("steps")
        if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0):
            return f"corrupted Adam step count {steps!r}"
        return None


def weight_mask(grads, like) -> Any:
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


def make_optimizer(config) -> Optimizer:
    """The optimizer a config.OptimizerConfig describes."""
    o = config
    if o.name == "sdlm":
        return SDLM(o.schedule, o.mu, o.hessian_samples, o.damping_retries)
    if o.name == "sgd":
        return SGD(o.schedule, o.momentum, o.weight_decay, o.nesterov)
    if o.name == "adam":
        return Adam(o.schedule, o.beta1, o.beta2, o.eps, o.weight_decay)
    raise ValueError(f"unknown optimizer {o.name!r}: use sdlm, sgd or adam")
