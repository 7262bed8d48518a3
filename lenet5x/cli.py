"""What every command line here shares: one-line usage errors, and user mistakes as exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def guarded(run: Callable[[], int], user_errors: tuple[type[BaseException], ...]) -> int:
    """Run a command's body; a user's mistake becomes `error: ...` on stderr and exit status 2."""
    try:
        return run()
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. an output directory that cannot be written
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
