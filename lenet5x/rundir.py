"""Run directories: where a run's config, metrics and checkpoints live, and how they are reused.

Nothing is written until every input has been checked: choose_run_dir only looks, create_run_dir
(called once the config, data, backend and any checkpoint are known to be good) creates.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
from pathlib import Path

from .errors import UserError, WriteError
from .files import atomic_write

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

RUN_FILES = ("checkpoint.npz", "metrics.jsonl", "config.yaml", "best.npz", "curves.png")
LOCK = ".lock"  # held (flock) by the process that trains in the directory


class RunDirError(UserError):
    """The run directory cannot be used (one-line message saying what to do)."""


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / "metrics.jsonl"


def choose_run_dir(out: str | None, name: str, resume: bool) -> Path:
    """The run directory, checked but not created.

    A fresh run never reuses a directory that already holds a run: that would overwrite its work.
    """
    run_dir = Path(out) if out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory; pass --out to another path")
    if not resume and (run_dir / "checkpoint.npz").exists():
        raise RunDirError(
            f"{run_dir}: already holds a run; continue it with --resume {run_dir} "
            "or choose another --out"
        )
    held = [f for f in RUN_FILES if (run_dir / f).exists()]
    if not resume and held:
        raise RunDirError(
            f"{run_dir}: already holds {held[0]} of a run that saved no checkpoint; "
            "remove it or choose another --out"
        )
    if resume and not (run_dir / "checkpoint.npz").exists():
        raise RunDirError(
            f"{run_dir}: no checkpoint.npz to resume from (the run stopped before its first "
            "checkpoint); start a new run with another --out"
        )
    existing = run_dir.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(
            f"cannot create run directory {run_dir}: {existing} is not a directory; "
            "pass --out to a writable directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(
            f"cannot write to {existing} (permission denied or read-only); "
            "pass --out to a writable directory"
        )
    return run_dir


def create_run_dir(run_dir: Path):
    """Create the run directory and lock it for this process; returns the open lock file, which
    holds the lock until it is closed or the process ends, however it ends (the OS releases it,
    so a killed run never leaves a stale lock). RunDirError if another process trains there."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / LOCK, "a+")
    except OSError as error:
        raise RunDirError(
            f"cannot create run directory {run_dir} ({error.strerror}); "
            "pass --out to a writable directory"
        ) from None
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise RunDirError(
            f"{run_dir}: a training run ({owner}) is running in this directory; wait for it "
            "to finish or stop it, or choose another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


@contextlib.contextmanager
def writing(run_dir: Path):
    """Turn an OSError while writing the run directory into a WriteError that says what is intact."""
    try:
        yield
    except OSError as error:
        checkpoint = run_dir / "checkpoint.npz"
        if checkpoint.exists():
            then = (
                f"the previous checkpoint {checkpoint} is intact: free some space, then continue with "
                f"python -m lenet5x.train --resume {shlex.quote(str(run_dir))}"
            )
        else:
            then = "no checkpoint had been written yet: free some space and start again with another --out"
        where = error.filename or run_dir
        raise WriteError(f"could not write {where} ({error.strerror or error}); {then}") from None


def read_metrics(run_dir) -> list[dict]:
    """The per-epoch records of a run (lines that do not parse are skipped)."""
    path = metrics_path(Path(run_dir))
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(run_dir, completed_epochs: int) -> None:
    """Drop records of epochs after `completed_epochs` (written before a crash, redone on resume)."""
    records = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= completed_epochs]
    path = metrics_path(Path(run_dir))
    if path.exists():
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(path, lambda handle: handle.write(text.encode()))
