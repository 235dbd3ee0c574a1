"""The root command group, its one error handler and the helpers every command shares."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperGroup

from e2evision import __version__
from e2evision.errors import E2EVisionError

# Each command imports its modules when it runs (deliberately): `e2evision --help` loads no torch.


class _Commands(TyperGroup):
    """The root command group: the one place where e2evision's errors become ``error: ...``, exit 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except E2EVisionError as err:  # names the file, field or setting: no traceback needed
            _fail(str(err))


app = typer.Typer(
    cls=_Commands,
    name="e2evision",
    help="End-to-end deep learning on particle-physics and astrophysics images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


simulate_app = typer.Typer(help="Generate datasets in the community's public formats.", no_args_is_help=True)


app.add_typer(simulate_app, name="simulate")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        typer.echo(f"e2evision {__version__}")
        raise typer.Exit()


def _overrides(overrides: Optional[list[str]], data: Optional[list[Path]]) -> list[str]:
    """``--set`` items, plus ``data.paths`` from ``--data`` when given (it replaces the config's)."""
    sets = list(overrides or [])
    if data:
        sets.append("data.paths=" + json.dumps([str(p) for p in data]))
    return sets


#: the two reader options every command that opens data takes (read by :func:`_reader_options`)
AllowPickle = Annotated[
    bool, typer.Option("--allow-pickle", help="Read pickled DeepLense axion files (trusted files only).")
]
ReaderOptions = Annotated[
    Optional[list[str]],
    typer.Option("--option", help="Reader option key=value (a YAML value), e.g. label_column=am."),
]


def _reader_options(allow_pickle: bool, options: Optional[list[str]]) -> dict:
    """Reader keyword arguments from ``--allow-pickle`` and repeated ``--option key=value`` (YAML values)."""
    from e2evision.config import parse_override

    kwargs: dict = {"allow_pickle": True} if allow_pickle else {}
    for item in options or []:
        parts, value = parse_override(item)
        kwargs[".".join(parts)] = value
    return kwargs


def _headline(metrics: dict[str, Any]) -> str:
    """The line every command that writes a run prints: fold mean ± std and the test value with its interval."""
    from e2evision.datasets.task import get_task

    return get_task(metrics["task"]).headline_text(metrics)


def main() -> None:
    # The command line's one process-wide setting: figures go to files, never to a window
    # (libraries it drives, such as optuna's plots, draw through pyplot). A user's choice wins.
    os.environ.setdefault("MPLBACKEND", "Agg")
    app()
