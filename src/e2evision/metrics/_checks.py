"""Input checks shared by the metric modules, so that every function fails the same clear way."""

from __future__ import annotations

import numpy as np


def binary_labels(labels: np.ndarray, *, need_both: bool = True, name: str = "labels") -> np.ndarray:
    """1-D boolean signal mask from labels in {0, 1} (or bool); signal is 1.

    Labels such as {-1, 1} or {1, 2} are refused rather than guessed: which class is signal must
    not depend on how a file happened to encode it.
    """
    arr = np.asarray(labels)
    if arr.ndim == 2 and 1 in arr.shape:  # a column or row vector
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {np.shape(labels)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name} must be numeric 0/1 or bool, got dtype {arr.dtype}")
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            shown = np.unique(arr[bad])[:5].tolist()
            raise ValueError(f"{name} must be 0 (background) or 1 (signal); found {shown}")
    mask = arr.astype(bool)
    if need_both:
        n_sig = int(mask.sum())
        if n_sig == 0 or n_sig == mask.size:
            which = "background" if n_sig == 0 else "signal"
            raise ValueError(f"{name} need both classes; only {which} is present ({mask.size} samples)")
    return mask


def finite_scores(scores: np.ndarray, n: int, *, name: str = "scores") -> np.ndarray:
    """Scores as float64 with the length ``n`` of the labels; NaN or inf is an error."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {np.shape(scores)}")
    if arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but labels have {n}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf)")
    return arr


def finite_array(values: np.ndarray, *, name: str, n: int | None = None) -> np.ndarray:
    """1-D finite float64 array (regression truth/prediction, binning variables)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries, expected {n}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf)")
    return arr


def confidence_level(confidence: float) -> float:
    """Confidence level strictly between 0 and 1."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(confidence)
