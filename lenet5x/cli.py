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
import os
import sys
from collections.abc import Callable

from .errors import Diverged, Interrupted, UserError, WriteError

BACKENDS = ("auto", "numpy", "cupy", "torch", "jax")  # what --backend offers (backend.py)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_command(body: Callable[[], int | None]) -> int:
    """Run a command's body; what goes wrong becomes one line on stderr and its exit status."""
    try:
        status = body() or 0
        sys.stdout.flush()  # here, so that a closed pipe is answered below
        return status
    except BrokenPipeError:  # `lenet5x ... | head`: the reader has read what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more to write at exit, and no complaint
        return 0
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


COMMANDS = {  # lenet5x NAME: the module lenet5x.NAME, whose main(argv, prog) runs it
    "train": "train LeNet-5 (the paper's with SDLM by default; --config modern, ...)",
    "evaluate": "test error, per-class accuracy, confusion matrix, misclassified digits",
    "predict": "read handwritten digits from photos or scans",
    "features": "draw the learned C1 kernels and the feature maps of one digit",
    "plot": "draw the loss and error curves of runs",
    "demo": "draw a digit in the browser and watch the network read it",
    "export": "make a shipped-weights file from a run",
    "sweep": "many runs from one sweep file, in parallel on Dask (local or a cluster)",
    "info": "a network's layer table; without a name, the shipped configs and networks",
    "tutorial": "write the tutorial notebook into a folder (default: here)",
}


def usage() -> str:
    from . import __version__

    lines = [
        f"usage: lenet5x COMMAND [ARGS...]   (lenet5x {__version__}; LeNet-5, LeCun et al. 1998)",
        "",
        "commands:",
        *(f"  {name:<9} {what}" for name, what in COMMANDS.items()),
        "",
        "lenet5x COMMAND --help says more; python -m lenet5x.COMMAND is the same command.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    """The `lenet5x` command (and python -m lenet5x): dispatch to a command's own main."""
    import importlib

    from . import __version__

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"lenet5x {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        return _fail(
            f"error: unknown command {argv[0]!r}: one of {', '.join(COMMANDS)} (see lenet5x --help)",
            2,
        )
    module = importlib.import_module(f"lenet5x.{argv[0]}")
    return module.main(argv[1:], prog=f"lenet5x {argv[0]}")
