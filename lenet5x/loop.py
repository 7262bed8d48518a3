"""One training run, phase by phase: prepare, resume, then passes until the last epoch.

    run = prepare(config, name)              # backend, data, model, optimizer, run directory
    run = resume(run) if resuming else run   # the checkpoint, checked against all of that
    run = start(run)                         # lock and write the run directory
    while run.epoch < config.train.epochs:
        run, done = run_pass(run, stop)      # optimizer.before_pass -> steps -> after_pass
        run = end_of_pass(run, done)         # score, log, checkpoint

`fit` does exactly that; `python -m lenet5x.train` (train.py) and `lenet5x.fit` (api.py) call it.
A Run holds everything a phase needs and each phase returns a new one; nothing is changed
behind the caller's back but the files of the run directory. One training update is
step.TrainStep; what an optimizer does around a pass (SDLM's curvature and damping) is its own
business (optim.Optimizer), so this loop never asks which optimizer it holds.

Every input (config, data, backend, checkpoint) is checked before anything is written. A run
ends with an exception from errors.py when it cannot go on: Diverged (the loss became NaN),
Interrupted (Ctrl-C or SIGTERM, after a checkpoint), WriteError (a full disk).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy

from . import __version__
from .backend import Backend, describe_device, keep_freed_host_memory, resolve, to_numpy
from .checkpoint import (
    check_arrays,
    check_constants,
    check_resume,
    check_state,
    load_checkpoint,
    save_checkpoint,
)
from .config import (
    Config,
    ConfigError,
    anchored,
    assignment,
    find_config,
    load_config,
    save_config,
)
from .data import DeviceData, HostDataset, load_dataset
from .data.distort import draw_inverse_maps, draw_pool_pass
from .errors import Diverged, Interrupted
from .model import Model, build_model
from .optim import Optimizer, make_optimizer
from .parallel import default_workers, one_blas_thread, single_threaded_blas
from .rundir import (
    RunDirError,
    choose_run_dir,
    create_run_dir,
    metrics_path,
    skipped_note,
    truncate_metrics,
    writing,
)
from .scoring import score
from .step import CompiledStep, TrainStep

# Independent random streams, all derived from the seed: a checkpoint's (epoch, step) is its RNG state.
STREAM_INIT, STREAM_SHUFFLE, STREAM_HESSIAN, STREAM_DISTORT, STREAM_DISTORT_POOL = 0, 1, 2, 3, 4
STREAM_BOOST = 5  # boosting.py's filtered streams and gate patterns: [seed, 5, stage, draw]
CHECK_EVERY = 20  # steps between looks at the loss (a host sync) and the progress bar
NO_SUMS = {"loss": 0.0, "errors": 0, "seen": 0, "seconds": 0.0}


def say(message: str) -> None:
    """The default log: a line on stdout, at once (a pipe or `docker logs` sees it live)."""
    print(message, flush=True)


@dataclasses.dataclass(frozen=True)
class Run:
    """A training run between phases: what it trains, where, and how far it has got."""

    config: Config
    run_dir: Path
    backend: Backend
    host: HostDataset  # the data as read (scale, offset, identity)
    train: DeviceData
    test: DeviceData
    val: DeviceData | None
    model: Model
    optimizer: Optimizer
    params: dict[str, Any]
    state: dict[str, Any]  # the optimizer's
    epoch: int = 0  # passes completed
    step: int = 0  # steps done of pass `epoch` (a checkpoint saved inside a pass)
    partial: dict = dataclasses.field(default_factory=lambda: dict(NO_SUMS))  # that pass's sums
    best_error: float = math.inf  # the lowest validation error so far (no validation: inf)
    history: tuple[dict, ...] = ()  # this process's records, one per pass
    resumed: bool = False
    lock: Any = None  # the run directory's lock (rundir.create_run_dir), held while training
    train_step: TrainStep | None = None  # one training update (step.py), made by start
    pool_maps: numpy.ndarray | None = None  # the paper's fixed pool of distortions (pool_of)
    log: Callable[[str], None] = say

    @property
    def steps(self) -> int:
        """Mini-batches in a pass."""
        return math.ceil(len(self.train) / self.config.train.batch_size)


@dataclasses.dataclass(frozen=True)
class PassDone:
    """What a finished pass measured (before scoring)."""

    train_loss: float
    train_error: float
    seconds: float
    record: dict  # the optimizer's pass_record (SDLM's rates)


# what a resumed run may change: the rest of its configuration is its own (checkpoint.RESUMABLE)
RESUMABLE = (
    "train.epochs",
    "train.backend",
    "train.device",
    "train.compile",
    "train.progress",
    "data.dir",
)


def configure(config=None, overrides=(), resume=None) -> tuple[Config, str]:
    """The configuration of a run and its name (for the default run directory): the config
    file or shipped config `config` (default "lenet5") with `--set` overrides; or, to resume the
    run in directory `resume`, its own config.yaml, of which only RESUMABLE keys may change."""
    if resume is None:
        path = find_config(config or "lenet5")
        return load_config(path, overrides), path.stem
    run_dir = Path(resume)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no config.yaml); nothing to resume")
    keys = [assignment.split("=", 1)[0].strip() for assignment in overrides]
    if config is not None or any(key not in RESUMABLE for key in keys):
        raise ConfigError(
            "--resume continues a run as configured: only --epochs, --backend, --device, "
            "--data-dir, --no-progress and train.compile may be given with it"
        )
    out = assignment("train.out", str(run_dir))
    return load_config(run_dir / "config.yaml", [*overrides, out]), run_dir.name


def prepare(config: Config, name: str, resuming: bool = False, log=say) -> Run:
    """Backend, data, model, optimizer and initial parameters; the run directory chosen (not yet
    created). Raises a UserError (one line) for anything that cannot be used."""
    t = config.train
    run_dir = choose_run_dir(t.out, name, resume=resuming)
    backend = resolve(t.backend, t.dtype, t.device)
    if backend.note:
        log(backend.note)
    if backend.name == "numpy":
        keep_freed_host_memory()
    host = load_dataset(config.data, log=log)
    train, test, val = (
        DeviceData(backend, images, labels, host.scale, host.offset) if images is not None else None
        for images, labels in (
            (host.train_images, host.train_labels),
            (host.test_images, host.test_labels),
            (host.validation_images, host.validation_labels),
        )
    )
    if t.batch_size > len(train):
        raise ConfigError(
            f"train.batch_size: {t.batch_size} is larger than the training set ({len(train)} images)"
        )
    model = build_model(config.model)
    optimizer = make_optimizer(config.optimizer)
    params = model.init(numpy.random.default_rng([t.seed, STREAM_INIT]), backend)
    state = optimizer.init_state(params)
    return Run(
        config, run_dir, backend, host, train, test, val, model, optimizer, params, state,
        log=log, pool_maps=pool_of(config),
    )  # fmt: skip


def pool_of(config: Config) -> numpy.ndarray | None:
    """The inverse maps (P, 6) of the paper's fixed pool of P distorted copies (sec. III-C),
    drawn once for the run from its seed; None without a pool."""
    d = config.data.distortions
    if not (d.enabled and d.pool):
        return None
    rng = numpy.random.default_rng([config.train.seed, STREAM_DISTORT_POOL])
    return draw_inverse_maps(rng, d.pool, dataclasses.replace(d, probability=1.0))


def resume(run: Run) -> Run:
    """The run's checkpoint.npz (no pickle), checked against this configuration, model and
    optimizer before anything of it is used: the position, parameters and optimizer state."""
    path = run.run_dir / "checkpoint.npz"
    params, state, meta = load_checkpoint(path)
    check_resume(path, meta, run.config.to_dict(), run.steps)
    shapes = {k: tuple(v.shape) for k, v in run.params.items()}
    check_arrays(path, params, shapes)
    check_constants(
        path, params, {k: to_numpy(v) for k, v in run.model.constants(run.params).items()}
    )
    trainable = {k: shapes[k] for k in run.model.trainable_keys}
    check_state(path, run.optimizer, state, trainable, run.config.optimizer.name)
    epoch, epochs = meta["epoch"], run.config.train.epochs
    if epoch >= epochs:
        done = f"{epoch} epoch{'s' * (epoch != 1)}"
        raise ConfigError(
            f"{run.run_dir}: already trained for {done}; pass --epochs N with N > {epoch} to "
            "train it further"
        )
    b = run.backend
    return dataclasses.replace(
        run,
        params={k: b.asarray(v, dtype=run.params[k].dtype) for k, v in params.items()},
        state={k: v if k in run.optimizer.scalars else b.asarray(v) for k, v in state.items()},
        epoch=epoch,
        step=meta["step"],
        partial=meta["partial"] if meta["step"] else dict(NO_SUMS),
        best_error=math.inf if meta.get("best_error") is None else meta["best_error"],
        resumed=True,
    )


def start(run: Run) -> Run:
    """Lock and write the run directory (config.yaml; on resume, metrics of unfinished epochs
    dropped); say what trains where."""
    t, workers = run.config.train, train_workers(run)
    kind = CompiledStep if t.compile else TrainStep  # before the run directory: it may refuse
    train_step = kind(run.model, run.optimizer, run.train, workers, run.host.background)
    with writing(run.run_dir):
        lock = create_run_dir(run.run_dir)
        save_config(run.config, run.run_dir / "config.yaml")
        if run.resumed:
            skipped = truncate_metrics(run.run_dir, run.epoch)
            if skipped:
                run.log(skipped_note(run.run_dir, skipped) + "; the checkpoint is intact")
            run.log(f"resuming {run.run_dir} at epoch {run.epoch + 1}, step {run.step}")
    n_params = sum(run.model.parameter_count(run.params).values())
    split = f"{len(run.train):,} train / {len(run.test):,} test"
    split += f" / {len(run.val):,} validation" if run.val else ""
    run.log(
        f"{run.model.description}: {n_params:,} trainable parameters | {run.backend.name} {t.dtype} | "
        f"{split} | {run.config.optimizer.name} | batch {t.batch_size} | "
        f"{workers} worker{'s' if workers > 1 else ''} | run dir {run.run_dir}"
    )
    return dataclasses.replace(run, lock=lock, train_step=train_step)


def train_workers(run: Run) -> int:
    """CPU threads sharing a training batch (parallel.py); one for a model with batch statistics."""
    t = run.config.train
    return (
        1 if run.model.has_state else t.workers or default_workers(run.backend.name, t.batch_size)
    )


def pass_order(seed: int, epoch: int, n: int, shuffle: str) -> numpy.ndarray:
    """The order (n,) in which pass `epoch` presents the training patterns: a new permutation
    each pass ("every_pass"), or the same one every pass ("once", sec. III-B)."""
    return numpy.random.default_rng(
        [seed, STREAM_SHUFFLE, 0 if shuffle == "once" else epoch]
    ).permutation(n)


def pass_patterns(run: Run, epoch: int) -> tuple[numpy.ndarray, numpy.ndarray | None]:
    """Pass `epoch`'s training patterns in the order presented: image indices (n,) and their
    inverse affine maps (n, 6) (data/distort.py), or None without distortions.

    Without a pool every image once, in pass_order, each distorted afresh with probability
    distortions.probability. With the paper's fixed pool (distortions.pool copies drawn once for
    the run, sec. III-C), n patterns drawn from the n originals and the copies."""
    seed, n, d = run.config.train.seed, len(run.train), run.config.data.distortions
    if run.pool_maps is not None:
        rng = numpy.random.default_rng([seed, STREAM_DISTORT_POOL, epoch])
        return draw_pool_pass(rng, run.pool_maps, n)
    order = pass_order(seed, epoch, n, run.config.train.shuffle)
    if not d.enabled:
        return order, None
    maps = draw_inverse_maps(numpy.random.default_rng([seed, STREAM_DISTORT, epoch]), n, d)
    return order, maps[order]


def curvature(run: Run, params: dict, epoch: int) -> Callable[[int], dict]:
    """curvature(count) -> h_kk per pattern on `count` random training patterns (appendix C),
    the same ones for a redone pass (drawn from the seed and the epoch)."""

    def estimate(count: int) -> dict:
        rng = numpy.random.default_rng([run.config.train.seed, STREAM_HESSIAN, epoch])
        pick = rng.choice(len(run.train), min(count, len(run.train)), replace=False)
        x, labels = run.train.batch(run.backend.asarray(pick, dtype=run.backend.xp.int64))
        return run.model.hessian_diagonal(params, x, labels)

    return estimate


def run_pass(run: Run, stop) -> tuple[Run, PassDone | None]:
    """Pass run.epoch from run.step on. Returns the run after it and what it measured, or
    (the run set back to the pass's start, None) when the optimizer redoes the pass."""
    fresh = run.step == 0
    state = (
        run.optimizer.before_pass(run.state, run.epoch, curvature(run, run.params, run.epoch))
        if fresh
        else run.state
    )
    record = run.optimizer.pass_record(state, run.epoch)
    start_at = dataclasses.replace(run, state=state, partial=dict(NO_SUMS)) if fresh else run
    run, sums = take_steps(start_at, stop)
    train_error = sums["errors"] / sums["seen"]
    state, redo, note = run.optimizer.after_pass(
        start_at.state if fresh else None, run.state, train_error
    )
    if redo:
        run.log(f"epoch {run.epoch + 1}: {note}")
        return dataclasses.replace(start_at, state=state), None
    done = PassDone(sums["loss"] / sums["seen"], train_error, sums["seconds"], record)
    return dataclasses.replace(run, state=state), done


def take_steps(run: Run, stop) -> tuple[Run, dict]:
    """The mini-batch steps of pass run.epoch, from run.step to the end; the pass's sums (loss,
    errors, seen, seconds) with those of a resumed pass's first part. The loss is summed on the
    device and read every CHECK_EVERY steps: no host sync per step."""
    t, b, xp = run.config.train, run.backend, run.backend.xp
    order, maps = pass_patterns(run, run.epoch)
    order, maps = b.asarray(order, dtype=xp.int64), None if maps is None else b.asarray(maps)
    train_step = run.train_step
    loss = xp.zeros((), dtype=b.dtype, device=b.device)
    errors = xp.zeros((), dtype=xp.int64, device=b.device)
    params, state, step, seen = run.params, run.state, run.step, 0
    bar = progress_bar(t.progress, run.steps, step, f"epoch {run.epoch + 1}/{t.epochs}")
    t0 = time.perf_counter()
    try:
        while step < run.steps:
            window = slice(step * t.batch_size, (step + 1) * t.batch_size)
            batch_maps = None if maps is None else maps[window, :]
            params, state, total, wrong = train_step(
                params, state, order[window], run.epoch, batch_maps
            )
            loss, errors, step = loss + total, errors + wrong, step + 1
            seen += int(order[window].shape[0])
            if step % CHECK_EVERY == 0 or step == run.steps or stop.requested:
                running = float(to_numpy(loss))
                if not math.isfinite(running):
                    raise Diverged(diverged_message(run, step))
                speed = seen / max(time.perf_counter() - t0, 1e-9)
                bar.update(step - bar.n)
                average = (run.partial["loss"] + running) / (run.partial["seen"] + seen)
                bar.set_postfix_str(f"loss {average:.4f} {speed:,.0f} samples/s")
            if stop.requested:
                break
    finally:
        bar.close()
    b.synchronize(loss)
    p = run.partial
    sums = {
        "loss": p["loss"] + float(to_numpy(loss)),
        "errors": p["errors"] + int(to_numpy(errors)),
        "seen": p["seen"] + seen,
        "seconds": p["seconds"] + time.perf_counter() - t0,
    }
    run = dataclasses.replace(run, params=params, state=state, step=step)
    if stop.requested:
        interrupt(run, sums)
    return run, sums


def interrupt(run: Run, sums: dict):
    """Save the position inside the pass and stop (Interrupted, exit 130)."""
    with writing(run.run_dir):
        save_checkpoint(run.run_dir / "checkpoint.npz", run.params, run.state, meta(run, sums))
    where = shlex.quote(str(run.run_dir))
    raise Interrupted(
        f"interrupted in epoch {run.epoch + 1} at step {run.step}/{run.steps}; checkpoint saved. "
        f"Resume with: python -m lenet5x.train --resume {where}"
    )


def diverged_message(run: Run, step: int) -> str:
    ckpt = run.run_dir / "checkpoint.npz"
    kept = (
        f"the last good checkpoint is kept at {ckpt}"
        if ckpt.exists()
        else "no checkpoint had been written yet"
    )
    return (
        f"the loss became NaN or infinite in epoch {run.epoch + 1} (by step {step}); the run "
        f"stopped and {kept}. Lower the learning rate (optimizer.schedule) or check the data."
    )


def meta(run: Run, partial: dict | None) -> dict:
    """A checkpoint's metadata: the position (run.epoch passes done, run.step steps into the next,
    with their sums `partial`), the configuration and the data it was trained on."""
    return {
        "epoch": run.epoch,
        "step": run.step,
        "partial": partial,
        "config": run.config.to_dict(),
        "best_error": None if math.isinf(run.best_error) else run.best_error,
        "version": __version__,
        "description": run.model.description,
        "input_scale": run.host.scale,
        "input_offset": run.host.offset,
        "dataset": run.host.identity,
    }


def end_of_pass(run: Run, done: PassDone) -> Run:
    """Score the pass's weights, log the record, write the checkpoints; the next pass's run."""
    t = run.config.train
    t1 = time.perf_counter()
    scores = scorer(run)
    test = scores(run.test)
    record = {
        "epoch": run.epoch + 1,
        "train_loss": done.train_loss,
        "train_error": done.train_error,
    }
    record.update(test_loss=test.loss, test_error=test.error)
    if run.val is not None:
        val = scores(run.val)
        record.update(val_loss=val.loss, val_error=val.error)
    if t.full_train_eval:
        record["train_error_full"] = scores(run.train).error
    record.update(
        seconds=done.seconds,
        eval_seconds=time.perf_counter() - t1,
        samples_per_second=len(run.train) / done.seconds,
        backend=run.backend.name,
        dtype=t.dtype,
        machine=describe_device(run.backend),
        **done.record,
    )
    improved = record.get("val_error", math.inf) < run.best_error  # chosen on validation only
    run = dataclasses.replace(
        run, epoch=run.epoch + 1, step=0, partial=dict(NO_SUMS), history=(*run.history, record),
        best_error=record["val_error"] if improved else run.best_error,
    )  # fmt: skip
    with writing(run.run_dir):  # best.npz first: if a write fails, the epoch is redone on --resume
        with open(metrics_path(run.run_dir), "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if improved:
            save_checkpoint(run.run_dir / "best.npz", run.params, run.state, meta(run, None))
        save_checkpoint(run.run_dir / "checkpoint.npz", run.params, run.state, meta(run, None))
    run.log(epoch_line(record, t.epochs, improved))
    draw_curves(run.run_dir)
    return run


def scorer(run: Run) -> Callable:
    """split -> scoring.Scores of run.params, in threads of their own (scoring has its own batch
    size and no batch statistics to share)."""
    t = run.config.train
    workers = t.workers or default_workers(run.backend.name, t.eval_batch_size)

    def scores(data):
        with single_threaded_blas(workers > 1):
            return score(run.model, run.params, data, t.eval_batch_size, workers)

    return scores


def epoch_line(record: dict, epochs: int, improved: bool) -> str:
    """The one line (two with SDLM's rates) a pass prints."""
    parts = [
        f"epoch {record['epoch']:>2}/{epochs}",
        f"loss {record['train_loss']:.4f}",
        f"train err {record['train_error']:.2%}",
    ]
    if "train_error_full" in record:
        parts.append(f"(full {record['train_error_full']:.2%})")
    if "val_error" in record:
        parts.append(f"val err {record['val_error']:.2%}{' *' if improved else ''}")
    parts += [
        f"test err {record['test_error']:.2%}",
        f"{record['seconds']:.1f} s ({record['samples_per_second']:,.0f}/s)",
    ]
    line = "  ".join(parts)
    rates = record.get("sdlm_rates")
    if rates:
        low, high = min(v[1] for v in rates.values()), max(v[2] for v in rates.values())
        layers = " ".join(f"{k} {v[0]:.1e}" for k, v in rates.items())
        line += f"\n    SDLM rates: min {low:.1e} max {high:.1e} | layer means: {layers}"
    return line


def progress_bar(enabled: bool, total: int, initial: int, desc: str):
    """A tqdm bar on stderr, only where stderr is a terminal (a log file gets no frames)."""
    from tqdm import tqdm  # the terminal's bar (tqdm.auto would want Jupyter's widgets)

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="batch",
        leave=False,
        disable=not (enabled and sys.stderr.isatty()),
        file=sys.stderr,
        dynamic_ncols=True,
    )


def draw_curves(run_dir: Path) -> None:
    """curves.png in the run directory, when matplotlib is installed (the `plots` extra)."""
    try:
        from .figures import plot_runs
    except ImportError:
        return
    try:
        plot_runs([run_dir], run_dir / "curves.png")
    except ImportError:
        pass
    except OSError as error:  # the pictures are optional; a full disk shows at the next checkpoint
        print(
            f"warning: could not draw {run_dir / 'curves.png'} ({error.strerror or error})",
            file=sys.stderr,
        )


class StopRequest:
    """SIGINT/SIGTERM set a flag checked between steps; a second Ctrl-C stops at once. Outside
    the main thread (where Python allows no signal handlers) it never asks to stop."""

    def __init__(self) -> None:
        self.requested = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def training_context(run: Run, stop=None):
    """Around the passes: Ctrl-C as a request to stop (or `stop`, whose `requested` another
    thread sets), BLAS threads as the workers want them, no NumPy overflow warnings (a
    diverging run says so once, through Diverged)."""
    t = run.config.train
    one_thread = one_blas_thread(run.backend.name, train_workers(run), t.batch_size)
    asked = StopRequest() if stop is None else contextlib.nullcontext(stop)
    with asked as stop, single_threaded_blas(one_thread), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "(overflow|invalid value|divide by zero) encountered", RuntimeWarning
        )
        yield stop


def fit(
    config: Config, name: str, resume_dir: Path | None = None, log=say, after_pass=None, stop=None
) -> Run:
    """A whole run: train `config` (named `name` for its default run directory) from scratch,
    or resume the run in `resume_dir` (whose config.yaml `config` was read from).
    after_pass(run), if given, is called after each pass's checkpoint is written (a sweep sends
    the run's files home from there); stop, if given, replaces Ctrl-C: the run saves a
    checkpoint and raises Interrupted once stop.requested is true (a sweep's run on a worker)."""
    config = anchored(config)  # data.dir as an absolute path: the run is read back from elsewhere
    run = prepare(config, name, resuming=resume_dir is not None, log=log)
    run = resume(run) if resume_dir is not None else run
    run = start(run)
    try:
        with training_context(run, stop) as stop:
            while run.epoch < config.train.epochs:
                run, done = run_pass(run, stop)
                if done is not None:
                    run = end_of_pass(run, done)
                    if after_pass is not None:
                        after_pass(run)
            if stop.requested:  # asked while the last pass was being scored and saved
                log(
                    "(stop asked for as the last pass ended: the run is complete, nothing was lost)"
                )
    finally:
        run.train_step.close()
        run.lock.close()
    if run.history:
        last = run.history[-1]
        epochs = f"{run.epoch} epoch{'s' * (run.epoch != 1)}"
        log(f"done: test error {last['test_error']:.2%} after {epochs}; results in {run.run_dir}")
    return run
