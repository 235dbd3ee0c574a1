"""Commands that train or compare: ``train``, ``report``, ``ablation``, ``tune``, ``baseline``, ``ensemble``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from e2evision.cli.app import _fail, _headline, _overrides, app


@app.command()
def train(
    config: Annotated[
        Optional[Path],
        typer.Argument(
            help="Experiment config (YAML file, or a packaged config name: e2evision configs); with --resume, defaults to OUT/config.yaml."
        ),
    ] = None,
    data: Annotated[
        Optional[list[Path]], typer.Option("--data", help="Data files/directories (replace data.paths).")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default runs/NAME).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override the config's seed.")] = None,
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a field: key.path=value (repeatable).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run in --out from its last checkpoints (starts fresh if there are none).",
        ),
    ] = False,
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


@app.command()
def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories to compare; also ablation folders (e2evision ablation) and tune study folders."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")],
    title: Annotated[str, typer.Option(help="Page title.")] = "e2evision report",
    saliency: Annotated[
        bool,
        typer.Option(help="Compute saliency maps from fold 0's weights and the data for runs without saliency.npz."),
    ] = True,
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
    data: Annotated[
        Optional[list[Path]], typer.Option("--data", help="Data files/directories (replace data.paths).")
    ] = None,
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a field: key.path=value (repeatable).")
    ] = None,
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
    storage: Annotated[
        Optional[str],
        typer.Option(
            "--storage",
            help="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db (default: SQLite in the study folder).",
        ),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Study folder (default runs/tune/STUDY).")] = None,
    data: Annotated[
        Optional[list[Path]], typer.Option("--data", help="Data files/directories (replace data.paths).")
    ] = None,
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
    typer.echo(
        f"study {study}: {summary['n_complete']} complete, {summary['n_pruned']} pruned of {summary['n_trials']}"
    )
    if best:
        typer.echo(f"best trial {best['number']}: {best['value']:.4f} with {best['params']}")
        typer.echo(f"wrote {summary['best_config']}")


@app.command()
def baseline(
    config: Annotated[Path, typer.Argument(help="The experiment config whose data and split to use.")],
    data: Annotated[
        Optional[list[Path]], typer.Option("--data", help="Data files/directories (replace data.paths).")
    ] = None,
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
    scalars: Annotated[
        bool, typer.Option("--scalars", help="Also feed the dataset's scalar features (pt, m0, ...).")
    ] = False,
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
    typer.echo(
        f"{m['name']}: {_headline(m)}, best member {m['best_member']} "
        f"({test} p = {m['versus_best_member']['p_value']:.3g}) -> {out}"
    )
