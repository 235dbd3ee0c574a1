"""Writers of the run directory's files: every writer of a run (trainer, baseline, ensemble) uses
these, so the files have one layout whoever wrote them. Writes are atomic (a reader never sees a
half-written file) and hold no pickles."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.rundir.layout import (
    CHECKPOINT_DIR,
    CHECKPOINT_META_FILE,
    CONFIG_FILE,
    FOLD_FILE,
    METRICS_FILE,
    NORMALIZER_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    WEIGHTS_FILE,
)
from e2evision.utils import atomic_path, atomic_write_json, atomic_write_text


def jsonable(obj: Any) -> Any:
    """Arrays → lists, NumPy scalars → Python, NaN/±inf → None: metrics.json stays strict JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_arrays(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """An uncompressed ``.npz`` of numeric/string arrays, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)


def write_predictions(
    run_dir: str | os.PathLike[str],
    *,
    oof_score: np.ndarray,
    oof_label: np.ndarray,
    oof_fold: np.ndarray,
    oof_index: np.ndarray,
    test_score: np.ndarray,
    test_label: np.ndarray,
    test_index: np.ndarray,
    test_fold_scores: np.ndarray,
    **extra: Any,
) -> Path:
    """``predictions.npz``: out-of-fold and test scores with their labels, folds and sample indices.

    ``extra`` arrays ride along (``test_scalars``, ``scalar_names``, ``class_names`` of a run;
    ``member_test_scores`` of an ensemble).
    """
    return write_arrays(
        Path(run_dir) / PREDICTIONS_FILE,
        oof_score=oof_score,
        oof_label=oof_label,
        oof_fold=oof_fold,
        oof_index=oof_index,
        test_score=test_score,
        test_label=test_label,
        test_index=test_index,
        test_fold_scores=test_fold_scores,
        **extra,
    )


def write_config(run_dir: str | os.PathLike[str], text: str) -> Path:
    """``config.yaml`` (the resolved config's YAML)."""
    path = Path(run_dir) / CONFIG_FILE
    atomic_write_text(path, text)
    return path


def write_run_info(run_dir: str | os.PathLike[str], info: Mapping[str, Any]) -> Path:
    """``run.json``: the run's provenance."""
    path = Path(run_dir) / RUN_FILE
    atomic_write_json(path, dict(info))
    return path


def write_metrics(run_dir: str | os.PathLike[str], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics.json`` as strict JSON (NaN and ±inf become null); returns what was written."""
    clean = jsonable(dict(metrics))
    atomic_write_json(Path(run_dir) / METRICS_FILE, clean)
    return clean


def write_checkpoint_meta(fold_path: Path, meta: Mapping[str, Any]) -> Path:
    """``fold_K/checkpoints/meta.json``: which config and split an interrupted fold's checkpoint is of."""
    path = fold_path / CHECKPOINT_DIR / CHECKPOINT_META_FILE
    atomic_write_json(path, dict(meta))
    return path


def write_fold(
    fold_path: Path, state_dict: Mapping[str, Any], normalizer: Mapping[str, Any], record: Mapping[str, Any]
) -> None:
    """A finished fold: ``model.safetensors`` (best epoch), ``normalizer.json`` and ``fold.json``.

    ``fold.json`` goes last: its presence is what marks the fold finished.
    """
    from safetensors.torch import save_file

    with atomic_path(fold_path / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp))
    atomic_write_json(fold_path / NORMALIZER_FILE, dict(normalizer))
    atomic_write_json(fold_path / FOLD_FILE, dict(record))
