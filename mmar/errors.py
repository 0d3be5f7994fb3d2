"""Errors raised for bad input. Every message names the file (and line) at fault."""
from __future__ import annotations


class MmarError(Exception):
    """Base class of every error mmar raises for bad user input."""


class DataFormatError(MmarError, ValueError):
    """A data file is malformed. ``path`` and ``line`` (1-based, or None) name the place."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class ShapeError(MmarError, ValueError):
    """An array has the wrong shape."""


class CheckpointError(MmarError):
    """A checkpoint is missing, corrupt, or of the wrong model kind."""


class ConfigError(MmarError, ValueError):
    """A configuration or command-line option is invalid."""
