"""``e2evision``: one command, a subcommand per job (simulate, inspect, models, train, report)."""

from __future__ import annotations

import json
import os
import sys
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
        from e2evision.simulate.egamma_published_plots import published_plots_from_files

        for p in published_plots_from_files(files[0], files[1], plots):  # photons, electrons
            typer.echo(f"plot {p}")


def _simulate_jets(
    dataset: str, n: int, out: Path, seed: int, shard: int, num_shards: int, workers: int,
    plots: Optional[Path], mpi: bool, progress: bool, response: bool = True, pileup: float = 20.0,
) -> None:
    """Shared body of the three jet commands: validate, write one Parquet file, plot."""
    from e2evision.simulate.jets import jet_channels, jet_class_names, jet_config, write_jets
    from e2evision.simulate.response import ResponseConfig

    if n < 1:
        _fail("--n must be at least 1")
    if seed < 0:
        _fail("--seed must be >= 0")
    if num_shards < 1:
        _fail("--num-shards must be >= 1")
    if not 0 <= shard < num_shards:
        _fail(f"--shard must be in [0, --num-shards={num_shards}), got {shard}")
    if workers < 1:
        _fail("--workers must be >= 1")
    if not 0 <= pileup < float("inf"):
        _fail("--pileup must be >= 0 and finite")
    config = jet_config(dataset, mpi=mpi, response=ResponseConfig(pileup_mean=pileup) if response else None)
    result = write_jets(dataset, out, n, seed=seed, config=config, shard=shard,
                        num_shards=num_shards, workers=workers, progress=progress)
    typer.echo(f"wrote {result.path} ({result.n_rows} jets, rows {result.row_start}-{result.row_stop} of {n}, "
               f"{result.n_events} events, {result.images_per_second:.1f} jets/s)")
    if plots is not None:
        if result.n_rows == 0:
            typer.echo("no plots: this shard holds no rows")
            return
        from e2evision.simulate.jets_plots import jet_validation_plots

        for p in jet_validation_plots(dataset, result.truth, result.mean_images, jet_channels(dataset), plots,
                                      class_names=jet_class_names(dataset)):
            typer.echo(f"plot {p}")
        from e2evision.simulate.response_plots import response_validation_plots

        for p in response_validation_plots(dataset, config, seed, plots, n=min(n, 100), workers=workers):
            typer.echo(f"plot {p}")


_JetN = Annotated[int, typer.Option("--n", help="Jets in the whole data set (all shards); classes alternate row by row.")]
_JetOut = Annotated[Path, typer.Option("--out", help="Directory for the Parquet file.")]
_JetSeed = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same rows, whatever --workers).")]
_JetShard = Annotated[int, typer.Option("--shard", help="Which shard this call writes (0-based).")]
_JetShards = Annotated[int, typer.Option("--num-shards", help="Number of disjoint shards of the data set.")]
_JetWorkers = Annotated[int, typer.Option("--workers", help="Processes generating in parallel on this machine.")]
_JetPlots = Annotated[Optional[Path], typer.Option("--plots", help="Also write validation plots here.")]
_JetMpi = Annotated[bool, typer.Option("--mpi/--no-mpi", help="Multiparton interactions (off: ~10x faster, unrealistic).")]
_JetProgress = Annotated[bool, typer.Option(help="Show a progress bar.")]
_JetResponse = Annotated[bool, typer.Option("--response/--no-response", help="Detector response: pile-up, shower "
                                            "spread, noise, zero suppression (off: generator-level images).")]
_JetPileup = Annotated[float, typer.Option("--pileup", help="Mean number of pile-up interactions (with --response).")]


@simulate_app.command("quark-gluon")
def simulate_quark_gluon(
    n: _JetN, out: _JetOut, seed: _JetSeed = 0, shard: _JetShard = 0, num_shards: _JetShards = 1,
    workers: _JetWorkers = 1, plots: _JetPlots = None, mpi: _JetMpi = True, progress: _JetProgress = True,
    response: _JetResponse = True, pileup: _JetPileup = 20.0,
) -> None:
    """Quark (y=0) vs gluon (y=1) jet images, Z(->nu nu)+jet from Pythia 8 (CMS Parquet schema)."""
    _simulate_jets("quark-gluon", n, out, seed, shard, num_shards, workers, plots, mpi, progress, response, pileup)


@simulate_app.command("top")
def simulate_top(
    n: _JetN, out: _JetOut, seed: _JetSeed = 0, shard: _JetShard = 0, num_shards: _JetShards = 1,
    workers: _JetWorkers = 1, plots: _JetPlots = None, mpi: _JetMpi = True, progress: _JetProgress = True,
    response: _JetResponse = True, pileup: _JetPileup = 20.0,
) -> None:
    """Boosted top (y=1) vs QCD (y=0) jet images, 8 channels, from Pythia 8 (CMS Parquet schema)."""
    _simulate_jets("top", n, out, seed, shard, num_shards, workers, plots, mpi, progress, response, pileup)


@simulate_app.command("top-mass")
def simulate_top_mass(
    n: _JetN, out: _JetOut, seed: _JetSeed = 0, shard: _JetShard = 0, num_shards: _JetShards = 1,
    workers: _JetWorkers = 1, plots: _JetPlots = None, mpi: _JetMpi = True, progress: _JetProgress = True,
    response: _JetResponse = True, pileup: _JetPileup = 20.0,
) -> None:
    """Top-quark jets with the top mass spread over a range; target m (CMS top-mass Parquet schema)."""
    _simulate_jets("top-mass", n, out, seed, shard, num_shards, workers, plots, mpi, progress, response, pileup)


def _overrides(overrides: Optional[list[str]], data: Optional[list[Path]]) -> list[str]:
    """``--set`` items, plus ``data.paths`` from ``--data`` when given (it replaces the config's)."""
    sets = list(overrides or [])
    if data:
        sets.append("data.paths=" + json.dumps([str(p) for p in data]))
    return sets


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
        lensing_validation_plots,
        load_lensing_images,
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
    meta = write_lensing(out, n, seed=seed, config=config, shard=shard, num_shards=num_shards,
                         workers=workers, axion_object_arrays=axion_object_arrays, progress=progress)
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
    from e2evision.datasets import open_dataset

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
    except (FileNotFoundError, TypeError) as err:
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
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing e2evision store (never any other file or folder).")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickled DeepLense axion files (trusted files only).")] = False,
    options: Annotated[Optional[list[str]], typer.Option("--option", help="Reader option key=value, e.g. label_column=am.")] = None,
    checksums: Annotated[bool, typer.Option(help="Record SHA-256 checksums of the source files.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Convert any supported dataset into the sparse, chunked training store."""
    from e2evision.datasets import open_dataset
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
    except (FileNotFoundError, FileExistsError, TypeError) as err:
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
    config: Annotated[Optional[Path], typer.Argument(help="Experiment config (YAML file, or a packaged config name: e2evision configs); with --resume, defaults to OUT/config.yaml.")] = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Data files/directories (replace data.paths).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default runs/NAME).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override the config's seed.")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: key.path=value (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out from its last checkpoints (starts fresh if there are none).")] = False,
) -> None:
    """K-fold cross-validated training of one config; writes a run directory."""
    from e2evision.config import load_config
    from e2evision.training import run_experiment

    if config is None:
        if not (resume and out is not None):
            _fail("give a CONFIG, or --resume with --out pointing at an interrupted run")
        from e2evision.rundir import CONFIG_FILE

        config = out / CONFIG_FILE  # type: ignore[operator]
    sets = _overrides(overrides, data)
    if seed is not None:
        sets.append(f"seed={seed}")
    try:
        cfg = load_config(config, sets)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    run_dir = out or Path("runs") / cfg.name
    from e2evision.training.runner import process_rank

    main = process_rank() == 0
    if main:
        typer.echo(f"{'resuming' if resume else 'training'} {cfg.model.name} ({cfg.train.folds}-fold) -> {run_dir}")
    try:
        metrics = run_experiment(cfg, run_dir, command=" ".join(["e2evision", *sys.argv[1:]]), resume=resume)
    except ValueError as err:
        _fail(str(err))
    if not metrics:  # a DDP process other than rank 0: rank 0 reports
        return
    for msg in metrics.get("warnings") or []:
        typer.echo(f"WARNING {cfg.name}: {msg}", err=True)
    typer.echo(f"{cfg.name}: {_headline(metrics)}, {metrics['train_time_s']:.0f} s training")


def _headline(metrics: dict[str, Any]) -> str:
    """The line every command that writes a run prints: fold mean ± std and the test value with its interval."""
    from e2evision.datasets.task import get_task

    return get_task(metrics["task"]).headline_text(metrics)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to compare; also ablation folders (e2evision ablation) and tune study folders.")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")],
    title: Annotated[str, typer.Option(help="Page title.")] = "e2evision report",
    saliency: Annotated[bool, typer.Option(help="Compute saliency maps from fold 0's weights and the data for runs without saliency.npz.")] = True,
) -> None:
    """One self-contained HTML page comparing runs, grouped by dataset: tables with significance
    tests, ROC/rejection curves, score distributions, confusion matrices, residuals, learning
    curves and saliency maps."""
    from e2evision.report import build_report

    try:
        path = build_report(run_dirs, out, title=title, saliency=saliency)
    except (OSError, ValueError) as err:  # NotADirectoryError: a file given as a run folder
        _fail(str(err))
    typer.echo(f"wrote {path}")


@app.command()
def ablation(
    config: Annotated[Path, typer.Argument(help="Config of the fused model (image + data.scalars).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the three runs and ablation.json.")],
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Data files/directories (replace data.paths).")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: key.path=value (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue interrupted arms from their checkpoints.")] = False,
) -> None:
    """Image only / features only / both: the same split and folds, three K-fold runs and their comparison."""
    from e2evision.config import load_config
    from e2evision.training.ablation import run_ablation

    sets = _overrides(overrides, data)
    try:
        cfg = load_config(config, sets)
        summary = run_ablation(cfg, out, resume=resume, command=" ".join(["e2evision", *sys.argv[1:]]))
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    for row in summary["arms"]:
        lo, hi = row["test_ci"] or (float("nan"), float("nan"))
        typer.echo(f"{row['arm']:>9}: {row['metric']} {row['test']:.4f} [{lo:.4f}, {hi:.4f}]  ({row['model']})")
    for key, d in summary["differences"].items():
        typer.echo(f"{key}: {d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], p = {d['p_value']:.3g}")
    typer.echo(f"wrote {out / 'ablation.json'}")


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="Experiment config with a 'tune.params' search space.")],
    trials: Annotated[int, typer.Option("--trials", help="Trials this worker runs.")],
    study: Annotated[str, typer.Option("--study", help="Study name (workers with the same name share it).")],
    storage: Annotated[Optional[str], typer.Option("--storage", help="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db (default: SQLite in the study folder).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Study folder (default runs/tune/STUDY).")] = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Data files/directories (replace data.paths).")] = None,
    worker: Annotated[int, typer.Option(help="This worker's index (offsets the sampler seed).")] = 0,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: key.path=value.")] = None,
) -> None:
    """Bayesian hyper-parameter search (Optuna TPE, median pruning); writes best_config.yaml."""
    from e2evision.config import load_config
    from e2evision.tuning import run_study

    if trials < 1:
        _fail("--trials must be at least 1")
    sets = _overrides(overrides, data)
    try:
        cfg = load_config(config, sets)
        summary = run_study(cfg, study, trials, out_dir=out, storage=storage, worker=worker)
    except (ValueError, FileNotFoundError, ImportError) as err:
        _fail(str(err))
    best = summary.get("best")
    typer.echo(f"study {study}: {summary['n_complete']} complete, {summary['n_pruned']} pruned of {summary['n_trials']}")
    if best:
        typer.echo(f"best trial {best['number']}: {best['value']:.4f} with {best['params']}")
        typer.echo(f"wrote {summary['best_config']}")


@app.command()
def baseline(
    config: Annotated[Path, typer.Argument(help="The experiment config whose data and split to use.")],
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Data files/directories (replace data.paths).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default runs/NAME_baseline).")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: key.path=value.")] = None,
) -> None:
    """Gradient-boosted trees on expert features (shower shapes, jet observables, lens features), same split as train."""
    from e2evision.baselines import physics_baseline
    from e2evision.config import load_config

    sets = _overrides(overrides, data)
    try:
        cfg = load_config(config, sets)
        run_dir = out or Path("runs") / f"{cfg.name}_baseline"
        m = physics_baseline(cfg, run_dir, progress=True)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(f"{m['name']}: {_headline(m)} -> {run_dir}")


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
    from e2evision.ensemble import build_ensemble

    try:
        m = build_ensemble(run_dirs, out, method=method, scalars=scalars, name=name, seed=seed)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    from e2evision.datasets.task import get_task

    test = "paired bootstrap" if get_task(m["task"]).is_regression else "DeLong"
    typer.echo(f"{m['name']}: {_headline(m)}, best member {m['best_member']} "
               f"({test} p = {m['versus_best_member']['p_value']:.3g}) -> {out}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory (from e2evision train).")],
    format: Annotated[str, typer.Option("--format", help="onnx, torchscript or aoti (AOTInductor .pt2).")],
    out: Annotated[Path, typer.Option("--out", help="Model file to write; preprocess.json goes beside it.")],
    fold: Annotated[Optional[int], typer.Option("--fold", help="Fold to export (default: the best by the run's monitored metric: validation AUC, or MAE for regression).")] = None,
    ensemble: Annotated[bool, typer.Option("--ensemble", help="Export the mean of all folds as one model (what the test metrics evaluated).")] = False,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="The run's data at a new location (for the check).")] = None,
    n_check: Annotated[int, typer.Option("--n-check", help="Test-split samples the export is checked on.")] = 64,
    atol: Annotated[float, typer.Option(help="Absolute tolerance of the check against PyTorch.")] = 1e-5,
    rtol: Annotated[float, typer.Option(help="Relative tolerance of the check against PyTorch.")] = 1e-5,
) -> None:
    """Export one fold (without its normaliser, plus preprocess.json) or the fold ensemble; verified against PyTorch first."""
    from e2evision.export import export_model
    from e2evision.export.ensemble import export_ensemble

    if ensemble and fold is not None:
        _fail("--ensemble exports every fold; drop --fold")
    paths = [str(p) for p in data] if data else None
    if ensemble:
        r = export_ensemble(run_dir, format, out, data=paths, n_check=n_check, atol=atol, rtol=rtol)
    else:
        r = export_model(run_dir, format, out, fold=fold, data=paths, n_check=n_check, atol=atol, rtol=rtol)
    typer.echo(f"chose {r.fold_reason}")
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in r.max_abs_diff.items())
    typer.echo(f"verified on {r.rows} samples at batch sizes {', '.join(map(str, r.batch_sizes))}: max |Δ| vs PyTorch "
               f"{diffs} (tolerance {r.atol:g} + {r.rtol:g}·|ref|)")
    for note in r.notes:
        typer.echo(f"note: {note}")
    if not ensemble:
        typer.echo("note: the run's test metrics score the mean of all its folds; --ensemble exports that model")
    typer.echo(f"wrote {r.path} and {r.preprocess_path} in {r.seconds:.0f} s")


@app.command()
def configs(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The configs shipped with the package; pass a name wherever a CONFIG path goes (e2evision train egamma_resnet15)."""
    from e2evision.config_files import configs_dir, describe, packaged_configs

    rows = [describe(p) for p in packaged_configs().values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        _fail(f"no configs found in {configs_dir()}", code=1)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  {r['format'] or '?':<12} {r['model'] or '?'}")
    typer.echo(f"({len(rows)} configs in {configs_dir()})")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A finished run directory, or an exported model (.onnx, .pt, .pt2) with preprocess.json beside it.")],
    data: Annotated[list[Path], typer.Option("--data", help="Files, patterns or directories to score (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Table to write: .parquet (default), .csv or .root.")],
    fold: Annotated[Optional[int], typer.Option("--fold", help="Score with this fold only (default: the mean of all folds, as the run's test split was evaluated).")] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="parquet, csv or root (a TTree 'predictions'); default from --out's suffix.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples read and scored at once (bounds memory).")] = 512,
    data_format: Annotated[Optional[str], typer.Option("--data-format", help="Reader format (default: the run's, or detected).")] = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickled DeepLense axion files (trusted files only).")] = False,
    options: Annotated[Optional[list[str]], typer.Option("--option", help="Reader option key=value.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score new data with a run's fold ensemble, one fold, or an exported model, through the run's own preprocessing."""
    from e2evision.inference import predict as run_predict

    try:
        s = run_predict(model, data, out, fold=fold, fmt=format, batch_size=batch_size, data_format=data_format,
                        progress=progress, **_reader_options(allow_pickle, options))
    except (FileNotFoundError, ImportError, ValueError) as err:  # PredictError is a ValueError
        _fail(str(err))
    typer.echo(f"scored {s.rows} samples with {s.model} ({s.task}); columns {', '.join(s.columns)}")
    typer.echo(f"wrote {s.path}")


@app.command()
def sample(
    paths: Annotated[list[Path], typer.Argument(help="Files, patterns or a directory of one dataset.")],
    n: Annotated[int, typer.Option("--n", help="Number of samples.")],
    out: Annotated[Path, typer.Option("--out", help="Raw images (N, C, H, W) as little-endian float32 .npy.")],
    scalars_out: Annotated[Optional[Path], typer.Option("--scalars-out", help="Also write the scalar inputs (N, S).")] = None,
    labels_out: Annotated[Optional[Path], typer.Option("--labels-out", help="Also write the labels (N,).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="A random subset (default: the first N samples).")] = None,
    format: Annotated[str, typer.Option("--format", help="Dataset format, or 'auto'.")] = "auto",
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickled DeepLense axion files (trusted files only).")] = False,
    options: Annotated[Optional[list[str]], typer.Option("--option", help="Reader option key=value.")] = None,
) -> None:
    """Write a batch of raw (un-normalised) inputs as .npy files for the C++ tool."""
    from e2evision.export import sample_dataset, write_sample

    if n < 1:
        _fail("--n must be at least 1")
    try:
        s = sample_dataset(paths, n, format=format, seed=seed, **_reader_options(allow_pickle, options))
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    for p in write_sample(s, out, scalars_out, labels_out):
        typer.echo(f"wrote {p}")
    typer.echo(f"{s.images.shape[0]} samples, images {tuple(s.images.shape[1:])}"
               + (f", scalars {', '.join(s.scalar_names)}" if s.scalar_names else ""))


@app.command("verify-cpp")
def verify_cpp_cmd(
    model: Annotated[Path, typer.Argument(help="An exported model (.pt or .pt2) with preprocess.json beside it.")],
    raw: Annotated[Path, typer.Option("--raw", help="Raw images .npy (from e2evision sample).")],
    scalars: Annotated[Optional[Path], typer.Option("--scalars", help="Scalar inputs .npy, when the model takes them.")] = None,
    tool: Annotated[Optional[Path], typer.Option("--tool", help="e2evision-infer (default: cpp/build, built if missing).")] = None,
    atol: Annotated[float, typer.Option(help="Absolute tolerance.")] = 1e-5,
    rtol: Annotated[float, typer.Option(help="Relative tolerance.")] = 0.0,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Rows per engine call (default: all).")] = None,
) -> None:
    """Run the C++ engine on raw inputs and compare with PyTorch's training module on the same inputs."""
    import numpy as np

    from e2evision.export import ExportError, ensure_built, verify_cpp

    try:
        x = np.load(raw, allow_pickle=False)
        s = np.load(scalars, allow_pickle=False) if scalars is not None else None
    except (OSError, ValueError) as err:
        _fail(f"cannot read the inputs: {err}")
    try:
        result = verify_cpp(model, x, s, tool=tool or ensure_built(), atol=atol, rtol=rtol, batch_size=batch_size)
    except ExportError as err:  # a failed check, not a usage error: exit 1, as a failing test
        _fail(str(err), code=1)
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in result.max_abs_diff.items())
    typer.echo(f"C++ engine matches PyTorch on {result.rows} samples: max |Δ| {diffs} (tolerance {atol:g} + {rtol:g}·|ref|)")


@app.command()
def features(
    data: Annotated[Path, typer.Argument(help="Lensing images: a DeepLense folder <class>/*.npy (or another single-channel dataset).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Table to write, .csv or .npz (default: DATA/features.csv).")] = None,
    pixel_scale: Annotated[Optional[float], typer.Option("--pixel-scale", help="Arcsec per pixel (default: the simulator's metadata.json, else 0.05).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images read and measured at once.")] = 256,
    format: Annotated[str, typer.Option("--format", help="Dataset format, or 'auto'.")] = "auto",
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickled DeepLense axion files (trusted files only).")] = False,
    options: Annotated[Optional[list[str]], typer.Option("--option", help="Reader option key=value, e.g. classes=[no,sphere,vort].")] = None,
) -> None:
    """Lens physics features per image (ring area, bright peaks, Einstein radius, asymmetry), stored beside the images."""
    import numpy as np

    from e2evision.features.lensing import LensFeatureParams, read_features, write_features

    if batch_size < 1:
        _fail("--batch-size must be >= 1")
    try:
        params = None if pixel_scale is None else LensFeatureParams(pixel_scale_arcsec=pixel_scale)
        path = write_features(data, out, params, format=format, reader_kwargs=_reader_options(allow_pickle, options),
                              batch_size=batch_size)
    except (FileNotFoundError, TypeError, ValueError) as err:
        _fail(str(err))
    table = read_features(path)
    meta = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    typer.echo(f"wrote {path} ({table['index'].size} images; pixel scale {meta['params']['pixel_scale_arcsec']}″ "
               f"from {meta['pixel_scale_source']})")
    for name in meta["features"]:
        v = table[name]
        typer.echo(f"{name:<24} median {float(np.median(v)):>9.4g}   [{float(v.min()):.4g}, {float(v.max()):.4g}]")


def main() -> None:
    # The command line's one process-wide setting: figures go to files, never to a window
    # (libraries it drives, such as optuna's plots, draw through pyplot). A user's choice wins.
    os.environ.setdefault("MPLBACKEND", "Agg")
    app()


if __name__ == "__main__":
    main()
