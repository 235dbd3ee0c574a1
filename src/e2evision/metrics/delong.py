"""DeLong's variance of the ROC-AUC and the paired test of two models on the same test set.

DeLong, DeLong & Clarke-Pearson (Biometrics 44, 1988) write the AUC of ``m`` signal scores ``x_i``
and ``n`` background scores ``y_j`` as the mean of ``ψ(x_i, y_j)`` (1 if ``x_i > y_j``, ½ on a
tie, 0 otherwise) and estimate its variance from the *structural components*

    V10_i = (1/n) Σ_j ψ(x_i, y_j)        (one per signal sample)
    V01_j = (1/m) Σ_i ψ(x_i, y_j)        (one per background sample)

as ``S10/m + S01/n`` with ``S10``, ``S01`` their sample covariances (over models, for several models
scored on the same samples). The O(m·n) double sum is replaced by midranks (Sun & Xu, IEEE SPL 21,
2014): with ``Tz`` the midranks in the pooled sample and ``Tx``, ``Ty`` those within each class,
``V10 = (Tz_x − Tx)/n`` and ``V01 = 1 − (Tz_y − Ty)/m``; ties get exactly the ½ of ψ. Cost
O(N log N), so a 10⁶-event test set is fine.

The test is two-sided on ``z = (A_a − A_b) / sqrt(Var A_a + Var A_b − 2 Cov(A_a, A_b))``, normal
under the null hypothesis of equal AUCs. Pairing (the covariance term) is what makes it more
powerful than comparing two independent confidence intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from e2evision.metrics._checks import binary_labels, confidence_level, finite_scores


def _score_matrix(labels: np.ndarray, scores: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Signal mask and a ``(k, N)`` score matrix, both validated."""
    sig = binary_labels(labels)
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except ValueError as exc:  # ragged list of score arrays
        raise ValueError(f"scores must be (N,) or (k, N) with equal-length rows: {exc}") from exc
    rows = [arr] if arr.ndim == 1 else list(arr) if arr.ndim == 2 else None
    if rows is None:
        raise ValueError(f"scores must be (N,) or (k, N), got shape {arr.shape}")
    mat = np.stack([finite_scores(r, sig.size, name=f"scores[{i}]") for i, r in enumerate(rows)])
    m = int(sig.sum())
    if m < 2 or sig.size - m < 2:
        raise ValueError(
            f"DeLong's variance needs at least 2 signal and 2 background samples; "
            f"got {m} signal and {sig.size - m} background"
        )
    return sig, mat


def delong_covariance(labels: np.ndarray, scores: np.ndarray | list[np.ndarray]) -> dict[str, Any]:
    """AUCs of ``k`` models and DeLong's ``k × k`` covariance matrix of those AUCs.

    ``labels`` are 0 (background) / 1 (signal); ``scores`` is ``(N,)`` or ``(k, N)``, higher meaning
    more signal-like, every row scoring the same samples. Returns ``auc`` (k,), ``covariance``
    (k, k), the structural components ``v10`` (k, n_signal) and ``v01`` (k, n_background) in the
    input order of each class, ``n_signal`` and ``n_background``.
    """
    sig, mat = _score_matrix(labels, scores)
    x, y = mat[:, sig], mat[:, ~sig]
    m, n = x.shape[1], y.shape[1]
    tx = rankdata(x, axis=1)  # midranks ("average") give ties exactly ψ = ½
    ty = rankdata(y, axis=1)
    tz = rankdata(np.concatenate([x, y], axis=1), axis=1)
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return {
        "auc": auc,
        "covariance": s10 / m + s01 / n,
        "v10": v10,
        "v01": v01,
        "n_signal": m,
        "n_background": n,
    }


def delong_auc_ci(labels: np.ndarray, scores: np.ndarray, *, confidence: float = 0.95) -> dict[str, Any]:
    """AUC with DeLong's standard error and the Wald interval ``AUC ± z·SE``, clipped to [0, 1].

    A closed-form alternative to the bootstrap: no resampling, deterministic, and cheap on large
    test sets. Near AUC = 1 or with few samples of one class the Wald interval is less reliable than
    the bootstrap one (and is clipped); prefer :func:`bootstrap_auc` there. Returns ``auc``,
    ``variance``, ``std_error``, ``low``, ``high``, ``confidence``, ``n_signal``, ``n_background``.
    """
    confidence = confidence_level(confidence)
    if np.ndim(scores) != 1:
        raise ValueError(f"scores must be 1-D for a single AUC, got shape {np.shape(scores)}")
    cov = delong_covariance(labels, scores)
    auc, var = float(cov["auc"][0]), float(cov["covariance"][0, 0])
    se = float(np.sqrt(max(var, 0.0)))
    half = float(norm.ppf(0.5 + confidence / 2.0)) * se
    return {
        "auc": auc,
        "variance": var,
        "std_error": se,
        "low": max(0.0, auc - half),
        "high": min(1.0, auc + half),
        "confidence": confidence,
        "n_signal": cov["n_signal"],
        "n_background": cov["n_background"],
    }


def delong_test(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """DeLong's paired test of ``AUC_a = AUC_b`` for two models scored on the same samples.

    Returns ``auc_a``, ``auc_b``, ``difference`` (a − b), ``var_a``, ``var_b``, ``covariance``,
    ``correlation``, ``var_difference``, ``std_error`` (of the difference), ``z``, ``p_value``
    (two-sided), ``low``/``high`` (Wald interval of the difference at ``confidence``),
    ``n_signal``, ``n_background``.

    When the variance of the difference is 0 (for instance identical scores) the test is
    degenerate: ``z = 0, p = 1`` if the AUCs are equal, else ``z = ±inf, p = 0``.
    """
    confidence = confidence_level(confidence)
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"scores_a and scores_b must be 1-D, got shapes {a.shape} and {b.shape}")
    if a.size != b.size:
        raise ValueError(f"scores_a has {a.size} entries and scores_b {b.size}: not the same samples")
    cov = delong_covariance(labels, np.stack([a, b]))
    (auc_a, auc_b), c = cov["auc"], cov["covariance"]
    diff = float(auc_a - auc_b)
    var_diff = float(c[0, 0] + c[1, 1] - 2.0 * c[0, 1])
    se = float(np.sqrt(max(var_diff, 0.0)))
    if se > 0.0:
        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    else:
        z = 0.0 if diff == 0.0 else float(np.copysign(np.inf, diff))
        p = 1.0 if diff == 0.0 else 0.0
    denom = np.sqrt(c[0, 0] * c[1, 1])
    half = float(norm.ppf(0.5 + confidence / 2.0)) * se
    return {
        "auc_a": float(auc_a),
        "auc_b": float(auc_b),
        "difference": diff,
        "var_a": float(c[0, 0]),
        "var_b": float(c[1, 1]),
        "covariance": float(c[0, 1]),
        "correlation": float(c[0, 1] / denom) if denom > 0 else float("nan"),
        "var_difference": var_diff,
        "std_error": se,
        "z": float(z),
        "p_value": p,
        "low": diff - half,
        "high": diff + half,
        "confidence": confidence,
        "n_signal": cov["n_signal"],
        "n_background": cov["n_background"],
    }
