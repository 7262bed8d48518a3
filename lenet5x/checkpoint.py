"""Checkpoints: one .npz of plain arrays plus a JSON metadata string; no pickle, written atomically.

Layout: "param/<key>" (model parameters and constants), "opt/<key>" (optimizer state), and "meta"
(a 0-d unicode array holding JSON: format, epoch, step, config, partial-epoch sums, ...).
Loading uses numpy.load(allow_pickle=False), so a crafted file cannot run code; every array is
then checked against what the configured model expects before it is used.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy

from .backend import to_numpy

FORMAT = "lenet5x-checkpoint/1"


class CheckpointError(Exception):
    """A checkpoint cannot be written, read, or does not fit the model (one-line message)."""


def save_checkpoint(path, params: dict, opt_state: dict, meta: dict) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then rename over `path`.

    If anything fails (full disk, killed process) the previous file at `path` is untouched.
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
        raise CheckpointError(
            f"could not write checkpoint {path} ({error.strerror or error}); the previous checkpoint is intact"
        ) from None
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
            raise CheckpointError(f"{path}: no checkpoint.npz in this directory")
        path = candidate
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as error:
        raise CheckpointError(f"{path}: not a readable lenet5x checkpoint ({type(error).__name__}: {error})") from None
    if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].shape != ():
        raise CheckpointError(f"{path}: not a lenet5x checkpoint (no metadata)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupted checkpoint metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    params = {k[len("param/") :]: v for k, v in arrays.items() if k.startswith("param/")}
    state = {k[len("opt/") :]: v for k, v in arrays.items() if k.startswith("opt/")}
    return params, state, meta


def check_params(path, loaded: dict, expected: dict) -> None:
    """Every expected key present with the same shape and a float/int kind; no extra keys."""
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise CheckpointError(f"{path}: parameters do not match this model ({detail}); was it saved by another model?")
    for key, value in expected.items():
        got = loaded[key]
        if tuple(got.shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(got.shape)}, this model needs {tuple(value.shape)}; "
                "was it saved by another model?"
            )
        if got.dtype.kind not in "fiu":
            raise CheckpointError(f"{path}: {key} has dtype {got.dtype}, expected numbers")
        if got.dtype.kind == "f" and not numpy.all(numpy.isfinite(got)):
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values")
