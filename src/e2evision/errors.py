"""The errors e2evision reports to a user, in one family.

Each names the file, field or setting at fault and what to do, so the command line prints the
message and exits with status 2 (one handler in :mod:`e2evision.cli` catches
:class:`E2EVisionError`); a caller of the library can catch the whole family the same way. Every
class also derives from the built-in exception it refined before (``DatasetError`` is a
``ValueError``, ``MissingDependencyError`` an ``ImportError``, ...), so existing ``except``
clauses keep working. The modules that raise them re-export them where they were defined.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ConfigError",
    "ConfigNotFoundError",
    "DatasetError",
    "E2EVisionError",
    "ExportError",
    "MissingDependencyError",
    "PreflightError",
    "RunDirError",
]


class E2EVisionError(Exception):
    """Base of every error e2evision reports with a message meant for the user."""


class DatasetError(E2EVisionError, ValueError):
    """A data file is unusable; the message names the file, the field and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(E2EVisionError, ValueError):
    """An experiment config or a ``--set`` override is invalid; the message names the key."""


class ConfigNotFoundError(E2EVisionError, FileNotFoundError):
    """A config is neither a file nor the name of a packaged config."""


class PreflightError(E2EVisionError, ValueError):
    """A run cannot start with this config; the message names the field and the fix."""


class RunDirError(E2EVisionError, RuntimeError):
    """The run directory holds something this run must not mix with or load (names the file)."""


class ExportError(E2EVisionError, RuntimeError):
    """An export or a verification failed; the message names the file, field or output and the problem."""


class MissingDependencyError(E2EVisionError, ImportError):
    """An optional dependency is not installed; the message says what to install (the extra)."""
