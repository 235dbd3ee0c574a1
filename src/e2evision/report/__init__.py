"""Self-contained HTML reports comparing runs."""

from e2evision.report.html import build_report

__all__ = ["build_report"]
