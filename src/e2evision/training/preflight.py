"""Checks made before a run directory is touched, so that it never says what did not happen.

``train`` writes ``config.yaml`` and ``run.json`` (the run's provenance) only after these pass:

* the labels can be trained on: two classes for a binary task, every class present, enough
  samples of each class for ``train.folds`` (scikit-learn would fail only later, in its words);
* every finished fold in the directory (``fold_K/fold.json``) and every interrupted one
  (``checkpoints/meta.json``) was made from this config, this split and these very bytes of data
  (the data fingerprint each fold records), so an old model's metrics are never reported on new
  data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.datasets.base import DatasetError
from e2evision.datasets.task import get_task
from e2evision.errors import PreflightError, RunDirError  # defined with their family
from e2evision.rundir import (
    CHECKPOINT_DIR,
    CHECKPOINT_META_FILE,
    FOLD_FILE,
    RUN_FILE,
    fold_dir,
)

__all__ = ["PreflightError", "RunDirError", "check_finished_folds", "check_training_labels", "fold_fingerprint"]


def check_training_labels(labels: np.ndarray, task: str, folds: int, n_classes: int, where: str) -> None:
    """Refuse labels that cannot be cross-validated, before any fold trains."""
    if get_task(task).is_regression:
        if labels.size < folds:
            raise PreflightError(
                f"train.folds: {folds} folds need at least {folds} samples, {where} has "
                f"{labels.size}; lower train.folds or add data"
            )
        return
    values, counts = np.unique(labels, return_counts=True)
    need = 2 if task == "binary" else n_classes
    if values.size < need:
        have = ", ".join(f"{v:g}: {c}" for v, c in zip(values, counts))
        raise DatasetError(
            where,
            f"labels hold {values.size} class(es) ({have}); a {task} task needs {need} "
            "(give the data of every class, e.g. both --data files)",
        )
    small = int(np.argmin(counts))
    if counts[small] < folds:
        raise PreflightError(
            f"train.folds: {folds} folds need at least {folds} samples of every class, "
            f"class {values[small]:g} of {where} has {counts[small]}; lower train.folds or add data"
        )


def fold_fingerprint(data_fp: str, features: dict[str, str] | None) -> str:
    """The identity of the data a fold saw: the files' fingerprint and the features table's hash."""
    if not features:
        return data_fp
    return "sha256:" + hashlib.sha256(f"{data_fp}|{features.get('sha256', '')}".encode()).hexdigest()


def check_finished_folds(out: Path, val_rows: list[np.ndarray], cfg_hash: str, data_fp: str) -> None:
    """Refuse a run directory whose finished or interrupted folds belong to other data or config."""
    legacy_fp = _recorded_fingerprint(out)
    for k, va in enumerate(val_rows):
        fold_path = fold_dir(out, k)
        info = fold_path / FOLD_FILE
        if info.is_file():
            done = _read(info)
            if done.get("config_sha256") != cfg_hash or done.get("val_rows") != va.tolist():
                raise RunDirError(
                    f"{fold_path}: a finished fold from a different config or data split is in "
                    "the way; use a new output directory or delete the old one"
                )
            seen = done.get("data_fingerprint", legacy_fp)
            if seen != data_fp:
                raise RunDirError(
                    f"{info}: field 'data_fingerprint' is {seen}, the data now is {data_fp}: the "
                    "fold was trained on other data; use a new output directory (or delete "
                    f"{fold_path} to retrain it)"
                )
        meta = fold_path / CHECKPOINT_DIR / CHECKPOINT_META_FILE
        if meta.is_file():
            seen = _read(meta).get("data_fingerprint", legacy_fp)
            if seen is not None and seen != data_fp:
                raise RunDirError(
                    f"{meta}: field 'data_fingerprint' is {seen}, the data now is {data_fp}: "
                    "cannot resume on other data; use a new output directory"
                )


def _recorded_fingerprint(out: Path) -> str | None:
    """The run's fingerprint from ``run.json`` (folds written before folds recorded their own)."""
    path = out / RUN_FILE
    if not path.is_file():
        return None
    return (_read(path).get("data") or {}).get("fingerprint")


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path}: cannot be read ({err}); delete it or use a new output directory") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path}: not a JSON object; delete it or use a new output directory")
    return value
