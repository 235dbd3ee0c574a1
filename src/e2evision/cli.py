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


def _reader_options(allow_pickle: bool, options: Optional[list[str]]) -> dict:
    """Reader keyword arguments from ``--allow-pickle`` and repeated ``--option key=value`` (YAML values)."""
    from e2evision.config import parse_override

    kwargs: dict = {"allow_pickle": True} if allow_pickle else {}
    for item in options or []:
        parts, value = parse_override(item)
        kwargs[".".join(parts)] = value
    return kwargs


@simulate_app.command("lensing")
def simulate_lensing(
    n: Annotated[int, typer.Option("--n", help="Total images, split evenly over axion, cdm, no_sub.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for {axion,cdm,no_sub}/*.npy and metadata.json.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    shard: Annotated[int, typer.Option("--shard", help="Which shard this call writes (0-based).")] = 0,
    num_shards: Annotated[int, typer.Option("--num-shards", help="Number of disjoint shards.")] = 1,
    workers: Annotated[int, typer.Option("--workers", help="Processes rendering in parallel.")] = 1,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Also write validation plots here.")] = None,
    axion_object_arrays: Annotated[bool, typer.Option("--axion-object-arrays", help="Write axion files as the public pickled [image, axion_mass] object arrays.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Strong-lensing images (DeepLense Model I layout) rendered with lenstronomy."""
    from e2evision.simulate.lensing import (
        LensingConfig,
        MissingExtraError,
        load_lensing_images,
        lensing_validation_plots,
        write_lensing,
    )

    if n < 3:
        _fail("--n must be at least 3 (one image per class: axion, cdm, no_sub)")
    if seed < 0:
        _fail("--seed must be >= 0")
    if num_shards < 1:
        _fail("--num-shards must be >= 1")
    if not 0 <= shard < num_shards:
        _fail(f"--shard must be in [0, --num-shards={num_shards}), got {shard}")
    if workers < 1:
        _fail("--workers must be >= 1")
    config = LensingConfig()
    try:
        meta = write_lensing(out, n, seed=seed, config=config, shard=shard, num_shards=num_shards,
                             workers=workers, axion_object_arrays=axion_object_arrays, progress=progress)
    except MissingExtraError as err:
        _fail(str(err))
    info = json.loads(meta.read_text(encoding="utf-8"))
    for name, c in info["classes"].items():
        typer.echo(f"wrote {c['index_stop'] - c['index_start']} images to {out / name}")
    typer.echo(f"wrote {meta}")
    if plots is not None:
        images = load_lensing_images(out, max_per_class=300, allow_pickle=axion_object_arrays)
        for p in lensing_validation_plots(images, plots, seed=seed, config=config):
            typer.echo(f"plot {p}")


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Files, patterns or a directory of one dataset.")],
    format: Annotated[str, typer.Option("--format", help="Dataset format, or 'auto'.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar while scanning.")] = True,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickled DeepLense axion files (trusted files only).")] = False,
    options: Annotated[Optional[list[str]], typer.Option("--option", help="Reader option key=value, e.g. label_column=am.")] = None,
) -> None:
    """Format, sample count, image shape, label counts and per-channel statistics."""
    from e2evision.datasets import DatasetError, open_dataset

    try:
        with open_dataset(paths, format, **_reader_options(allow_pickle, options)) as ds:
            stats = ds.channel_stats(progress=progress and not as_json)
            info = {
                "format": ds.format,
                "paths": [str(p) for p in ds.paths],
                "n_samples": ds.n_samples,
                "image_shape": list(ds.image_shape),
                "channels": ds.channel_names,
                "labels": ds.label_summary(),
                "channel_stats": stats.as_dict(ds.channel_names),
                "task": ds.task,
                "class_names": ds.class_names,
                "scalars": ds.scalar_names,
            }
            if ds.format == "store":
                info["source_format"] = ds.source_format
                info["layout"] = ds.manifest["layout"]
                info["bytes"] = ds.manifest["bytes"]
    except (DatasetError, FileNotFoundError, TypeError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"format       {info['format']}" + (f" (from {info['source_format']})" if "source_format" in info else ""))
    for p in info["paths"]:
        typer.echo(f"file         {p}")
    typer.echo(f"samples      {info['n_samples']}")
    typer.echo(f"image shape  {tuple(info['image_shape'])} (C, H, W)")
    typer.echo(f"task         {info['task']}" + (f" ({', '.join(info['class_names'])})" if info["class_names"] else ""))
    typer.echo("labels       " + ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                                            for k, v in info["labels"].items()))
    if info["scalars"]:
        typer.echo(f"scalars      {', '.join(info['scalars'])}")
    if "bytes" in info:
        b = info["bytes"]
        typer.echo(f"store        {info['layout']}, {b['images'] / 2**20:.1f} MiB "
                   f"({b['dense_float32'] / max(b['images'], 1):.1f}× smaller than dense float32)")
    typer.echo(f"{'channel':<14}{'mean':>12}{'std':>12}{'min':>12}{'max':>12}{'nonzero':>10}")
    for name, s in info["channel_stats"].items():
        typer.echo(f"{name:<14}{s['mean']:>12.4g}{s['std']:>12.4g}{s['min']:>12.4g}{s['max']:>12.4g}"
                   f"{s['nonzero_fraction']:>10.3f}")


@app.command()
def convert(
    paths: Annotated[list[Path], typer.Argument(help="Files, patterns or a directory of one dataset.")],
    out: Annotated[Path, typer.Option("--out", help="Store directory to write.")],
    format: Annotated[str, typer.Option("--format", help="Source format, or 'auto'.")] = "auto",
    layout: Annotated[str, typer.Option(help="auto (smaller of the two), sparse or dense.")] = "auto",
    chunk_size: Annotated[int, typer.Option(help="Samples per chunk file.")] = 4096,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store.")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickled DeepLense axion files (trusted files only).")] = False,
    options: Annotated[Optional[list[str]], typer.Option("--option", help="Reader option key=value, e.g. label_column=am.")] = None,
    checksums: Annotated[bool, typer.Option(help="Record SHA-256 checksums of the source files.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Convert any supported dataset into the sparse, chunked training store."""
    from e2evision.datasets import DatasetError, open_dataset
    from e2evision.store import TrainingStore, write_store

    if layout not in {"auto", "sparse", "dense"}:
        _fail("--layout must be auto, sparse or dense")
    if chunk_size < 1:
        _fail("--chunk-size must be positive")
    try:
        with open_dataset(paths, format, **_reader_options(allow_pickle, options)) as ds:
            path = write_store(ds, out, layout=layout, chunk_size=chunk_size, overwrite=overwrite,
                               progress=progress, source_checksums=checksums)
        store = TrainingStore(path)
    except (DatasetError, FileNotFoundError, FileExistsError, TypeError) as err:
        _fail(str(err))
    b = store.manifest["bytes"]
    typer.echo(f"wrote {path}: {store.n_samples} samples, {store.manifest['layout']} layout, "
               f"{b['images'] / 2**20:.1f} MiB of images ({b['dense_float32'] / max(b['images'], 1):.1f}× "
               "smaller than dense float32)")


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


@app.command()
def ensemble(
    run_dirs: Annotated[list[Path], typer.Argument(help="Finished runs on the same data, seed and folds.")],
    out: Annotated[Path, typer.Option("--out", help="Ensemble run directory to write.")],
    method: Annotated[str, typer.Option(help="mean, weighted, stack (logistic/ridge) or gbdt.")] = "stack",
    scalars: Annotated[bool, typer.Option("--scalars", help="Also feed the dataset's scalar features (pt, m0, ...).")] = False,
    name: Annotated[Optional[str], typer.Option(help="Name shown in reports.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and of gradient boosting.")] = 0,
) -> None:
    """Combine finished runs from their out-of-fold predictions into an ensemble run directory."""
    from e2evision.datasets import DatasetError
    from e2evision.ensemble import build_ensemble

    try:
        m = build_ensemble(run_dirs, out, method=method, scalars=scalars, name=name, seed=seed)
    except (ValueError, FileNotFoundError, DatasetError) as err:
        _fail(str(err))
    if m["task"] == "binary":
        lo, hi = m["test_auc_ci"]
        typer.echo(f"{m['name']}: test AUC {m['test_auc']:.4f} [{lo:.4f}, {hi:.4f}], best member "
                   f"{m['best_member']} (DeLong p = {m['versus_best_member']['p_value']:.3g}) -> {out}")
    else:
        typer.echo(f"{m['name']}: test MAE {m['test']['mae']:.4g}, best member {m['best_member']} -> {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
