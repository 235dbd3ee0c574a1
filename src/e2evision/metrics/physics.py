"""HEP-facing binary metrics: ROC points, background rejection 1/ε_B at fixed signal efficiency,
and the AUC in bins of a variable such as the jet pT.

Conventions (shared with the rest of :mod:`e2evision.metrics`): label 1 is *signal*, 0 is
*background*; a higher score is more signal-like; an event is selected when ``score ≥ threshold``.
Then ε_S (signal efficiency) is the true-positive rate, ε_B (background efficiency) the
false-positive rate, and the background rejection is ``1/ε_B``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from e2evision.metrics._checks import binary_labels, confidence_level, finite_array, finite_scores
from e2evision.metrics.classification import auc_rank, bootstrap_auc


def roc_points(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Every point of the empirical ROC curve, one per distinct score (none dropped).

    Point ``k`` selects ``score ≥ thresholds[k]``; point 0 is ``(0, 0)`` at threshold ``+inf``
    and the last one ``(1, 1)``, thresholds decreasing, as scikit-learn's
    ``roc_curve(..., drop_intermediate=False)``. Returns ``fpr`` (ε_B), ``tpr`` (ε_S),
    ``thresholds``, ``n_signal``, ``n_background``.
    """
    sig = binary_labels(labels)
    s = finite_scores(scores, sig.size)
    order = np.argsort(-s, kind="stable")
    s_sorted, sig_sorted = s[order], sig[order]
    # last index of each run of equal scores: all tied events enter together
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tp = np.cumsum(sig_sorted)[last]
    fp = (last + 1) - tp
    n_sig, n_bkg = int(sig.sum()), int(sig.size - sig.sum())
    return {
        "fpr": np.r_[0.0, fp / n_bkg],
        "tpr": np.r_[0.0, tp / n_sig],
        "thresholds": np.r_[np.inf, s_sorted[last]],
        "n_signal": n_sig,
        "n_background": n_bkg,
    }


def background_rejection(
    labels: np.ndarray,
    scores: np.ndarray,
    signal_efficiencies: float | list[float] | tuple[float, ...] | np.ndarray = (0.3, 0.5),
) -> dict[str, Any]:
    """Background rejection ``1/ε_B`` at fixed signal efficiencies ε_S, interpolated on the ROC.

    For each target ε_S the first ROC point with ``tpr ≥ ε_S`` is found (the one with the lowest
    ε_B at that signal efficiency). If it hits ε_S exactly its ε_B is used; otherwise ε_B is
    interpolated linearly between it and the point before it, i.e. along the straight ROC segment
    that a cut between the two thresholds (selecting a random fraction of the events tied at the
    upper threshold) actually achieves. The two points are returned (``*_below``, ``*_above``;
    equal for an exact hit) so the working point can be reproduced.

    ``ε_B = 0`` (no background passes) gives ``rejection = inf``: the test set is too small to
    measure it; ``n_background`` bounds what it can resolve (one background event passing is
    a rejection of ``n_background``). ``sic`` is the significance improvement ``ε_S / sqrt(ε_B)``
    (how much ``S/sqrt(B)`` improves over no cut), also ``inf`` when ε_B = 0.

    Returns arrays (one entry per efficiency) ``signal_efficiency``, ``background_efficiency``,
    ``rejection``, ``sic``, ``background_passing`` (ε_B · n_background), ``tpr_below``,
    ``fpr_below``, ``threshold_below``, ``tpr_above``, ``fpr_above``, ``threshold_above``; and
    ``n_signal``, ``n_background``.
    """
    eff = np.atleast_1d(np.asarray(signal_efficiencies, dtype=np.float64))
    if eff.ndim != 1 or not np.all((eff > 0.0) & (eff <= 1.0)):
        raise ValueError(f"signal efficiencies must lie in (0, 1], got {eff.tolist()}")
    roc = roc_points(labels, scores)
    tpr, fpr, thr = roc["tpr"], roc["fpr"], roc["thresholds"]
    # first point with tpr >= eff (index >= 1, as tpr[0] = 0 < eff)
    above = np.searchsorted(tpr, eff, side="left")
    exact = tpr[above] == eff
    below = np.where(exact, above, above - 1)
    t0, t1, f0, f1 = tpr[below], tpr[above], fpr[below], fpr[above]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(exact, 0.0, (eff - t0) / (t1 - t0))
        eps_b = f0 + frac * (f1 - f0)
        rejection = np.where(eps_b > 0, 1.0 / eps_b, np.inf)
        sic = np.where(eps_b > 0, eff / np.sqrt(eps_b), np.inf)
    return {
        "signal_efficiency": eff,
        "background_efficiency": eps_b,
        "rejection": rejection,
        "sic": sic,
        "background_passing": eps_b * roc["n_background"],
        "tpr_below": t0,
        "fpr_below": f0,
        "threshold_below": thr[below],
        "tpr_above": t1,
        "fpr_above": f1,
        "threshold_above": thr[above],
        "n_signal": roc["n_signal"],
        "n_background": roc["n_background"],
    }


def bin_edges(values: np.ndarray, bins: int | np.ndarray | list[float]) -> np.ndarray:
    """Bin edges: given ones (checked to increase strictly) or ``bins`` quantile (equal-count) bins.

    Quantile edges that coincide (a variable with repeated values) are merged, so fewer bins than
    asked can come back.
    """
    if np.ndim(bins) == 0:
        k = int(bins)
        if k < 1 or k != bins:
            raise ValueError(f"the number of bins must be a positive integer, got {bins}")
        v = finite_array(values, name="variable")
        if v.size == 0:
            raise ValueError("cannot place quantile bins on an empty variable")
        edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, k + 1)))
        return edges if edges.size > 1 else np.array([edges[0], edges[0]])
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise ValueError(f"bin edges must be a 1-D array of ≥ 2 values, got {edges.tolist()}")
    if not np.isfinite(edges).all() or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bin edges must be finite and strictly increasing, got {edges.tolist()}")
    return edges


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value, ``-1`` outside; bins are ``[lo, hi)`` except the last, ``[lo, hi]``
    (as :func:`numpy.histogram`)."""
    idx = np.searchsorted(edges, values, side="right") - 1
    idx[values == edges[-1]] = edges.size - 2
    idx[(values < edges[0]) | (values > edges[-1])] = -1
    return idx


def auc_in_bins(
    labels: np.ndarray,
    scores: np.ndarray,
    variable: np.ndarray,
    bins: int | np.ndarray | list[float] = 5,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    stratified: bool = False,
) -> dict[str, Any]:
    """ROC-AUC in bins of ``variable`` (e.g. jet pT), with a bootstrap interval per bin.

    ``bins`` is a number of quantile (equal-count) bins or explicit edges (see :func:`bin_edges`;
    events outside explicit edges are counted in ``n_outside``). A bin that is empty or holds a
    single class gets ``auc = NaN`` and a ``reason`` instead of an error, so a scan over pT never
    stops at a sparse edge bin. The interval is :func:`bootstrap_auc` on the bin's events with seed
    ``seed + bin``.

    Returns ``edges``, per-bin arrays ``n``, ``n_signal``, ``n_background``, ``auc``, ``low``,
    ``high``, the list ``reason`` (``""`` when the AUC is defined), ``n_outside``, ``confidence``.
    """
    confidence = confidence_level(confidence)
    sig = binary_labels(labels, need_both=False)
    s = finite_scores(scores, sig.size)
    v = finite_array(variable, name="variable", n=sig.size)
    edges = bin_edges(v, bins)
    idx = bin_index(v, edges)
    n_bins = edges.size - 1
    out: dict[str, Any] = {
        "edges": edges,
        "n": np.zeros(n_bins, dtype=np.int64),
        "n_signal": np.zeros(n_bins, dtype=np.int64),
        "n_background": np.zeros(n_bins, dtype=np.int64),
        "auc": np.full(n_bins, np.nan),
        "low": np.full(n_bins, np.nan),
        "high": np.full(n_bins, np.nan),
        "reason": [""] * n_bins,
        "n_outside": int((idx < 0).sum()),
        "confidence": confidence,
    }
    for b in range(n_bins):
        sel = idx == b
        y, sc = sig[sel], s[sel]
        n_s = int(y.sum())
        out["n"][b], out["n_signal"][b], out["n_background"][b] = y.size, n_s, y.size - n_s
        if y.size == 0:
            out["reason"][b] = "empty bin"
            continue
        if n_s == 0 or n_s == y.size:
            which = "background" if n_s == 0 else "signal"
            out["reason"][b] = f"only {which} in this bin ({y.size} events)"
            continue
        out["auc"][b] = float(auc_rank(y, sc))
        if n_boot > 0:
            _, lo, hi = bootstrap_auc(y, sc, n_boot=n_boot, confidence=confidence, seed=seed + b, stratified=stratified)
            out["low"][b], out["high"][b] = lo, hi
    return out
