"""What can go wrong in a run, by what the user should do about it; cli.py maps each to an exit status.

Every error here carries one line that names the file or key and says what to do. The modules
that find the problem define their own subclass (config.ConfigError, data.DataError, ...), so a
message says where it came from and a caller can catch one kind.
"""

from __future__ import annotations

import math
import reprlib
import sys


class UserError(Exception):
    """Bad input: a config, flag, file, path or backend that cannot be used (exit status 2)."""


class WriteError(Exception):
    """A write failed mid-run (disk full, I/O error); the files written before are intact (exit 1)."""


class Diverged(Exception):
    """The loss became NaN or infinite; the last good checkpoint is kept (exit 3)."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run after saving a checkpoint (exit 130)."""


class _Short(reprlib.Repr):
    """reprlib's short repr, which also copes with a 5000-digit integer (int() refuses to make
    its decimal digits) and puts control characters (a newline) as escapes."""

    def repr_int(self, value, level):
        if value.bit_length() > 128:
            return f"<an integer of {value.bit_length()} bits>"
        return super().repr_int(value, level)


_SHOWN = _Short()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict = 2, 4, 4
_SHOWN.maxstring = _SHOWN.maxother = 40


def shown(value) -> str:
    """A short repr of a value read from a file, for a one-line message: a value from YAML may be
    a graph of aliases whose full repr would be billions of characters ("billion laughs")."""
    return _SHOWN.repr(value)


def printable(text, limit: int = 80) -> str:
    """User text (a key, a flag's value) for a one-line message: at most `limit` characters,
    newlines and other control characters escaped."""
    text = str(text)
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def finite_number(value) -> bool:
    """Whether a value read from a file is a finite number a float can hold (not a bool; no
    math.isfinite on a 400-digit int, which overflows): what the readers of checkpoints and
    metrics check numbers with."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= sys.float_info.max if isinstance(value, int) else math.isfinite(value)
