"""Binary-classification metrics.

``auc_rank`` is the Mann–Whitney form of the ROC-AUC (ties count one half), written so that it
vectorises over many bootstrap resamples at once; ``roc_auc`` is scikit-learn's, for reference.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC; raises a clear error when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).reshape(-1)
    if np.unique(labels).size < 2:
        raise ValueError("ROC-AUC needs both classes; only one is present")
    return float(roc_auc_score(labels, np.asarray(scores).reshape(-1)))


def auc_rank(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC along the last axis: ``(U statistic of positives) / (n_pos · n_neg)``.

    ``labels`` and ``scores`` have the same shape ``(..., n)``; rows with a single class give NaN.
    """
    labels = np.asarray(labels, dtype=bool)
    ranks = rankdata(np.asarray(scores, dtype=np.float64), axis=-1)  # average ranks handle ties
    n_pos = labels.sum(axis=-1)
    n_neg = labels.shape[-1] - n_pos
    u = np.where(labels, ranks, 0.0).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def bootstrap_auc(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    batch: int = 200,
) -> tuple[float, float, float]:
    """AUC and its percentile bootstrap confidence interval: ``(auc, low, high)``.

    Resamples events with replacement (stratification is not imposed, as in the usual HEP
    practice); resamples that draw a single class are dropped.
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length")
    auc = float(auc_rank(labels, scores))
    rng = np.random.default_rng(seed)
    samples = []
    for start in range(0, n_boot, batch):
        idx = rng.integers(0, labels.size, size=(min(batch, n_boot - start), labels.size))
        samples.append(auc_rank(labels[idx], scores[idx]))
    boot = np.concatenate(samples)
    boot = boot[np.isfinite(boot)]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return auc, float(low), float(high)
