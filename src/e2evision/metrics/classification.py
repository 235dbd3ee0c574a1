"""Binary-classification metrics.

``auc_rank`` is the Mann–Whitney form of the ROC-AUC (ties count one half), written so that it
vectorises over many bootstrap resamples at once; ``roc_auc`` is scikit-learn's, for reference.
``bootstrap_metric`` is the generic (one resample at a time) percentile bootstrap for any metric,
such as a rejection at fixed signal efficiency or an AUC difference between two models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    stratified: bool = False,
) -> tuple[float, float, float]:
    """AUC and its percentile bootstrap confidence interval: ``(auc, low, high)``.

    By default resamples events with replacement (stratification is not imposed, as in the usual
    HEP practice); resamples that draw a single class are dropped. ``stratified=True`` resamples
    signal and background separately, keeping their counts fixed, as for a test set whose class
    counts were fixed by design (the conditioning of DeLong's variance).
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length")
    auc = float(auc_rank(labels, scores))
    rng = np.random.default_rng(seed)
    if stratified:
        pos = np.flatnonzero(labels.astype(bool))
        neg = np.flatnonzero(~labels.astype(bool))
    samples = []
    for start in range(0, n_boot, batch):
        rows = min(batch, n_boot - start)
        if stratified:
            idx = np.concatenate(
                [
                    pos[rng.integers(0, pos.size, size=(rows, pos.size))],
                    neg[rng.integers(0, neg.size, size=(rows, neg.size))],
                ],
                axis=1,
            )
        else:
            idx = rng.integers(0, labels.size, size=(rows, labels.size))
        samples.append(auc_rank(labels[idx], scores[idx]))
    boot = np.concatenate(samples)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:  # every resample drew one class (a handful of events): no interval
        return auc, float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return auc, float(low), float(high)


def bootstrap_metric(
    fn: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    stratify: np.ndarray | None = None,
) -> dict[str, Any]:
    """Percentile bootstrap of ``fn(*arrays)``, resampling the rows of all arrays together.

    Resampling rows jointly keeps the pairing between arrays (labels, the scores of two models,
    pT), which is what a paired comparison needs. ``stratify`` (e.g. the labels) resamples within
    each of its values, keeping the group counts fixed. A resample for which ``fn`` raises
    ``ValueError`` (say, a single class drawn) or returns a non-finite value is dropped and counted.

    Returns ``value`` (on the original arrays), ``low``, ``high``, ``std`` (of the resampled
    values), ``n_boot`` (resamples kept), ``n_dropped`` and ``confidence``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    if not arrays:
        raise ValueError("bootstrap_metric needs at least one array to resample")
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0]
    for i, a in enumerate(arrs):
        if a.ndim == 0 or a.shape[0] != n:
            raise ValueError(f"array {i} has {a.shape[0] if a.ndim else 'no'} rows, expected {n}")
    groups: list[np.ndarray] = [np.arange(n)]
    if stratify is not None:
        strat = np.asarray(stratify).reshape(-1)
        if strat.size != n:
            raise ValueError(f"stratify has {strat.size} entries, expected {n}")
        groups = [np.flatnonzero(strat == v) for v in np.unique(strat)]
    value = float(fn(*arrs))
    rng = np.random.default_rng(seed)
    draws, dropped = [], 0
    for _ in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, g.size, size=g.size)] for g in groups])
        try:
            v = float(fn(*(a[idx] for a in arrs)))
        except ValueError:
            v = float("nan")
        if np.isfinite(v):
            draws.append(v)
        else:
            dropped += 1
    boot = np.asarray(draws)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha]) if boot.size else (np.nan, np.nan)
    return {
        "value": value,
        "low": float(low),
        "high": float(high),
        "std": float(np.std(boot, ddof=1)) if boot.size > 1 else float("nan"),
        "n_boot": int(boot.size),
        "n_dropped": dropped,
        "confidence": float(confidence),
    }
