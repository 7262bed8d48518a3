"""Writing files so that a reader never sees half of one: the one atomic-write helper.

Outputs are regular files and directories only: output_file and output_dir refuse anything else
(a device such as /dev/null or /dev/full, a FIFO, a socket) before any work is done, and
atomic_write checks again. Every file lenet5x writes (checkpoints, config.yaml, metrics.jsonl
rewritten on resume, pictures, shipped weights, downloads) goes to a temporary file beside its
target, is flushed to disk and renamed over the target; if anything fails, or the process is
killed, the old file stays as it was and the temporary file is removed (a kill can leave a stray
".NAME.*.tmp"). Files get the
permissions the umask gives a new file, as open() would (mkstemp alone makes them 0600, which
another user of a shared data folder or Docker volume could not read).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import UserError, printable


class OutputError(UserError):
    """An output path is not a regular file or a directory (or cannot hold one): one line."""


KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISREG, "a regular file"),
)


def _kind(path: Path) -> str | None:
    """What is at `path`, following links ("a character device", ...), or None: nothing."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (or a file above it)
        return None
    except OSError as error:
        raise OutputError(f"{printable(path, 200)}: cannot be written ({error.strerror})") from None
    return next((name for test, name in KINDS if test(mode)), "not a file")


def _in_a_directory(path: Path) -> None:
    """The nearest existing folder above `path` is a directory (we create the rest)."""
    above = path.absolute().parent
    while _kind(above) is None and above != above.parent:
        above = above.parent
    if _kind(above) != "a directory":
        raise OutputError(
            f"{printable(path, 200)}: cannot be written, {printable(above, 200)} is "
            f"{_kind(above)}, not a directory; choose another path"
        )
    if _kind(path) is None:  # to be made there: try (a folder made and removed), before any work
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".lenet5x-", dir=above))
        except OSError as error:
            raise OutputError(
                f"{printable(path, 200)}: cannot be written, nothing can be made in "
                f"{printable(above, 200)} ({error.strerror or error}); choose another path"
            ) from None


def output_file(path) -> Path:
    """`path` where a file is to be written: a regular file or nothing yet, below a directory.
    Anything else (a device, a FIFO, a socket, a directory) -> OutputError, before any work."""
    path = Path(path)
    kind = _kind(path)
    if kind not in (None, "a regular file"):
        raise OutputError(
            f"{printable(path, 200)}: is {kind}, not a regular file; lenet5x writes only "
            "regular files: choose another path"
        )
    _in_a_directory(path)
    return path


def output_dir(path, names=()) -> Path:
    """`path` where files `names` are to be written: a directory or nothing yet (then created
    when they are written), each name a regular file or nothing. OutputError otherwise."""
    path = Path(path)
    kind = _kind(path)
    if kind not in (None, "a directory"):
        raise OutputError(
            f"{printable(path, 200)}: is {kind}, not a directory; choose another folder"
        )
    _in_a_directory(path)
    for name in names:
        output_file(path / name)
    return path


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
    temporary file behind. An OSError is raised again naming `path`; OutputError where `path`
    is not a regular file (output_file).
    """
    path = output_file(path)
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
