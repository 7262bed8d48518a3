"""Run directories: where a run's config, metrics and checkpoints live, and how they are reused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class RunDirError(Exception):
    """The run directory cannot be used (one-line message saying what to do)."""


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / "metrics.jsonl"


def prepare_run_dir(out: str | None, name: str, resume: bool) -> Path:
    """Create (or, resuming, reuse) the run directory and check it is writable.

    A fresh run never reuses a directory that already holds a run: that would overwrite its work.
    """
    run_dir = Path(out) if out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory; pass --out to another path")
    if not resume and any((run_dir / f).exists() for f in ("checkpoint.npz", "metrics.jsonl", "config.yaml")):
        raise RunDirError(f"{run_dir}: already holds a run; continue it with --resume {run_dir} "
                          "or choose another --out")
    if resume and not (run_dir / "checkpoint.npz").exists():
        raise RunDirError(f"{run_dir}: no checkpoint.npz to resume from")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirError(f"cannot create run directory {run_dir} ({error.strerror}); pass --out to a writable directory") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write to run directory {run_dir} (permission denied); pass --out to a writable directory")
    return run_dir


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
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        os.replace(tmp, path)
