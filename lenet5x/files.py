"""Writing files so that a reader never sees half of one: the one atomic-write helper.

Every file lenet5x writes (checkpoints, config.yaml, metrics.jsonl rewritten on resume, pictures,
shipped weights, downloads) goes to a temporary file beside its target, is flushed to disk and
renamed over the target; if anything fails, or the process is killed, the old file stays as it
was and the temporary file is removed (a kill can leave a stray ".NAME.*.tmp"). Files get the
permissions the umask gives a new file, as open() would (mkstemp alone makes them 0600, which
another user of a shared data folder or Docker volume could not read).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    """The process's umask (read from /proc where there is one: setting it to read it is not
    safe while other threads create files)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[BinaryIO], object], suffix: str = ".tmp") -> Path:
    """Call write(handle) on a temporary file beside `path`, fsync it, rename it onto `path`.

    Any exception from `write` (a failed checksum, a full disk) leaves `path` untouched and no
    temporary file behind. An OSError is raised again naming `path`.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
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
    return path


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory that holds the file (where the OS allows it)."""
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
