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


class OutputError(MmarError):
    """An output file or directory cannot be written (``--out`` is a directory, or its
    directory is not writable)."""


def shorten(text: str, limit: int = 400) -> str:
    """``text`` cut to about ``limit`` characters (a note says how many were left out), so that
    one error line stays readable whatever it lists (e.g. thousands of joint names)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... ({len(text) - limit} more characters)"


def few(items, k: int = 5) -> str:
    """The first ``k`` of ``items`` (repr), then how many more: for error messages."""
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:k])
    return shown + (f", ... ({len(items) - k} more)" if len(items) > k else "")
