"""Checkpoints: one .npz of plain arrays plus a JSON metadata string; no pickle, written atomically.

Layout: "param/<key>" (model parameters and constants), "opt/<key>" (the optimizer state's
arrays), and "meta" (a 0-d unicode array holding JSON: format, epoch, step, config, the dataset,
partial-epoch sums, and under "optimizer" the state's host numbers, such as SDLM's damping mu).
Loading uses numpy.load(allow_pickle=False), so a crafted file cannot run code; before a resume,
the metadata is checked against the run's configuration and every array against the shapes the
configured model and optimizer expect (check_resume, check_arrays).
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy

from . import __version__
from .backend import to_numpy
from .data.sources import DATASETS, FILES
from .errors import UserError, finite_number, printable, shown
from .files import atomic_write

FORMAT = "lenet5x-checkpoint/2"
OLD_FORMAT = "lenet5x-checkpoint/1"  # before the optimizer's host numbers moved into "optimizer"
# what --resume may change: the rest of the configuration must be the checkpoint's own
RESUMABLE = (
    "train.epochs", "train.backend", "train.device", "train.compile", "train.progress", "train.out",
    "data.dir",
)  # fmt: skip


class CheckpointError(UserError):
    """A checkpoint cannot be read or does not fit the model (one-line message)."""


def save_checkpoint(path, params: dict, opt_state: dict, meta: dict, compressed=False) -> None:
    """Write atomically (files.atomic_write): a failure leaves the previous file at `path` as it
    was and raises an OSError naming `path`. opt_state's arrays go to "opt/<key>", its host
    numbers (int, float, None) to meta["optimizer"]. compressed: zip-deflated (shipped weights)."""
    arrays = {f"param/{k}": to_numpy(v) for k, v in params.items()}
    scalars = {k: v for k, v in opt_state.items() if v is None or isinstance(v, (int, float))}
    arrays.update({f"opt/{k}": to_numpy(v) for k, v in opt_state.items() if k not in scalars})
    arrays["meta"] = numpy.array(json.dumps({"format": FORMAT, **meta, "optimizer": scalars}))
    save = numpy.savez_compressed if compressed else numpy.savez
    atomic_write(path, lambda handle: save(handle, **arrays))


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
    if not head:
        raise CheckpointError(unreadable.format("the file is empty"))
    if head != b"PK\x03\x04" and path.suffix != ".npz":  # another kind of file altogether
        raise CheckpointError(
            f"{path}: not a lenet5x checkpoint (not an .npz archive); the tools take a run "
            "directory, its .npz checkpoint or a shipped network's name"
        )
    if head != b"PK\x03\x04":  # not a zip archive (numpy would then try it as a pickle)
        raise CheckpointError(unreadable.format("not an .npz archive"))
    try:
        problem = _too_large(path)
        if problem:
            raise CheckpointError(unreadable.format(problem))
        with numpy.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except CheckpointError:
        raise
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
    check_meta(path, meta)
    params = {k[len("param/") :]: v for k, v in arrays.items() if k.startswith("param/")}
    state = {k[len("opt/") :]: v for k, v in arrays.items() if k.startswith("opt/")}
    if meta["format"] == OLD_FORMAT:
        meta["optimizer"] = _old_scalars(meta, state)
    if not isinstance(meta.get("optimizer"), dict):
        raise CheckpointError(f"{path}: corrupted checkpoint metadata (no optimizer state)")
    return params, {**state, **meta["optimizer"]}, meta


# -- the metadata, validated whole before any of it is used ----------------------------------------


def _count(value) -> bool:
    """A count of epochs or steps (bounded: a 5,000-digit one could not even be printed)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def _fraction(value) -> bool:
    """An error rate."""
    return finite_number(value) and 0 <= value <= 1


def _text(value) -> bool:
    return isinstance(value, str) and len(value) <= 200 and value.isprintable()


def _sums(value) -> bool:
    """A pass's partial sums so far (loop.NO_SUMS's keys): finite numbers, the counts and the
    time >= 0 (the loss may be negative: the MAP criterion's log term, eq. 9, goes to -j)."""
    return (
        isinstance(value, dict)
        and set(value) == {"loss", "errors", "seen", "seconds"}
        and all(finite_number(v) for v in value.values())
        and all(value[k] >= 0 for k in ("errors", "seen", "seconds"))
    )


def _plain(value, depth: int = 8) -> bool:
    """JSON data no deeper than `depth` containers and no larger than a config: a saved
    configuration's shape (its values are checked by config.load_config when it is used). The
    deepest a config goes is a network spelled out in it: config > model > architecture > layers >
    a layer > its table > a row (7)."""
    if value is None or isinstance(value, (bool, int, float)):
        return not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, str):
        return len(value) <= 4096
    if isinstance(value, (list, dict)) and depth > 0 and len(value) <= 100:
        items = value.values() if isinstance(value, dict) else value
        return all(_plain(v, depth - 1) for v in items)
    return False


def _config(value) -> bool:
    """The run's configuration: sections (mappings) of plain values."""
    return (
        isinstance(value, dict)
        and all(isinstance(v, dict) for v in value.values())
        and _plain(value)
    )


def _identity(value) -> bool:
    """What data/loading.check_identity records: {"name", "verified", "sha256": {stem: hex}}."""
    return (
        isinstance(value, dict)
        and set(value) == {"name", "verified", "sha256"}
        and value["name"] in DATASETS
        and isinstance(value["verified"], bool)
        and isinstance(value["sha256"], dict)
        and set(value["sha256"]) <= set(FILES)
        and all(_sha256(v) for v in value["sha256"].values())
    )


def _sha256(value) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _host_numbers(value) -> bool:
    """An optimizer's host numbers (Optimizer.scalars: key -> a finite number or null)."""
    return (
        isinstance(value, dict)
        and len(value) <= 16
        and all(_text(k) and (v is None or finite_number(v)) for k, v in value.items())
    )


BOOSTING = {
    "threshold": lambda v: finite_number(v) and v >= 0,
    "gate_share": _fraction,
    "gate_cost_ratio": lambda v: finite_number(v) and 1 <= v <= 3,
    "test_share": _fraction,
    "test_cost_ratio": lambda v: finite_number(v) and 1 <= v <= 3,
    "net_test_errors": lambda v: isinstance(v, list) and len(v) == 3 and all(map(_fraction, v)),
}


def _boosting(value) -> bool:
    """What boosting.finish records of a boosted ensemble: BOOSTING's keys, each in range."""
    return (
        isinstance(value, dict)
        and set(value) == set(BOOSTING)
        and all(check(value[k]) for k, check in BOOSTING.items())
    )


def _or_null(check):
    return lambda value: value is None or check(value)


# key -> (the check its value must pass, what it must be): every key a writer puts in a
# checkpoint's metadata (loop.meta, export.export, save_checkpoint). A new key is one line here.
META = {
    "format": (lambda v: v in (FORMAT, OLD_FORMAT), f"{FORMAT!r}"),
    "epoch": (_or_null(_count), "the epochs done, an integer >= 0"),
    "step": (_or_null(_count), "the steps done in the next epoch, an integer >= 0"),
    "partial": (_or_null(_sums), "null or the pass's sums so far (loss, errors, seen, seconds)"),
    "config": (_config, "the run's configuration, a mapping of sections"),
    "best_error": (_or_null(_fraction), "null or an error rate in [0, 1]"),
    "test_error": (_or_null(_fraction), "null or an error rate in [0, 1]"),
    "version": (_or_null(_text), "the lenet5x version that wrote it"),
    "description": (_or_null(_text), "a one-line description of the model"),
    "name": (_or_null(_text), "the name it is loaded by"),
    "source": (_or_null(_text), "the run it was exported from"),
    "input_scale": (
        _or_null(lambda v: finite_number(v) and 0 < v <= 1e3),
        "null or a number in (0, 1000]",
    ),
    "input_offset": (
        _or_null(lambda v: finite_number(v) and abs(v) <= 1e3),
        "null or a number in [-1000, 1000]",
    ),
    "dataset": (_or_null(_identity), "null or the data it was trained on (name, verified, sha256)"),
    "optimizer": (_host_numbers, "the optimizer's host numbers (name -> a finite number or null)"),
    # the refusal thresholds export.py chooses (rejection.py); all null or none
    "reject_margin": (_or_null(lambda v: finite_number(v) and v >= 0), "null or a number >= 0"),
    "reject_target_error": (_or_null(_fraction), "null or an error rate in [0, 1]"),
    "reject_validation_size": (_or_null(_count), "null or an integer >= 0"),
    "reject_validation_share": (_or_null(_fraction), "null or a share in [0, 1]"),
    "not_digit_distance": (_or_null(lambda v: finite_number(v) and v > 0), "null or a number > 0"),
    "not_digit_quantile": (_or_null(_fraction), "null or a quantile in [0, 1]"),
    # a boosted ensemble's gate and measures (boosting.py)
    "boosting": (_or_null(_boosting), "null or the gate's threshold, shares and cost ratios"),
    # lenet5x-checkpoint/1 kept SDLM's host numbers at the top level
    "sdlm_mu": (_or_null(finite_number), "null or a finite number"),
    "damping_retries_left": (_or_null(_count), "null or an integer >= 0"),
    "last_train_error": (_or_null(finite_number), "null or a finite number"),
}
REQUIRED = {FORMAT: ("format", "optimizer"), OLD_FORMAT: ("format",)}
TOGETHER = (
    ("reject_margin", "reject_target_error", "reject_validation_size", "reject_validation_share"),
    ("not_digit_distance", "not_digit_quantile"),
)


def check_meta(path, meta) -> None:
    """A checkpoint's metadata, whole, before any of it is used: a mapping of known keys (META),
    each value of the type and range its check wants (finite numbers, known datasets, ...).
    Raises CheckpointError with one line naming the first key that fails."""
    version = meta.get("format") if isinstance(meta, dict) else None
    if not isinstance(version, str) or version not in REQUIRED:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {shown(found)} (expected {FORMAT})"
        )
    for key in REQUIRED[meta["format"]]:
        if key not in meta:
            raise CheckpointError(f"{path}: corrupted checkpoint metadata (no {key})")
    for key, value in meta.items():
        if key not in META:
            raise CheckpointError(
                f"{path}: unknown checkpoint metadata {printable(key, 40)!r}; it was not written "
                f"by this lenet5x ({__version__}): a newer version, or an altered file"
            )
        check, wanted = META[key]
        if not check(value):
            raise CheckpointError(
                f"{path}: corrupted checkpoint metadata: {key} is {shown(value)}, expected {wanted}"
            )
    for threshold, *how in TOGETHER:  # a threshold is used only with how it was chosen
        missing = [key for key in how if meta.get(key) is None]
        if meta.get(threshold) is not None and missing:
            raise CheckpointError(
                f"{path}: corrupted checkpoint metadata: {threshold} without {missing[0]}"
            )


# The most a checkpoint may unpack to: LeNet-5's is 0.5 MB (with Adam's moments, 1.5 MB).
MAX_UNPACKED = 64 << 20


def _too_large(path) -> str | None:
    """What makes the archive unpack to more than MAX_UNPACKED bytes (a "zip bomb"), or a member
    array promise more data than the member holds, or None: checked before anything is read."""
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        total = sum(m.file_size for m in members)
        if total > MAX_UNPACKED:
            return f"it unpacks to {total} bytes, far more than a LeNet-5 checkpoint"
        for member in members:  # numpy reads any member that starts as an .npy does, any name
            with archive.open(member) as handle:
                if handle.read(6) != b"\x93NUMPY":
                    continue
            with archive.open(member) as handle:
                version = numpy.lib.format.read_magic(handle)
                read_header = {(1, 0): numpy.lib.format.read_array_header_1_0}.get(
                    version, numpy.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(handle)
            if math.prod(shape) * dtype.itemsize > member.file_size:
                return f"{member.filename} promises {shape} {dtype}, more than it holds"
    return None


def _old_scalars(meta: dict, state: dict) -> dict:
    """The optimizer's host numbers of a lenet5x-checkpoint/1 file, which kept SDLM's in the
    metadata and Adam's step count as the array "step"."""
    if "step" in state:
        steps = state.pop("step")
        return {"steps": int(steps) if steps.shape == () and steps.dtype.kind in "fiu" else None}
    if meta.get("sdlm_mu") is not None:
        return {
            "mu": meta["sdlm_mu"],
            "retries_left": meta.get("damping_retries_left"),
            "last_train_error": meta.get("last_train_error"),
        }
    return {}


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
    saved, wanted = _flat(with_new_sections(meta["config"])), _flat(config)
    keys = sorted(set(saved) | set(wanted))
    differ = [k for k in keys if k not in RESUMABLE and saved.get(k) != wanted.get(k)]
    if differ:
        key = differ[0]
        whose = "a different model" if key.startswith("model.") else "a run configured differently"
        raise CheckpointError(
            f"{path}: saved by {whose} ({key} is {shown(saved.get(key))} there, "
            f"{shown(wanted.get(key))} in config.yaml); was it copied from another run?"
        )
    epoch, step, partial = meta.get("epoch"), meta.get("step"), meta.get("partial")
    if not _count(epoch) or not _count(step) or step > steps:
        raise CheckpointError(
            f"{path}: corrupted position (epoch {shown(epoch)}, step {shown(step)} of {steps})"
        )
    sums = ("loss", "errors", "seen", "seconds")
    if step and not (
        isinstance(partial, dict)
        and all(finite_number(partial.get(k)) for k in sums)
        and partial["seen"] >= step
    ):
        raise CheckpointError(f"{path}: corrupted partial-epoch sums {shown(partial)}")
    best = meta.get("best_error")
    if best is not None and not finite_number(best):
        raise CheckpointError(f"{path}: corrupted best_error {shown(best)}")


def with_new_sections(saved: dict) -> dict:
    """A saved configuration with the sections it predates (boosting) at their defaults, as
    load_config reads it: a run saved before a section existed resumes as it was."""
    from .config import Config

    return {**{k: v for k, v in Config().to_dict().items() if k not in saved}, **saved}


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


def check_state(path, optimizer, loaded: dict, shapes: dict, name: str) -> None:
    """A checkpoint's optimizer state against what `optimizer` keeps: its arrays (key -> the
    shapes of the trainable parameters, `shapes`) and its host numbers (Optimizer.scalars)."""
    arrays = {k: v for k, v in loaded.items() if k not in optimizer.scalars}
    expected = optimizer.state_shapes(shapes)
    check_arrays(path, arrays, expected, what=f"{name} optimizer arrays")
    problem = optimizer.check_scalars({k: loaded.get(k) for k in optimizer.scalars})
    if problem:
        raise CheckpointError(f"{path}: {problem}")
