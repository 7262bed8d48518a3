"""Run directories: where a run's config, metrics and checkpoints live, and how they are reused.

Nothing is written until every input has been checked: choose_run_dir only looks, create_run_dir
(called once the config, data, backend and any checkpoint are known to be good) creates.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import stat
import time
from pathlib import Path

from .errors import UserError, WriteError, finite_number, printable, shown
from .files import atomic_write, output_dir

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
    output_dir(run_dir, (*RUN_FILES, LOCK))  # a run file that is a device, a FIFO, ...
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


def _rate(value) -> bool:
    return finite_number(value) and 0 <= value <= 1


# A metrics.jsonl record as loop.end_of_pass writes it: field -> (check, required). Other fields
# (the backend, the machine, an optimizer's own numbers) are kept as they are.
RECORD = {
    "epoch": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v < 2**31, True),
    "train_loss": (finite_number, True),
    "train_error": (_rate, True),
    "test_loss": (finite_number, True),
    "test_error": (_rate, True),
    "val_loss": (finite_number, False),
    "val_error": (_rate, False),
    "train_error_full": (_rate, False),
    "seconds": (finite_number, False),
    "eval_seconds": (finite_number, False),
    "samples_per_second": (finite_number, False),
}
MAX_METRICS = 16 << 20  # bytes of metrics.jsonl read (a record is ~500 bytes)


def check_record(record) -> str | None:
    """What is wrong with one metrics.jsonl record (a parsed line), or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not a record"
    for field, (check, required) in RECORD.items():
        if field not in record:
            if required:
                return f"no {field}"
        elif not (check(record[field]) or (not required and record[field] is None)):
            return f"{field} is {shown(record[field])}"
    return None


def read_metrics(run_dir, skipped: list | None = None) -> list[dict]:
    """The per-epoch records of a run, in increasing epochs. A line that is not a valid record
    (not UTF-8, not JSON, not an object, a field missing or out of range, an epoch out of
    order) is skipped, and "line N: why" appended to `skipped`."""
    path = metrics_path(Path(run_dir))
    skipped = [] if skipped is None else skipped
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                skipped.append("not a regular file")
                return []
            data = handle.read(MAX_METRICS + 1)
    except FileNotFoundError:
        return []
    except OSError as error:
        skipped.append(f"cannot read ({error.strerror or error})")
        return []
    if len(data) > MAX_METRICS:
        data = data[: data.rfind(b"\n", 0, MAX_METRICS) + 1]
        skipped.append(f"all after the first {MAX_METRICS >> 20} MB")
    records = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            record = json.loads(line.decode("utf-8"))
            problem = check_record(record)
        except UnicodeDecodeError:
            record, problem = None, "not UTF-8 text"
        except (ValueError, RecursionError):
            record, problem = None, "not JSON"
        if problem is None and records and record["epoch"] <= records[-1]["epoch"]:
            problem = f"epoch {record['epoch']} after epoch {records[-1]['epoch']}"
        if problem is None:
            records.append(record)
        elif line.strip():
            skipped.append(f"line {number}: {problem}")
    return records


def skipped_note(run_dir, skipped: list) -> str:
    """One line saying which lines of a run's metrics.jsonl were left out (read_metrics)."""
    shown_lines = "; ".join(printable(s, 60) for s in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return f"note: {metrics_path(Path(run_dir))}: skipped what is not a valid record ({shown_lines}{more})"


def truncate_metrics(run_dir, completed_epochs: int) -> list[str]:
    """Drop records of epochs after `completed_epochs` (written before a crash, redone on resume)
    and lines that are not valid records (read_metrics); returns what was skipped of the latter."""
    skipped = []
    records = [r for r in read_metrics(run_dir, skipped) if r["epoch"] <= completed_epochs]
    path = metrics_path(Path(run_dir))
    if path.is_file() or path.is_symlink():
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(path, lambda handle: handle.write(text.encode()))
    return skipped
