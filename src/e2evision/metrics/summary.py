"""The task's entries of ``metrics.json``, from out-of-fold and test scores.

One function for every writer of a run directory (the trainer, the physics baseline, ensembles),
so that the same key means the same number whichever of them wrote it (see docs/training.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from e2evision.datasets.task import Task, get_task
from e2evision.metrics.classification import bootstrap_auc, bootstrap_metric, roc_auc
from e2evision.metrics.delong import delong_auc_ci
from e2evision.metrics.multiclass import confusion_matrix, one_vs_rest_auc
from e2evision.metrics.physics import auc_in_bins, background_rejection
from e2evision.metrics.regression import regression_in_bins, regression_summary

__all__ = ["SIGNAL_EFFICIENCIES", "spread", "task_metrics"]

#: signal efficiencies at which metrics.json reports the background rejection 1/ε_B
SIGNAL_EFFICIENCIES: tuple[float, ...] = (0.3, 0.5)


def task_metrics(
    task: str | Task,
    y_tv: np.ndarray,
    oof: np.ndarray,
    oof_fold: np.ndarray,
    y_test: np.ndarray,
    test_score: np.ndarray,
    *,
    seed: int,
    class_names: list[str] | None = None,
    scalars: dict[str, np.ndarray] | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """The task's entries of metrics.json from out-of-fold and test scores (see docs/training.md).

    ``oof_fold`` gives each out-of-fold row's fold (``-1``: not scored); the fold lists are the
    metric on each fold's own rows. ``scalars`` (binary only) adds the AUC in bins of ``pt``.
    """
    t = get_task(task)
    folds = sorted(int(f) for f in np.unique(oof_fold) if f >= 0)
    if t.is_regression:
        return _regression(y_tv, oof, oof_fold, folds, y_test, test_score, seed, n_boot)
    if t.is_multiclass:
        return _multiclass(y_tv, oof, oof_fold, folds, y_test, test_score, seed, n_boot, class_names)
    return _binary(y_tv, oof, oof_fold, folds, y_test, test_score, seed, n_boot, scalars)


def _binary(
    y_tv: np.ndarray,
    oof: np.ndarray,
    oof_fold: np.ndarray,
    folds: list[int],
    y_test: np.ndarray,
    test_score: np.ndarray,
    seed: int,
    n_boot: int,
    scalars: dict[str, np.ndarray] | None,
) -> dict[str, Any]:
    fold_auc = [roc_auc(y_tv[oof_fold == f], oof[oof_fold == f]) for f in folds]
    auc, lo, hi = bootstrap_auc(y_test, test_score, n_boot=n_boot, seed=seed)
    delong = delong_auc_ci(y_test, test_score)
    rej = background_rejection(y_test, test_score, SIGNAL_EFFICIENCIES)
    out: dict[str, Any] = {
        **spread("fold_auc", fold_auc),
        "oof_auc": roc_auc(y_tv, oof),
        "test_auc": float(auc),
        "test_auc_ci": [lo, hi],
        "test_auc_delong_ci": [delong["low"], delong["high"]],
        "test_auc_std_error": delong["std_error"],
        "background_rejection": [
            {
                key: rej[key][i]
                for key in ("signal_efficiency", "background_efficiency", "rejection", "sic", "background_passing")
            }
            | {"n_background": rej["n_background"]}
            for i in range(len(SIGNAL_EFFICIENCIES))
        ],
    }
    if scalars and "pt" in scalars:
        b = auc_in_bins(y_test, test_score, scalars["pt"], bins=5, n_boot=min(n_boot, 200), seed=seed)
        out["auc_in_bins"] = {
            "variable": "pt",
            **{k: b[k] for k in ("edges", "n", "n_signal", "n_background", "auc", "low", "high", "reason")},
        }
    return out


def _multiclass(
    y_tv: np.ndarray,
    oof: np.ndarray,
    oof_fold: np.ndarray,
    folds: list[int],
    y_test: np.ndarray,
    test_score: np.ndarray,
    seed: int,
    n_boot: int,
    class_names: list[str] | None,
) -> dict[str, Any]:
    names = list(class_names or [])
    fold_auc = [one_vs_rest_auc(y_tv[oof_fold == f], oof[oof_fold == f])["macro"] for f in folds]
    ovr = one_vs_rest_auc(y_test, test_score)
    boot = bootstrap_metric(
        lambda y, s: one_vs_rest_auc(y, s)["macro"], y_test, test_score, n_boot=min(n_boot, 500), seed=seed
    )
    k = test_score.shape[1]
    return {
        **spread("fold_auc", fold_auc),
        "oof_auc": one_vs_rest_auc(y_tv, oof)["macro"],
        "test_auc": ovr["macro"],
        "test_auc_ci": [boot["low"], boot["high"]],
        "test_auc_weighted": ovr["weighted"],
        "test_ovr_auc": {names[c] if c < len(names) else str(c): ovr["auc"][c] for c in range(k)},
        "test_accuracy": float(np.mean(np.argmax(test_score, axis=1) == y_test.astype(int))),
        "confusion_matrix": confusion_matrix(y_test, test_score, n_classes=k),
    }


def _regression(
    y_tv: np.ndarray,
    oof: np.ndarray,
    oof_fold: np.ndarray,
    folds: list[int],
    y_test: np.ndarray,
    test_score: np.ndarray,
    seed: int,
    n_boot: int,
) -> dict[str, Any]:
    fold_mae = [float(np.mean(np.abs(oof[oof_fold == f] - y_tv[oof_fold == f]))) for f in folds]
    summary = regression_summary(y_test, test_score)
    boot = bootstrap_metric(
        lambda t, p: float(np.mean(np.abs(p - t))), y_test, test_score, n_boot=min(n_boot, 500), seed=seed
    )
    return {
        **spread("fold_mae", fold_mae),
        "oof_mae": float(np.mean(np.abs(oof - y_tv))),
        "test_mae": summary["mae"],
        "test_mae_ci": [boot["low"], boot["high"]],
        "test": summary,
        "test_in_bins": regression_in_bins(y_test, test_score, bins=5),
    }


def spread(name: str, values: list[float]) -> dict[str, Any]:
    """``name`` (the values), ``name_mean`` and ``name_std`` (ddof=1; 0 for a single value)."""
    return {
        name: [float(v) for v in values],
        f"{name}_mean": float(np.mean(values)),
        f"{name}_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
    }
