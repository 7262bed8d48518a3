"""Train LeNet-5: python -m lenet5x.train [--config FILE] [--backend cupy] [--set key.path=value] ...

Reads top to bottom: configuration, run directory, backend, data, model, optimizer, then the
epoch loop (SDLM curvature, mini-batches, evaluation, metrics, checkpoints). A run directory holds
config.yaml (the resolved configuration), metrics.jsonl (one JSON object per epoch),
checkpoint.npz (latest, for --resume), best.npz (lowest validation or test error) and curves.png.

Every input (config, flags, data files, backend, checkpoint) is checked before anything is written.
Exit status: 0 done, 1 a write failed mid-run (disk full, I/O error; earlier files intact), 2 bad
input (one line on stderr), 3 the loss diverged, 130 interrupted (a checkpoint is saved).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy

from . import __version__
from .backend import BackendError, describe_device, keep_freed_host_memory, resolve, to_numpy
from .checkpoint import (
    CheckpointError,
    check_arrays,
    check_constants,
    check_resume,
    load_checkpoint,
    save_checkpoint,
    state_shapes,
)
from .cli import OneLineParser
from .config import Config, ConfigError, load_config, model_settings, save_config
from .data import DataError, DeviceData, load_dataset
from .data.distort import DistortionRanges, draw_inverse_maps, draw_pool_pass
from .evaluation import evaluate
from .model import build_model
from .optim import SDLM, make_optimizer, scheduled_rate
from .parallel import default_workers, one_blas_thread, single_threaded_blas
from .rundir import (
    RunDirError,
    WriteError,
    choose_run_dir,
    create_run_dir,
    metrics_path,
    truncate_metrics,
    writing,
)
from .step import TrainStep

# Independent random streams, all derived from the seed: a checkpoint's (epoch, step) is its RNG state.
STREAM_INIT, STREAM_SHUFFLE, STREAM_HESSIAN, STREAM_DISTORT, STREAM_DISTORT_POOL = 0, 1, 2, 3, 4
# a pass whose training error is above DEAD and over twice the last pass's: the network has died
DEAD = 0.5  # (chance is 90%)


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m lenet5x.train",
        description="Train LeNet-5 on MNIST. Without --config, trains the paper's LeNet-5 with SDLM "
        "(configs/lenet5.yaml).",
        epilog="Examples:\n  python -m lenet5x.train --backend cupy\n"
        "  python -m lenet5x.train --config configs/modern.yaml --epochs 5 --set train.batch_size=128\n"
        "  python -m lenet5x.train --resume runs/lenet5-20261123-101500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config (default: the paper's LeNet-5)"
    )
    parser.add_argument(
        "--backend", choices=["auto", "numpy", "cupy"], help="array backend (default: auto)"
    )
    parser.add_argument("--epochs", type=int, metavar="N", help="passes over the training set")
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help="patterns per update (1 = the paper's on-line SDLM)",
    )
    parser.add_argument(
        "--seed", type=int, help="seed for init, shuffles, Hessian samples and distortions"
    )
    parser.add_argument(
        "--dtype", choices=["float32", "float64"], help="compute precision (default float32)"
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory holding the IDX files (else $LENET5X_DATA_DIR, "
        "the user cache, or a download)",
    )
    parser.add_argument(
        "--out", metavar="RUN_DIR", help="run directory (default runs/<config>-<date-time>)"
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its checkpoint (--epochs may extend it)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override any config entry, e.g. --set optimizer.mu=0.05 (repeatable)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (one line per epoch only)"
    )
    return parser.parse_args(argv)


def resolve_config(args) -> tuple[Config, str]:
    """The run's configuration and a name for it, from --resume or --config plus flags."""
    flags = []
    for flag, key in (
        ("epochs", "train.epochs"),
        ("batch_size", "train.batch_size"),
        ("seed", "train.seed"),
        ("dtype", "train.dtype"),
        ("backend", "train.backend"),
        ("data_dir", "data.dir"),
        ("out", "train.out"),
    ):
        value = getattr(args, flag)
        if value is not None:
            flags.append(f"{key}={json.dumps(value)}")
    if args.no_progress:
        flags.append("train.progress=false")
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise RunDirError(f"{run_dir}: not a run directory (no config.yaml); nothing to resume")
        changing = [
            f
            for f in (args.config, args.batch_size, args.seed, args.dtype, args.out)
            if f is not None
        ]
        if changing or args.overrides:
            raise ConfigError(
                "--resume continues a run as configured: only --epochs, --backend, --data-dir "
                "and --no-progress may be given with it"
            )
        flags = [f for f in flags if not f.startswith("train.out=")] + [
            f"train.out={json.dumps(str(run_dir))}"
        ]
        return load_config(run_dir / "config.yaml", flags), run_dir.name
    name = Path(args.config).stem if args.config else "lenet5"
    return load_config(args.config, [*flags, *args.overrides]), name


def pass_order(seed: int, epoch: int, n: int, shuffle: str) -> numpy.ndarray:
    """The order (n,) in which pass `epoch` presents the training patterns: a new permutation
    each pass ("every_pass"), or the same one every pass ("once", sec. III-B)."""
    return numpy.random.default_rng(
        [seed, STREAM_SHUFFLE, 0 if shuffle == "once" else epoch]
    ).permutation(n)


def pass_patterns(
    seed: int, epoch: int, n: int, shuffle: str, ranges: DistortionRanges | None, pool_maps=None
) -> tuple[numpy.ndarray, numpy.ndarray | None]:
    """Pass `epoch`'s training patterns in the order presented: image indices (n,) and their
    inverse affine maps (n, 6) (data/distort.py), or None without distortions (ranges None).

    Without a pool (pool_maps None) every image once, in pass_order, each distorted afresh with
    probability ranges.probability. With the paper's fixed pool (pool_maps (P, 6)), n patterns
    drawn from the n originals and the P copies (draw_pool_pass).
    """
    if pool_maps is not None:
        return draw_pool_pass(
            numpy.random.default_rng([seed, STREAM_DISTORT_POOL, epoch]), pool_maps, n
        )
    order = pass_order(seed, epoch, n, shuffle)
    if ranges is None:
        return order, None
    maps = draw_inverse_maps(numpy.random.default_rng([seed, STREAM_DISTORT, epoch]), n, ranges)
    return order, maps[order]


def layer_rate_summary(rates: dict) -> dict:
    """SDLM per-parameter rates -> {layer: [mean, min, max]} (host floats)."""
    per_layer: dict[str, list] = {}
    for key, value in rates.items():
        per_layer.setdefault(key.split(".", 1)[0], []).append(to_numpy(value).reshape(-1))
    return {
        layer: [float(v.mean()), float(v.min()), float(v.max())]
        for layer, parts in per_layer.items()
        for v in [numpy.concatenate(parts)]
    }


class StopRequest:
    """SIGINT/SIGTERM set a flag checked between steps; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def run(args) -> int:
    # -- configuration and run directory (checked here, written only once every input is) ---------
    config, name = resolve_config(args)
    t = config.train
    run_dir = choose_run_dir(t.out, name, resume=bool(args.resume))
    say = print

    # -- backend, data, model, optimizer ---------------------------------------------------------
    backend = resolve(t.backend, t.dtype)
    if backend.note:
        say(backend.note)
    if backend.name == "numpy":
        keep_freed_host_memory()
    xp = backend.xp
    d = config.data
    host = load_dataset(
        d.dataset,
        d.dir,
        d.input_size,
        d.normalize,
        d.train_subset,
        d.test_subset,
        d.validation_size,
        d.validation_seed,
        log=say,
    )
    train = DeviceData(backend, host.train_images, host.train_labels, host.scale, host.offset)
    test = DeviceData(backend, host.test_images, host.test_labels, host.scale, host.offset)
    val = (
        DeviceData(backend, host.validation_images, host.validation_labels, host.scale, host.offset)
        if host.validation_images is not None
        else None
    )
    if t.batch_size > len(train):
        raise ConfigError(
            f"train.batch_size: {t.batch_size} is larger than the training set ({len(train)} images)"
        )

    model = build_model(model_settings(config))
    params = model.init(numpy.random.default_rng([t.seed, STREAM_INIT]), backend)
    o = config.optimizer
    if o.name == "sdlm":
        optimizer = SDLM(o.schedule, mu=o.mu, hessian_samples=o.hessian_samples)
    elif o.name == "sgd":
        optimizer = make_optimizer(
            "sgd", o.schedule, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
        )
    else:
        optimizer = make_optimizer(
            "adam", o.schedule, beta1=o.beta1, beta2=o.beta2, eps=o.eps, weight_decay=o.weight_decay
        )
    state = optimizer.init_state(params)
    retries_left, last_train_error = o.damping_retries, None
    workers = 1 if model.has_state else t.workers or default_workers(backend.name, t.batch_size)
    # scoring has no batch statistics to share and its own batch size: its own threads
    eval_workers = t.workers or default_workers(backend.name, t.eval_batch_size)

    def scores(params, data):
        with single_threaded_blas(eval_workers > 1):
            return evaluate(model, params, data, t.eval_batch_size, eval_workers)

    steps = math.ceil(len(train) / t.batch_size)
    start_epoch, start_step, partial = 0, 0, {"loss": 0.0, "errors": 0, "seen": 0, "seconds": 0.0}
    best_error = math.inf
    if args.resume:  # no pickle; the metadata and every array are checked against this run first
        ckpt = run_dir / "checkpoint.npz"
        loaded_params, loaded_state, meta = load_checkpoint(ckpt)
        check_resume(ckpt, meta, config.to_dict(), steps)
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        check_arrays(ckpt, loaded_params, shapes)
        check_constants(
            ckpt,
            loaded_params,
            {k: to_numpy(v) for k, v in model.constants(params).items()},
        )
        check_arrays(
            ckpt,
            loaded_state,
            state_shapes(o.name, o.momentum, shapes, model.trainable_keys),
            what=f"{o.name} optimizer arrays",
        )
        params = {k: backend.asarray(v, dtype=params[k].dtype) for k, v in loaded_params.items()}
        state = {k: backend.asarray(v) for k, v in loaded_state.items()}
        start_epoch, start_step = meta["epoch"], meta["step"]
        if isinstance(optimizer, SDLM):  # the damping in force when the checkpoint was written
            optimizer.mu = meta.get("sdlm_mu") or optimizer.mu
            retries_left = meta.get("damping_retries_left", retries_left)
        last_train_error = meta.get("last_train_error")
        partial = meta["partial"] if start_step else partial
        best_error = math.inf if meta.get("best_error") is None else meta["best_error"]
        if start_epoch >= t.epochs:
            done = f"{start_epoch} epoch{'s' * (start_epoch != 1)}"
            raise ConfigError(
                f"{run_dir}: already trained for {done}; pass --epochs N with N > "
                f"{start_epoch} to train it further"
            )

    with writing(run_dir):
        create_run_dir(run_dir)
        save_config(config, run_dir / "config.yaml")
        if args.resume:
            truncate_metrics(run_dir, start_epoch)
            say(f"resuming {run_dir} at epoch {start_epoch + 1}, step {start_step}")

    machine = describe_device(backend)
    n_params = sum(model.parameter_count(params).values())
    say(
        f"{model.description}: {n_params:,} trainable parameters | {backend.name} {t.dtype} | "
        f"{len(train):,} train / {len(test):,} test{f' / {len(val):,} validation' if val else ''} | "
        f"{o.name} | batch {t.batch_size} | {workers} worker{'s' if workers > 1 else ''} | run dir {run_dir}"
    )

    def checkpoint_meta(epoch, step, partial_sums):
        return {
            "epoch": epoch,
            "step": step,
            "partial": partial_sums,
            "config": config.to_dict(),
            "best_error": None if math.isinf(best_error) else best_error,
            "version": __version__,
            "description": model.description,
            "input_scale": host.scale,
            "input_offset": host.offset,
            "sdlm_mu": optimizer.mu if isinstance(optimizer, SDLM) else None,
            "damping_retries_left": retries_left,
            "last_train_error": last_train_error,
        }

    # -- the epoch loop ---------------------------------------------------------------------------
    ranges = DistortionRanges(
        **{f.name: getattr(d.distortions, f.name) for f in dataclasses.fields(DistortionRanges)}
    )
    with (
        StopRequest() as stop,
        single_threaded_blas(one_blas_thread(backend.name, workers, t.batch_size)),
        warnings.catch_warnings(),
    ):
        # a diverging run overflows: the loss check below says so once, not NumPy on every op
        warnings.filterwarnings(
            "ignore", "(overflow|invalid value|divide by zero) encountered", RuntimeWarning
        )
        pool_maps = None
        if d.distortions.enabled and d.distortions.pool:  # drawn once: the same pool every pass
            pool_maps = draw_inverse_maps(
                numpy.random.default_rng([t.seed, STREAM_DISTORT_POOL]),
                d.distortions.pool,
                dataclasses.replace(ranges, probability=1.0),
            )
        epoch, redo = start_epoch, False
        while epoch < t.epochs:
            order, maps = pass_patterns(
                t.seed,
                epoch,
                len(train),
                t.shuffle,
                ranges if d.distortions.enabled else None,
                pool_maps,
            )
            order_dev = backend.asarray(order, dtype=xp.int64)
            maps_dev = None if maps is None else backend.asarray(maps)
            train_step = TrainStep(model, optimizer, train, workers, host.background)

            step = 0 if epoch > start_epoch or redo else start_step
            if step == 0:
                partial = {"loss": 0.0, "errors": 0, "seen": 0, "seconds": 0.0}
            pass_start = (params, state) if step == 0 else None  # arrays are never changed in place
            redo = False
            rate_log = None
            if isinstance(optimizer, SDLM) and step == 0:
                # re-estimate h_kk on `hessian_samples` random training patterns before each pass
                pick = numpy.random.default_rng([t.seed, STREAM_HESSIAN, epoch]).choice(
                    len(train), min(o.hessian_samples, len(train)), replace=False
                )
                x_h, y_h = train.batch(backend.asarray(pick, dtype=xp.int64))
                state = optimizer.set_curvature(
                    state, model.hessian_diagonal(params, x_h, y_h), epoch
                )
            if isinstance(optimizer, SDLM):
                rate_log = layer_rate_summary(SDLM.rates(state))

            loss_acc = xp.zeros(
                (), dtype=backend.dtype, device=backend.device
            )  # summed on the device:
            err_acc = xp.zeros((), dtype=xp.int64, device=backend.device)  # no host sync per step
            seen = 0
            bar = progress_bar(t.progress, steps, step, f"epoch {epoch + 1}/{t.epochs}")
            t0 = time.perf_counter()
            while step < steps:
                idx = order_dev[step * t.batch_size : (step + 1) * t.batch_size]
                batch = int(idx.shape[0])
                batch_maps = None
                if maps_dev is not None:
                    batch_maps = maps_dev[step * t.batch_size : (step + 1) * t.batch_size, :]
                params, state, total, errors = train_step(params, state, idx, epoch, batch_maps)
                loss_acc = loss_acc + total
                err_acc = err_acc + errors
                step += 1
                seen += batch
                if step % 20 == 0 or step == steps or stop.requested:
                    running = float(to_numpy(loss_acc))
                    if not math.isfinite(running):
                        bar.close()
                        return diverged(run_dir, epoch, step)
                    bar.update(step - bar.n)
                    bar.set_postfix_str(
                        f"loss {(partial['loss'] + running) / (partial['seen'] + seen):.4f} "
                        f"{seen / max(time.perf_counter() - t0, 1e-9):,.0f} samples/s"
                    )
                if stop.requested:
                    bar.close()
                    sums = {
                        "loss": partial["loss"] + float(to_numpy(loss_acc)),
                        "errors": partial["errors"] + int(to_numpy(err_acc)),
                        "seen": partial["seen"] + seen,
                        "seconds": partial["seconds"] + time.perf_counter() - t0,
                    }
                    with writing(run_dir):
                        save_checkpoint(
                            run_dir / "checkpoint.npz",
                            params,
                            state,
                            checkpoint_meta(epoch, step, sums),
                        )
                    print(
                        f"interrupted in epoch {epoch + 1} at step {step}/{steps}; checkpoint saved. "
                        f"Resume with: python -m lenet5x.train --resume {shlex.quote(str(run_dir))}",
                        file=sys.stderr,
                    )
                    return 130
            bar.close()
            train_step.close()
            backend.synchronize()
            seconds = partial["seconds"] + time.perf_counter() - t0
            seen += partial["seen"]
            train_loss = (partial["loss"] + float(to_numpy(loss_acc))) / seen
            train_error = (partial["errors"] + int(to_numpy(err_acc))) / seen
            died = (
                last_train_error is not None
                and train_error > DEAD
                and train_error > 2 * last_train_error
            )
            if isinstance(optimizer, SDLM) and died and pass_start and retries_left:
                # Levenberg-Marquardt's own remedy for a failed step: more damping, same step again
                retries_left -= 1
                params, state = pass_start
                optimizer.mu *= 10
                say(
                    f"epoch {epoch + 1}: training error {train_error:.1%}, the network died; "
                    f"redoing this epoch from its start with SDLM damping mu = {optimizer.mu:g}"
                )
                redo = True
                continue

            # -- evaluation, metrics, checkpoints ---------------------------------------------------
            t1 = time.perf_counter()
            test_scores = scores(params, test)
            record = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_error": train_error,
                "test_loss": test_scores.loss,
                "test_error": test_scores.error,
            }
            if val is not None:
                val_scores = scores(params, val)
                record.update(val_loss=val_scores.loss, val_error=val_scores.error)
            if t.full_train_eval:
                record["train_error_full"] = scores(params, train).error
            record.update(
                seconds=seconds,
                eval_seconds=time.perf_counter() - t1,
                samples_per_second=len(train) / seconds,
                backend=backend.name,
                dtype=t.dtype,
                machine=machine,
            )
            if rate_log is not None:
                record["sdlm_rates"] = rate_log
                record["eta"] = scheduled_rate(o.schedule, epoch)
                record["sdlm_mu"] = optimizer.mu
            selection = record.get("val_error", record["test_error"])
            improved = selection < best_error
            if improved:
                best_error = selection
            last_train_error = train_error
            meta = checkpoint_meta(epoch + 1, 0, None)
            with writing(
                run_dir
            ):  # best.npz first: if a write fails, the epoch is redone on --resume
                with open(metrics_path(run_dir), "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if improved:
                    save_checkpoint(run_dir / "best.npz", params, state, meta)
                save_checkpoint(run_dir / "checkpoint.npz", params, state, meta)
            print_epoch(record, t.epochs, improved, rate_log)
            draw_curves(run_dir)
            epoch += 1
    say(
        f"done: test error {record['test_error']:.2%} after {t.epochs} epochs; results in {run_dir}"
    )
    return 0


def diverged(run_dir: Path, epoch: int, step: int) -> int:
    kept = (
        "the last good checkpoint is kept at " + str(run_dir / "checkpoint.npz")
        if (run_dir / "checkpoint.npz").exists()
        else "no checkpoint had been written yet"
    )
    print(
        f"error: the loss became NaN or infinite in epoch {epoch + 1} (by step {step}); the run stopped and "
        f"{kept}. Lower the learning rate (optimizer.schedule) or check the data.",
        file=sys.stderr,
    )
    return 3


def progress_bar(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="batch",
        leave=False,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def print_epoch(record: dict, epochs: int, improved: bool, rate_log) -> None:
    parts = [
        f"epoch {record['epoch']:>2}/{epochs}",
        f"loss {record['train_loss']:.4f}",
        f"train err {record['train_error']:.2%}",
    ]
    if "train_error_full" in record:
        parts.append(f"(full {record['train_error_full']:.2%})")
    if "val_error" in record:
        parts.append(f"val err {record['val_error']:.2%}")
    parts += [
        f"test err {record['test_error']:.2%}{' *' if improved else ''}",
        f"{record['seconds']:.1f} s ({record['samples_per_second']:,.0f}/s)",
    ]
    print("  ".join(parts), flush=True)
    if rate_log:
        overall_min = min(v[1] for v in rate_log.values())
        overall_max = max(v[2] for v in rate_log.values())
        layers = " ".join(f"{k} {v[0]:.1e}" for k, v in rate_log.items())
        print(
            f"    SDLM rates: min {overall_min:.1e} max {overall_max:.1e} | layer means: {layers}",
            flush=True,
        )


def draw_curves(run_dir: Path) -> None:
    """curves.png in the run directory, when matplotlib is installed (the `plots` extra)."""
    try:
        from .plots import plot_runs
    except ImportError:
        return
    try:
        plot_runs([run_dir], run_dir / "curves.png")
    except ImportError:
        pass
    except (
        OSError
    ) as error:  # the pictures are optional; a full disk shows up at the next checkpoint
        print(
            f"warning: could not draw {run_dir / 'curves.png'} ({error.strerror or error})",
            file=sys.stderr,
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ConfigError, DataError, BackendError, CheckpointError, RunDirError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except WriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
