"""The run directory's layout: its file names, where a fold lives, its error and the config hash.

A run directory is the contract between training and everything that reads its results (report,
ensembles, export, prediction). Every file name is spelled here once::

    config.yaml          the resolved config (an ensemble's: its members and method)
    run.json             provenance: seed, versions, data paths and fingerprint, timings, device
    metrics.json         per task: AUCs / rejection / binned AUC, or MAE / resolution; history, ...
    predictions.npz      out-of-fold and test scores (numeric arrays, no pickles)
    saliency.npz         gradient × input of fold 0's model on a few test images of each class
    features.npz         the physics baseline's expert features
    ensemble.json        an ensemble's combiner (+ combiner_train.npz for gradient boosting)
    fold_K/              model.safetensors (best epoch), normalizer.json, fold.json, logs/,
                         checkpoints/last.ckpt (+ meta.json)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from e2evision.errors import RunDirError

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
SALIENCY_FILE = "saliency.npz"
FEATURES_FILE = "features.npz"
ENSEMBLE_FILE = "ensemble.json"
COMBINER_TRAIN_FILE = "combiner_train.npz"
#: an exported model's contract, written beside the model file (not inside the run directory)
PREPROCESS_FILE = "preprocess.json"
FOLD_PREFIX = "fold_"
WEIGHTS_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.json"
FOLD_FILE = "fold.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_META_FILE = "meta.json"

#: config fields that do not change a fold's result: hardware, display, logging, checkpoint
#: cadence (they change a fold's numbers at most by float rounding)
NOT_HASHED = (
    "progress",
    "num_workers",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "loggers",
    "checkpoint_every_n_steps",
    "channels_last",
    "compile",
    "matmul_precision",
    "not_learning_epochs",
)


# The run directory holds something this run must not mix with or load (names the file); defined
# with its family in e2evision.errors and re-exported here, beside the layout it guards.


def fold_dir(run_dir: str | os.PathLike[str], fold: int) -> Path:
    """``run_dir/fold_K``: where fold ``fold``'s weights, normaliser and record live."""
    return Path(run_dir) / f"{FOLD_PREFIX}{int(fold)}"


def fold_numbers(run_dir: str | os.PathLike[str]) -> list[int]:
    """The folds of ``run_dir`` that have weights, in order (an interrupted run has fewer)."""
    folds = []
    for d in Path(run_dir).glob(f"{FOLD_PREFIX}*"):
        suffix = d.name.removeprefix(FOLD_PREFIX)
        if d.is_dir() and suffix.isdigit() and (d / WEIGHTS_FILE).is_file():
            folds.append(int(suffix))
    return sorted(folds)


def is_ensemble(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` was written by ``e2evision ensemble`` (it has no folds of its own)."""
    return (Path(run_dir) / ENSEMBLE_FILE).is_file()


def read_json(path: Path, what: str | None = None) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unreadable or non-object file is a RunDirError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: {what or path.name} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return data


# ----------------------------------------------------------------------------------- config hash
def hashed_config(cfg: Any) -> dict[str, Any]:
    """The fields of an ExperimentConfig that change a fold's result, as JSON-able data."""
    data = cfg.model_dump(mode="json")
    data.pop("tune", None)  # a search space does not change how one config trains
    for key in NOT_HASHED:
        data["train"].pop(key, None)
    return data


def config_hash(cfg: Any) -> str:
    """Hash of everything that changes a fold's result (not hardware, display or logging settings)."""
    return hashlib.sha256(json.dumps(hashed_config(cfg), sort_keys=True).encode()).hexdigest()


def config_diff(old: Any, new: Any) -> list[str]:
    """Dotted names of the hashed fields in which two configs differ (sorted)."""
    a, b = _flatten(hashed_config(old)), _flatten(hashed_config(new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
    return out
