"""One validated reader for every finished run directory: a trained run, a physics baseline or an
ensemble. Problems are found here, where the message can name the file and the field, so the
report, ensembles and other readers can trust what they get."""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.datasets.task import TASK_NAMES, get_task
from e2evision.rundir.layout import (
    CONFIG_FILE,
    FOLD_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    WEIGHTS_FILE,
)
from e2evision.utils.io import open_npz

_COMMON = ("name", "model", "task", "n_params", "train_time_s", "epochs", "history")
#: Keys of ``metrics.json`` a complete run has, per task (a regression run also needs
#: ``test_mae`` or an ensemble's ``test.mae``).
REQUIRED_METRICS: dict[str, tuple[str, ...]] = {
    "binary": (*_COMMON, "fold_auc", "fold_auc_mean", "fold_auc_std", "oof_auc", "test_auc", "test_auc_ci"),
    "multiclass": (*_COMMON, "fold_auc", "fold_auc_mean", "fold_auc_std", "oof_auc", "test_auc", "test_auc_ci"),
    "regression": (*_COMMON, "fold_mae", "oof_mae"),
}
assert set(REQUIRED_METRICS) == set(TASK_NAMES)
#: Arrays of ``predictions.npz`` every reader needs (the ``oof_*`` arrays are optional here).
REQUIRED_PREDICTIONS: tuple[str, ...] = ("test_score", "test_label", "test_fold_scores")


@dataclass
class RunRecord:
    """Everything read from one run directory, validated once so that its users can trust it."""

    path: Path
    metrics: dict[str, Any]
    preds: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)  # run.json, {} when absent
    config: str | None = None  # config.yaml text, None when absent

    @property
    def name(self) -> str:
        return str(self.metrics.get("name", self.path.name))

    @property
    def task(self) -> str:
        return str(self.metrics["task"])

    @property
    def class_names(self) -> list[str]:
        names = self.metrics.get("class_names") or (self.info.get("data") or {}).get("class_names") or []
        return [str(n) for n in names]

    def test_mae(self) -> float:
        """Test MAE from the trainer's ``test_mae`` or an ensemble's ``test.mae`` (recomputed if absent)."""
        if "test_mae" in self.metrics:
            return _num(self.metrics["test_mae"])
        test = self.metrics.get("test")
        if isinstance(test, Mapping) and "mae" in test:
            return _num(test["mae"])
        return float(np.mean(np.abs(self.preds["test_score"] - self.preds["test_label"])))


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_run(run_dir: str | os.PathLike[str], *, complete: bool = True) -> RunRecord:
    """Read and validate one run directory, naming the path and the culprit in every error.

    ``metrics.json`` (with a known ``task``) and ``predictions.npz`` (test scores that fit the
    task) are required; ``run.json`` and ``config.yaml`` are read when present. ``complete``
    also requires the metrics a report shows (:data:`REQUIRED_METRICS`).
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"run directory {path} is not a directory")
    metrics = read_metrics(path, complete=complete)
    preds = read_predictions(path)
    check_predictions(preds, path / PREDICTIONS_FILE, str(metrics["task"]))
    info: dict[str, Any] = {}
    info_path = path / RUN_FILE
    if info_path.is_file():
        try:
            loaded = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{info_path} is not valid JSON: {exc}") from exc
        info = loaded if isinstance(loaded, dict) else {}
    config_path = path / CONFIG_FILE
    config = config_path.read_text(encoding="utf-8", errors="replace") if config_path.is_file() else None
    return RunRecord(path=path, metrics=metrics, preds=preds, info=info, config=config)


def read_metrics(run_dir: str | os.PathLike[str], *, complete: bool = True) -> dict[str, Any]:
    """``metrics.json`` of a finished run: a JSON object with a known task (and, when ``complete``,
    every key a report needs, ``epochs`` a list of integers)."""
    path = Path(run_dir)
    metrics_path = path / METRICS_FILE
    if not metrics_path.is_file():
        missing = "" if path.exists() else ": the directory does not exist"
        raise FileNotFoundError(f"{path}: not a finished run ({METRICS_FILE} is missing){missing}")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{metrics_path} is not valid JSON: {exc}") from exc
    if not isinstance(metrics, dict):
        raise ValueError(f"{metrics_path} must hold a JSON object, got {type(metrics).__name__}")  # noqa: TRY004
    if "task" not in metrics:
        raise ValueError(f"{metrics_path} lacks the required key 'task'")
    task = metrics["task"]
    if task not in REQUIRED_METRICS:
        raise ValueError(
            f"{metrics_path}: unknown task {task!r}; the run directory holds {', '.join(REQUIRED_METRICS)} runs"
        )
    if complete:
        _check_complete(metrics, metrics_path, task)
    return metrics


def _check_complete(metrics: dict[str, Any], where: Path, task: str) -> None:
    missing = [k for k in REQUIRED_METRICS[task] if k not in metrics]
    if get_task(task).is_regression and "test_mae" not in metrics and not isinstance(metrics.get("test"), Mapping):
        missing.append("test_mae")
    if missing:
        keys = ", ".join(repr(k) for k in missing)
        raise ValueError(f"{where} lacks the required key(s) {keys} of a {task} run")
    epochs = metrics["epochs"]
    if not isinstance(epochs, list) or not all(type(e) is int for e in epochs):
        raise ValueError(
            f"{where}: field 'epochs' must be a list of integers (epochs per "
            f"fold), got {type(epochs).__name__}; rewrite it or retrain the run"
        )


def read_predictions(run_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of ``predictions.npz`` (numeric and string arrays only: no pickles)."""
    path = Path(run_dir)
    preds_path = path / PREDICTIONS_FILE
    if not preds_path.is_file():
        raise FileNotFoundError(f"{path}: not a finished run ({PREDICTIONS_FILE} is missing)")
    try:
        with open_npz(preds_path) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"{preds_path} could not be read as a numeric .npz (truncated or not an "
            f".npz: {exc}); copy the run again or retrain it"
        ) from exc


def check_predictions(preds: Mapping[str, np.ndarray], where: Path, task: str) -> None:
    """Catch shape and label mistakes here, where the message can name the file."""
    missing = [k for k in REQUIRED_PREDICTIONS if k not in preds]
    if missing:
        raise ValueError(f"{where} lacks the required array(s) {', '.join(map(repr, missing))}")
    score, label, folds = preds["test_score"], preds["test_label"], preds["test_fold_scores"]
    n = label.shape[0] if label.ndim == 1 else -1
    if label.ndim != 1 or score.shape[:1] != label.shape:
        raise ValueError(
            f"{where}: test_score {score.shape} and test_label {label.shape} must have one row per test sample"
        )
    if not np.isfinite(score).all():
        raise ValueError(f"{where}: test_score has NaN or infinite values")
    t = get_task(task)
    if t.is_multiclass:
        if score.ndim != 2 or score.shape[1] < 2:
            raise ValueError(f"{where}: a multiclass test_score must be (N, K) with K >= 2, got {score.shape}")
        k = score.shape[1]
        if folds.ndim != 3 or folds.shape[1:] != score.shape:
            raise ValueError(f"{where}: test_fold_scores must have shape (folds, {n}, {k}), got {folds.shape}")
        bad = set(np.unique(label).tolist()) - set(range(k))
        if bad:
            raise ValueError(f"{where}: test_label has values {sorted(bad)} outside the classes 0..{k - 1}")
        return
    if score.ndim != 1:
        raise ValueError(f"{where}: test_score must be 1-D for a {task} run, got {score.shape}")
    if folds.ndim != 2 or folds.shape[1] != n:
        raise ValueError(f"{where}: test_fold_scores must have shape (K, {n}), got {folds.shape}")
    if t.is_regression:
        if not np.isfinite(label).all():
            raise ValueError(f"{where}: test_label has NaN or infinite values")
        return
    classes = set(np.unique(label).tolist())
    if not classes <= {0, 1} or len(classes) < 2:
        raise ValueError(f"{where}: test_label must contain both classes 0 and 1, found {sorted(classes)}")


def read_finished_fold(fold_path: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(fold.json, weights)`` of a fold an earlier run finished, or None when it did not finish.

    The weights are read as safetensors (never unpickled).
    """
    info, weights = fold_path / FOLD_FILE, fold_path / WEIGHTS_FILE
    if not (info.exists() and weights.exists()):
        return None
    from safetensors.torch import load_file

    return json.loads(info.read_text()), load_file(weights)
