"""The one exception type of the export layer."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export or a verification failed; the message names the file, field or output and the problem."""
