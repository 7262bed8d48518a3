"""What every command shares: one-line usage errors, and the one place that maps what went wrong
to an exit status.

| status | meaning                                                                  |
|--------|--------------------------------------------------------------------------|
| 0      | done                                                                     |
| 1      | a write failed during the run (disk full, I/O error); earlier files intact |
| 2      | bad input: one line on stderr, `error: <file or key>: <problem>; <what to do>` |
| 3      | the loss became NaN or infinite; the last good checkpoint is kept        |
| 130    | interrupted (Ctrl-C or SIGTERM); a training run saved a checkpoint first  |
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import Diverged, Interrupted, UserError, WriteError

BACKENDS = ("auto", "numpy", "cupy")  # what --backend offers (backend.resolve knows them)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_command(body: Callable[[], int | None]) -> int:
    """Run a command's body; what goes wrong becomes one line on stderr and its exit status."""
    try:
        return body() or 0
    except UserError as error:
        return _fail(f"error: {error}", 2)
    except WriteError as error:
        return _fail(f"error: {error}", 1)
    except Diverged as error:
        return _fail(f"error: {error}", 3)
    except Interrupted as error:
        return _fail(str(error), 130)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OSError as error:  # e.g. an output folder of a result tool that cannot be written
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"error: {where}{error.strerror or error}", 2)


def _fail(line: str, status: int) -> int:
    print(line, file=sys.stderr)
    return status
