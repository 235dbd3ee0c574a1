"""Bayesian hyper-parameter search with Optuna's TPE over a space declared in the config.

    tune:
      metric: fold_auc_mean          # what a trial returns (never the test split); default: the
                                     # run's monitor (fold_mae_mean for regression, minimised)
      pruner: median                 # stop trials whose validation metric lags the median
      params:
        train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        model.kwargs.depth: {type: int, low: 2, high: 6}
        model.kwargs.patch_size: {type: categorical, choices: [2, 4]}
        augment.flip_phi: {type: categorical, choices: [true, false]}

Every trial is an ordinary K-fold run in ``STUDY_DIR/trial_NNNN`` (so a trial can be reported and
reproduced like any run). Intermediate validation metrics (AUC, or MAE for regression) of the first
fold are reported to Optuna
each epoch, so the pruner can stop hopeless trials early. The study lives in a storage: a local
SQLite file by default, or any SQLAlchemy URL — with a PostgreSQL server, workers on many machines
run ``e2evision tune`` with the same ``--study`` and ``--storage`` and share the search.
The best trial is written as ``best_config.yaml``, ready for ``e2evision train``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from e2evision.config import ExperimentConfig, load_config
from e2evision.tuning.space import ParamSpec, TuneConfig
from e2evision.utils import atomic_write_json, atomic_write_text
from e2evision.utils.extras import require


def suggest(trial: Any, params: dict[str, ParamSpec]) -> dict[str, Any]:
    """Ask ``trial`` for a value of every parameter; returns {dotted key: value}."""
    out: dict[str, Any] = {}
    for key, spec in params.items():
        if spec.type == "float":
            out[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)
        elif spec.type == "int":
            out[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))
        else:
            out[key] = trial.suggest_categorical(key, spec.choices)
    return out


#: metric -> (task kinds it applies to, direction, the per-epoch validation metric that prunes)
METRICS = {
    "fold_auc_mean": (("binary", "multiclass"), "maximize", "val_auc"),
    "oof_auc": (("binary", "multiclass"), "maximize", "val_auc"),
    "fold_mae_mean": (("regression",), "minimize", "val_mae"),
    "oof_mae": (("regression",), "minimize", "val_mae"),
}


def objective_for(tune: TuneConfig, task: str) -> tuple[str, str, str]:
    """``(metric, direction, pruning monitor)`` for ``task``: the config's, or the run's monitor.

    A metric that the task does not produce, or a direction against the metric, is an error
    before any trial trains (it used to be a KeyError after the first one).
    """
    metric = tune.metric or ("fold_mae_mean" if task == "regression" else "fold_auc_mean")
    tasks, direction, monitor = METRICS[metric]
    if task not in tasks:
        fits = ", ".join(k for k, v in METRICS.items() if task in v[0])
        raise ValueError(
            f"tune.metric: {metric} is not measured for a {task} task; use one of "
            f"{fits} (or leave it out: the run's monitor)"
        )
    if tune.direction is not None and tune.direction != direction:
        better = "lower" if direction == "minimize" else "higher"
        raise ValueError(
            f"tune.direction: {tune.direction} for {metric}, which is better when "
            f"{better}; use {direction} or leave it out"
        )
    return metric, direction, monitor


def data_task(cfg: Any) -> str:
    """The task of the config's data (binary, multiclass, regression), from the files' metadata."""
    from e2evision.datasets.experiment import (
        open_experiment_data,  # deferred: reads the data's files
    )

    if not cfg.data.paths:
        raise ValueError("no data: set data.paths in the config or pass --data")
    with open_experiment_data(cfg) as reader:
        return str(reader.task)


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


_STORAGE_HINT = "give a SQLAlchemy URL such as sqlite:///study.db or postgresql+psycopg://user@host/db"


def check_storage_url(url: str) -> None:
    """A malformed URL or a missing database driver, said before any data is opened."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as err:
        problem = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"--storage {_redact(url)}: not a usable storage URL ({problem}); {_STORAGE_HINT}") from None


def _storage(url: str) -> Any:
    """Optuna's RDB storage for ``url``; a bad URL or a missing driver is a one-line ValueError."""
    import optuna
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            # Several local workers share one SQLite file: wait for its lock instead of failing.
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as err:
        problem = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"--storage {_redact(url)}: not a usable storage URL ({problem}); {_STORAGE_HINT}") from None


def run_study(
    cfg: Any,
    study_name: str,
    n_trials: int,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    storage: str | None = None,
    worker: int = 0,
) -> dict[str, Any]:
    """Run ``n_trials`` trials of ``cfg``'s search space in this process (one worker of the study).

    Returns a summary of the whole study (all workers' trials so far) and writes
    ``best_config.yaml``, ``trials.json`` and the history / importance plots into the study folder.
    """
    optuna = require("optuna", "tune")
    from e2evision.training import run_experiment  # deferred: torch and Lightning

    tune: TuneConfig | None = cfg.tune
    if tune is None or not tune.params:
        raise ValueError("the config has no 'tune.params' search space")
    if storage is not None:
        check_storage_url(storage)
    metric, direction, monitor = objective_for(tune, data_task(cfg))
    study_dir = Path(out_dir or Path("runs") / "tune" / study_name)
    study_dir.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(study_dir)
    sampler = optuna.samplers.TPESampler(seed=cfg.seed + worker, n_startup_trials=tune.n_startup_trials)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=tune.n_startup_trials, n_warmup_steps=tune.n_warmup_steps)
        if tune.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = _create_study(study_name, url, sampler, pruner, direction)
    base = cfg.model_dump(mode="json")

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, tune.params)
        overrides = [f"{k}={json.dumps(v)}" for k, v in values.items()]
        trial_cfg: ExperimentConfig = load_config(
            data={**base, "name": f"{study_name}_trial{trial.number:04d}"}, overrides=overrides
        )
        run_dir = study_dir / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", worker)
        metrics = run_experiment(
            trial_cfg,
            run_dir,
            command=f"e2evision tune (study {study_name})",
            extra_callbacks=lambda fold: [_PruneOnValidation(trial, monitor)] if fold == 0 else [],
        )
        return float(metrics[metric])

    study.optimize(objective, n_trials=n_trials, catch=(), gc_after_trial=True)
    return summarize(study, cfg, study_dir, url, metric)


def _create_study(name: str, url: str, sampler: Any, pruner: Any, direction: str, attempts: int = 5) -> Any:
    """Create or join the study; workers starting together race to create the schema, so retry."""
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return optuna.create_study(
                study_name=name,
                storage=_storage(url),
                sampler=sampler,
                pruner=pruner,
                direction=direction,
                load_if_exists=True,
            )
        except (OperationalError, IntegrityError, optuna.exceptions.DuplicatedStudyError) as err:
            if attempt == attempts - 1:
                if isinstance(err, OperationalError):
                    problem = (str(err.orig).strip().splitlines() or ["cannot connect"])[0]
                    raise ValueError(
                        f"--storage {_redact(url)}: cannot open the storage ({problem}); "
                        "check the server, the database and the credentials, or "
                        f"{_STORAGE_HINT}"
                    ) from None
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


class _PruneOnValidation:
    """Lightning callback: report the first fold's validation metric each epoch; prune if told."""

    # built lazily, so that importing this module needs no Lightning
    def __new__(cls, trial: Any, monitor: str = "val_auc"):
        import lightning.pytorch as pl
        import optuna

        class _Callback(pl.Callback):
            # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the
            # module's, where the metric is computed, so only here is this epoch's value available.
            def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
                if trainer.sanity_checking or monitor not in trainer.callback_metrics:
                    return
                epoch = int(trainer.current_epoch)
                value = float(trainer.callback_metrics[monitor])
                trial.report(value, step=epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"{monitor} {value:.4f} at epoch {epoch} is worse than the median of earlier trials"
                    )

        return _Callback()


def summarize(study: Any, cfg: Any, study_dir: Path, url: str, metric: str | None = None) -> dict[str, Any]:
    """Write the best trial's config, a trial table and plots; return the summary."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "run_dir": t.user_attrs.get("run_dir"),
            "worker": t.user_attrs.get("worker"),
        }
        for t in trials
    ]
    summary: dict[str, Any] = {
        "study": study.study_name,
        "storage": _redact(url),
        "n_trials": len(trials),
        "n_complete": len(done),
        "metric": metric or cfg.tune.metric,
        "direction": study.direction.name.lower(),
        "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "trials": rows,
    }
    if done:
        best = study.best_trial
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
        }
        best_cfg = load_config(
            data={**cfg.model_dump(mode="json"), "name": f"{study.study_name}_best", "tune": None},
            overrides=[f"{k}={json.dumps(v)}" for k, v in best.params.items()],
        )
        atomic_write_text(
            study_dir / "best_config.yaml",
            f"# best trial {best.number} of study {study.study_name}: "
            f"{metric or cfg.tune.metric} = {best.value:.6f}\n" + best_cfg.to_yaml(),
        )
        summary["best_config"] = str(study_dir / "best_config.yaml")
        summary["plots"] = _plots(study, study_dir, len(done))
    atomic_write_json(study_dir / "trials.json", summary)
    return summary


def _plots(study: Any, study_dir: Path, n_done: int) -> list[str]:
    """Optimisation history and (with ≥ 2 finished trials) parameter importances, as PNGs.

    optuna draws through pyplot and sets its own style: the style is undone on return and only
    the figures made here are closed (the backend is the caller's; the CLI picks Agg).
    """
    import warnings

    import matplotlib  # deferred: plotting libraries load only when a study has finished trials
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = []
    before = set(plt.get_fignums())
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        ax = ovm.plot_optimization_history(study)
        path = study_dir / "history.png"
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
        out.append(str(path))
        if n_done >= 2 and len(study.best_trial.params) >= 1:
            try:
                ax = ovm.plot_param_importances(study)
                path = study_dir / "importance.png"
                ax.figure.savefig(path, dpi=100, bbox_inches="tight")
                out.append(str(path))
            except (ValueError, RuntimeError):  # e.g. all trials share one value
                pass
    for number in set(plt.get_fignums()) - before:
        plt.close(number)
    return out


def _redact(url: str) -> str:
    """Hide a password in a database URL before it is written to disk."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
