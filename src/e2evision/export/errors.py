"""The one exception type of the export layer (defined with its family in :mod:`e2evision.errors`)."""

from e2evision.errors import ExportError

__all__ = ["ExportError"]
