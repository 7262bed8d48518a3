"""Checkpoints: one .npz of plain arrays plus a JSON metadata string; no pickle, written atomically.

Layout: "param/<key>" (model parameters and constants), "opt/<key>" (optimizer state), and "meta"
(a 0-d unicode array holding JSON: format, epoch, step, config, partial-epoch sums, ...).
Loading uses numpy.load(allow_pickle=False), so a crafted file cannot run code; before a resume,
the metadata is checked against the run's configuration and every array against the shapes the
configured model and optimizer expect (check_resume, check_arrays).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy

from .backend import to_numpy

FORMAT = "lenet5x-checkpoint/1"
# what --resume may change: the rest of the configuration must be the checkpoint's own
RESUMABLE = ("train.epochs", "train.backend", "train.progress", "train.out", "data.dir")


class CheckpointError(Exception):
    """A checkpoint cannot be read or does not fit the model (one-line message)."""


def save_checkpoint(path, params: dict, opt_state: dict, meta: dict) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then rename over `path`.

    If anything fails (full disk, killed process) the previous file at `path` is untouched; an
    OSError naming `path` is raised (a killed process leaves only a stray ".checkpoint.npz.*.tmp").
    """
    path = Path(path)
    arrays = {f"param/{k}": to_numpy(v) for k, v in params.items()}
    arrays.update({f"opt/{k}": to_numpy(v) for k, v in opt_state.items()})
    arrays["meta"] = numpy.array(json.dumps({"format": FORMAT, **meta}))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            numpy.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path) -> tuple[dict, dict, dict]:
    """-> (params, optimizer state, meta), all host NumPy arrays / plain data."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoint.npz"
        if not candidate.exists():
            raise CheckpointError(
                f"{path}: a directory without a checkpoint.npz; pass a checkpoint file "
                "or a run directory"
            )
        path = candidate
    unreadable = (
        f"{path}: not a readable lenet5x checkpoint ({{}}); it is truncated or corrupted: "
        "start a new run (another --out) or put back a good copy"
    )
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror or error})") from None
    if head != b"PK\x03\x04":  # not a zip archive (numpy would then try it as a pickle)
        raise CheckpointError(
            unreadable.format("the file is empty" if not head else "not an .npz archive")
        )
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # an untrusted file: any failure to parse it is the file's fault
        if "pickle" in str(error):  # numpy's own message would suggest loading it unsafely
            raise CheckpointError(
                f"{path}: not a lenet5x checkpoint: it holds pickled Python objects, which "
                "are never loaded (they could run code)"
            ) from None
        message = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(unreadable.format(f"{type(error).__name__}: {message}")) from None
    if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].shape != ():
        raise CheckpointError(f"{path}: not a lenet5x checkpoint (no metadata)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: corrupted checkpoint metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {found!r} (expected {FORMAT})"
        )
    params = {k[len("param/") :]: v for k, v in arrays.items() if k.startswith("param/")}
    state = {k[len("opt/") :]: v for k, v in arrays.items() if k.startswith("opt/")}
    return params, state, meta


def _flat(tree, prefix="") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_resume(path, meta: dict, config: dict, steps: int) -> None:
    """The metadata fits this run: the same configuration (bar RESUMABLE) and a valid position.

    config: the run's Config.to_dict(); steps: mini-batches per epoch.
    """
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f"{path}: holds no configuration; it was not saved by a lenet5x training run"
        )
    saved, wanted = _flat(meta["config"]), _flat(config)
    keys = sorted(set(saved) | set(wanted))
    differ = [k for k in keys if k not in RESUMABLE and saved.get(k) != wanted.get(k)]
    if differ:
        key = differ[0]
        whose = "a different model" if key.startswith("model.") else "a run configured differently"
        raise CheckpointError(
            f"{path}: saved by {whose} ({key} is {saved.get(key)!r} there, "
            f"{wanted.get(key)!r} in config.yaml); was it copied from another run?"
        )
    epoch, step, partial = meta.get("epoch"), meta.get("step"), meta.get("partial")
    if not _count(epoch) or not _count(step) or step > steps:
        raise CheckpointError(
            f"{path}: corrupted position (epoch {epoch!r}, step {step!r} of {steps})"
        )
    sums = ("loss", "errors", "seen", "seconds")
    if step and not (
        isinstance(partial, dict)
        and all(_number(partial.get(k)) for k in sums)
        and partial["seen"] >= step
    ):
        raise CheckpointError(f"{path}: corrupted partial-epoch sums {partial!r}")
    best = meta.get("best_error")
    if best is not None and not _number(best):
        raise CheckpointError(f"{path}: corrupted best_error {best!r}")
    mu, retries = meta.get("sdlm_mu"), meta.get("damping_retries_left")
    if mu is not None and not (_number(mu) and mu > 0):
        raise CheckpointError(f"{path}: corrupted sdlm_mu {mu!r}")
    if retries is not None and not _count(retries):
        raise CheckpointError(f"{path}: corrupted damping_retries_left {retries!r}")
    last = meta.get("last_train_error")
    if last is not None and not (_number(last) and 0 <= last <= 1):
        raise CheckpointError(f"{path}: corrupted last_train_error {last!r}")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def state_shapes(optimizer: str, momentum: float, shapes: dict, trainable) -> dict:
    """Shapes of the optimizer state in a checkpoint (always saved after at least one step).

    shapes: parameter key -> shape; trainable: the keys that get gradients.
    """
    prefixes = {"sdlm": ("rate",), "sgd": ("velocity",) if momentum else (), "adam": ("m", "v")}[
        optimizer
    ]
    expected = {f"{p}/{k}": tuple(shapes[k]) for p in prefixes for k in trainable}
    if optimizer == "adam":
        expected["step"] = ()
    return expected


def check_arrays(path, loaded: dict, expected: dict, what: str = "parameters") -> None:
    """Every expected key (key -> shape) present with that shape, numbers, finite; no extra keys."""
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise CheckpointError(
            f"{path}: {what} do not match this model ({detail}); was it saved by another model?"
        )
    for key, shape in expected.items():
        got = loaded[key]
        if tuple(got.shape) != tuple(shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(got.shape)}, this model needs {tuple(shape)}; "
                "was it saved by another model?"
            )
        if got.dtype.kind not in "fiu":
            raise CheckpointError(f"{path}: {key} has dtype {got.dtype}, expected numbers")
        if got.dtype.kind == "f" and not numpy.all(numpy.isfinite(got)):
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values")


def check_constants(path, loaded: dict, own: dict) -> None:
    """The model's constants (C3's connection table, the RBF bitmaps: key -> array) exactly as built."""
    for key, value in own.items():
        if not numpy.array_equal(loaded[key], value):
            raise CheckpointError(
                f"{path}: {key} differs from this model's own; was it saved by another model?"
            )


def check_params(path, loaded: dict, expected: dict) -> None:
    """Parameters against the model's own (expected: key -> array): keys, shapes, finite numbers."""
    check_arrays(path, loaded, {k: tuple(v.shape) for k, v in expected.items()})
