"""Multi-class metrics (e.g. DeepLense: no substructure / subhalo / vortex): one-vs-rest AUCs,
their macro and support-weighted averages, and the argmax confusion matrix.

Class ``k`` is the "signal" of its one-vs-rest AUC and its score is column ``k`` of the score
matrix. The AUC depends on which scores are passed: softmax probabilities and raw logits rank
events differently within a column, so pass the quantity the analysis would cut on (usually the
softmax probabilities; scikit-learn's ``roc_auc_score(multi_class="ovr")`` insists on them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from e2evision.metrics.classification import auc_rank


def _class_labels(labels: np.ndarray, n_classes: int, name: str = "labels") -> np.ndarray:
    """Integer class indices in ``[0, n_classes)``; anything else is an error."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be integer class indices, got dtype {arr.dtype}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise ValueError(f"{name} must be integer class indices, got non-integer values")
        arr = as_int
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        raise ValueError(f"{name} must lie in [0, {n_classes}); found {np.unique(arr[bad])[:5].tolist()}")
    return arr


def _score_matrix(scores: np.ndarray, n: int) -> np.ndarray:
    mat = np.asarray(scores, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[1] < 2:
        raise ValueError(f"scores must be (N, n_classes) with n_classes ≥ 2, got shape {mat.shape}")
    if mat.shape[0] != n:
        raise ValueError(f"scores have {mat.shape[0]} rows but labels have {n}")
    if not np.isfinite(mat).all():
        raise ValueError(f"scores have {int((~np.isfinite(mat)).sum())} non-finite value(s)")
    return mat


def one_vs_rest_auc(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """One-vs-rest ROC-AUC of every class, with macro and support-weighted averages.

    ``labels`` are class indices ``0..K-1``, ``scores`` an ``(N, K)`` matrix. A class absent from
    ``labels`` (or the only one present) has ``auc = NaN`` and a ``reason``; the averages then run
    over the classes that have an AUC (``n_classes_averaged`` says how many), where scikit-learn
    would raise.

    Returns ``auc`` (K,), ``support`` (K,), ``macro`` (plain mean), ``weighted`` (mean weighted by
    support), ``reason`` (list, ``""`` when defined), ``n_classes_averaged``.
    """
    n = np.asarray(labels).reshape(-1).size
    mat = _score_matrix(scores, n)
    k = mat.shape[1]
    y = _class_labels(np.asarray(labels).reshape(-1), k)
    support = np.bincount(y, minlength=k)
    auc = np.full(k, np.nan)
    reason = [""] * k
    for c in range(k):
        if support[c] == 0:
            reason[c] = "class absent from labels"
        elif support[c] == n:
            reason[c] = "only this class present"
        else:
            auc[c] = float(auc_rank(y == c, mat[:, c]))
    ok = np.isfinite(auc)
    macro = float(auc[ok].mean()) if ok.any() else float("nan")
    weighted = float(np.average(auc[ok], weights=support[ok])) if ok.any() else float("nan")
    return {
        "auc": auc,
        "support": support,
        "macro": macro,
        "weighted": weighted,
        "reason": reason,
        "n_classes_averaged": int(ok.sum()),
    }


def confusion_matrix(
    labels: np.ndarray,
    predictions: np.ndarray,
    *,
    n_classes: int | None = None,
    normalize: str | None = None,
) -> np.ndarray:
    """Confusion matrix ``C[true, predicted]`` (rows true class, columns predicted class).

    ``predictions`` is either an ``(N, K)`` score matrix, reduced by argmax (first maximum on
    ties), or ``(N,)`` integer predicted classes (for a binary cut, pass
    ``(score >= cut).astype(int)``). ``normalize``: ``None`` (counts), ``"true"`` (rows sum to 1:
    per-class efficiencies), ``"pred"`` (columns sum to 1: purities) or ``"all"``; a row or column
    with no events stays 0, as in scikit-learn.
    """
    pred = np.asarray(predictions)
    lab = np.asarray(labels).reshape(-1)
    if pred.ndim == 2:
        mat = _score_matrix(pred, lab.size)
        k = mat.shape[1] if n_classes is None else int(n_classes)
        if k != mat.shape[1]:
            raise ValueError(f"n_classes={n_classes} but scores have {mat.shape[1]} columns")
        pred_idx = np.argmax(mat, axis=1)
    elif pred.ndim == 1:
        if pred.size != lab.size:
            raise ValueError(f"predictions have {pred.size} entries but labels have {lab.size}")
        if n_classes is None:  # the largest index seen, in labels or predictions
            k = int(max(lab.max(initial=0), pred.max(initial=0))) + 1
        else:
            k = int(n_classes)
        pred_idx = _class_labels(pred, k, name="predictions")
    else:
        raise ValueError(f"predictions must be (N,) or (N, K), got shape {pred.shape}")
    y = _class_labels(lab, k)
    cm = np.bincount(y * k + pred_idx, minlength=k * k).reshape(k, k).astype(np.int64)
    if normalize is None:
        return cm
    axis = {"true": 1, "pred": 0, "all": None}
    if normalize not in axis:
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    total = cm.sum(axis=axis[normalize], keepdims=axis[normalize] is not None)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = cm / total
    return np.nan_to_num(out, nan=0.0)
