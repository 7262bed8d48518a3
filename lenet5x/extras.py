"""Optional extras: import matplotlib or Pillow, or say which extra to install (one line)."""

from __future__ import annotations

import importlib

from .errors import UserError

INSTALL = "pip install 'lenet5x[plots]'"


class MissingExtra(ImportError, UserError):
    """An optional library is not installed; the message names the extra that provides it."""


def need(module: str, purpose: str):
    """Import `module` ("matplotlib", "PIL.Image", ...) or raise MissingExtra naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"PIL": "Pillow"}.get(module.split(".")[0], module.split(".")[0])
        raise MissingExtra(
            f"{purpose} needs {package}, which is in the plots extra: {INSTALL}"
        ) from None
