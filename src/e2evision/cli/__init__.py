"""``e2evision``: one command, a subcommand per job (simulate, inspect, models, train, report, ...).

The root group and its shared helpers live in :mod:`.app`; the commands register themselves on
it from their modules, grouped by what they work on. ``main`` is the console script's entry.
"""

from e2evision.cli import simulate, data, experiments, deploy  # noqa: F401, I001  (registers the commands, in --help order)
from e2evision.cli.app import app, main

__all__ = ["app", "main"]
