"""``e2evision``: one command, a subcommand per job (simulate, inspect, models, train, report)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from e2evision import __version__

app = typer.Typer(
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


@simulate_app.command("egamma")
def simulate_egamma(
    n: Annotated[int, typer.Option("--n", help="Total crops; half photons, half electrons.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the two HDF5 files.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Also write validation plots here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Electron/photon calorimeter crops (CMS HDF5 schema) from the parametric shower model."""
    from e2evision.simulate.calorimeter import egamma_validation_plots, write_egamma

    if n < 2:
        _fail("--n must be at least 2 (one photon, one electron)")
    files = write_egamma(out, n, seed=seed, progress=progress)
    for f in files:
        typer.echo(f"wrote {f}")
    if plots is not None:
        from e2evision.datasets import EgammaHDF5

        with EgammaHDF5(files) as ds:
            x, y = ds.read(range(min(ds.n_samples, 20000)))
        for p in egamma_validation_plots(x.transpose(0, 2, 3, 1), y, plots):
            typer.echo(f"plot {p}")


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Files or a directory of one dataset.")],
    format: Annotated[str, typer.Option("--format", help="Dataset format, or 'auto'.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar while scanning.")] = True,
) -> None:
    """Format, sample count, image shape, label counts and per-channel statistics."""
    from e2evision.datasets import DatasetError, open_dataset

    try:
        with open_dataset(paths, format) as ds:
            stats = ds.channel_stats(progress=progress and not as_json)
            info = {
                "format": ds.format,
                "paths": [str(p) for p in ds.paths],
                "n_samples": ds.n_samples,
                "image_shape": list(ds.image_shape),
                "channels": ds.channel_names,
                "labels": ds.label_counts(),
                "channel_stats": stats.as_dict(ds.channel_names),
            }
    except (DatasetError, FileNotFoundError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"format       {info['format']}")
    for p in info["paths"]:
        typer.echo(f"file         {p}")
    typer.echo(f"samples      {info['n_samples']}")
    typer.echo(f"image shape  {tuple(info['image_shape'])} (C, H, W)")
    typer.echo("labels       " + ", ".join(f"{k}: {v}" for k, v in info["labels"].items()))
    typer.echo(f"{'channel':<14}{'mean':>12}{'std':>12}{'min':>12}{'max':>12}{'nonzero':>10}")
    for name, s in info["channel_stats"].items():
        typer.echo(f"{name:<14}{s['mean']:>12.4g}{s['std']:>12.4g}{s['min']:>12.4g}{s['max']:>12.4g}"
                   f"{s['nonzero_fraction']:>10.3f}")


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    in_chans: Annotated[int, typer.Option(help="Channels of the input used to count parameters.")] = 2,
    img_size: Annotated[int, typer.Option(help="Image side used to count parameters.")] = 32,
    pattern: Annotated[str, typer.Option(help="Only models matching this shell pattern.")] = "*",
    flops: Annotated[bool, typer.Option(help="Count forward FLOPs per image (on the meta device).")] = True,
    markdown: Annotated[bool, typer.Option("--markdown", help="The docs table: params at every dataset geometry.")] = False,
) -> None:
    """List the registered models with parameter counts and FLOPs at a given input."""
    from e2evision.models import model_table

    if markdown:
        from e2evision.models.catalog import catalog_markdown, catalog_rows

        typer.echo(catalog_markdown(catalog_rows(pattern)))
        return

    rows = model_table(in_chans=in_chans, img_size=img_size, flops=flops, pattern=pattern)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"input {in_chans}×{img_size}×{img_size}")
    typer.echo(f"{'name':<22}{'family':<9}{'params':>13}{'GFLOPs':>9}  description")
    for r in rows:
        gflops = f"{r['flops'] / 1e9:>9.3f}" if "flops" in r else f"{'-':>9}"
        typer.echo(f"{r['name']:<22}{r['family']:<9}{r['params']:>13,}{gflops}  {r['description']}")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Data files/directories (replace data.paths).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default runs/NAME).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override the config's seed.")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: key.path=value (repeatable).")] = None,
) -> None:
    """K-fold cross-validated training of one config; writes a run directory."""
    from e2evision.config import load_config
    from e2evision.datasets import DatasetError
    from e2evision.training import run_experiment

    sets = list(overrides or [])
    if data:
        sets.append("data.paths=" + json.dumps([str(p) for p in data]))
    if seed is not None:
        sets.append(f"seed={seed}")
    try:
        cfg = load_config(config, sets)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    run_dir = out or Path("runs") / cfg.name
    typer.echo(f"training {cfg.model.name} ({cfg.train.folds}-fold) -> {run_dir}")
    try:
        metrics = run_experiment(cfg, run_dir, command=" ".join(["e2evision", *sys.argv[1:]]))
    except DatasetError as err:
        _fail(str(err))
    typer.echo(
        f"{cfg.name}: fold AUC {metrics['fold_auc_mean']:.4f} ± {metrics['fold_auc_std']:.4f}, "
        f"test AUC {metrics['test_auc']:.4f} [{metrics['test_auc_ci'][0]:.4f}, {metrics['test_auc_ci'][1]:.4f}], "
        f"{metrics['train_time_s']:.0f} s training"
    )


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")],
    title: Annotated[str, typer.Option(help="Page title.")] = "e2evision report",
) -> None:
    """One self-contained HTML page comparing runs: table, ROC curves, learning curves."""
    from e2evision.report import build_report

    try:
        path = build_report(run_dirs, out, title=title)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
