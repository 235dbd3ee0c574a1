"""Regression against the truth (e.g. top mass, pT, lensing parameters): MAE, bias, resolution.

The residual is ``r = prediction − truth`` (positive bias: the model overestimates). The
resolution is quoted two ways: the standard deviation of ``r`` (sensitive to tails) and a robust
one, half the width between the 15.87 % and 84.13 % quantiles of ``r`` (the ±1σ quantiles of a
Gaussian, often rounded to "16–84 %"), which equals σ for a Gaussian core and ignores outliers.
Relative versions use ``r / truth``. Binned versions are taken in bins of the *truth*, so that a
bin's bias is the model's response to that true value (binning in the prediction would bias it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm

from e2evision.metrics._checks import finite_array
from e2evision.metrics.physics import bin_edges, bin_index

#: Quantiles whose half-distance is the robust resolution: Φ(−1) and Φ(+1).
ROBUST_QUANTILES = (float(norm.cdf(-1.0)), float(norm.cdf(1.0)))

_KEYS = ("mae", "bias", "rmse", "resolution", "resolution_robust")


def _stats(r: np.ndarray) -> dict[str, float]:
    """MAE, bias, RMS, standard deviation (ddof=1) and robust width of residuals ``r``."""
    if r.size == 0:
        return dict.fromkeys(_KEYS, float("nan"))
    q_lo, q_hi = np.quantile(r, ROBUST_QUANTILES)  # linear interpolation between order statistics
    return {
        "mae": float(np.mean(np.abs(r))),
        "bias": float(np.mean(r)),
        "rmse": float(np.sqrt(np.mean(r**2))),
        "resolution": float(np.std(r, ddof=1)) if r.size > 1 else float("nan"),
        "resolution_robust": float((q_hi - q_lo) / 2.0),
    }


def _pair(truth: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = finite_array(truth, name="truth")
    p = finite_array(prediction, name="prediction", n=t.size)
    return t, p


def regression_summary(truth: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    """MAE, bias, RMSE and resolutions of ``prediction`` against ``truth``, absolute and relative.

    Returns ``n``, ``mae`` (mean |r|), ``bias`` (mean r), ``rmse``, ``resolution`` (std of r,
    ddof=1), ``resolution_robust`` (half the Φ(±1) interquantile width of r), the same five with
    the prefix ``rel_`` computed on ``r / truth``, and ``note`` (why the relative ones are NaN
    when some truth is 0, else ``""``).
    """
    t, p = _pair(truth, prediction)
    if t.size == 0:
        raise ValueError("regression_summary needs at least one sample")
    return _summary(t, p)


def _summary(t: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    r = p - t
    out: dict[str, Any] = {"n": int(t.size), **_stats(r)}
    zero = t == 0
    if zero.any():
        out.update({f"rel_{k}": float("nan") for k in _KEYS})
        out["note"] = f"relative metrics undefined: truth is 0 for {int(zero.sum())} sample(s)"
    else:
        out.update({f"rel_{k}": v for k, v in _stats(r / t).items()})
        out["note"] = ""
    return out


def regression_in_bins(
    truth: np.ndarray,
    prediction: np.ndarray,
    bins: int | np.ndarray | list[float] = 5,
) -> dict[str, Any]:
    """:func:`regression_summary` in bins of the truth (quantile bins or explicit edges).

    Returns ``edges``, ``n_outside`` (truth outside explicit edges) and, per bin, arrays ``n`` and
    the keys of :func:`regression_summary` (``mae``, ``bias``, ..., ``rel_resolution_robust``),
    with the list ``note`` per bin (``"empty bin"``, or why relative values are NaN). Empty bins
    hold NaN.
    """
    t, p = _pair(truth, prediction)
    edges = bin_edges(t, bins)
    idx = bin_index(t, edges)
    n_bins = edges.size - 1
    keys = [*_KEYS, *(f"rel_{k}" for k in _KEYS)]
    out: dict[str, Any] = {
        "edges": edges,
        "n": np.zeros(n_bins, dtype=np.int64),
        **{k: np.full(n_bins, np.nan) for k in keys},
        "note": [""] * n_bins,
        "n_outside": int((idx < 0).sum()),
    }
    for b in range(n_bins):
        sel = idx == b
        if not sel.any():
            out["note"][b] = "empty bin"
            continue
        s = _summary(t[sel], p[sel])
        out["n"][b] = s["n"]
        out["note"][b] = s["note"]
        for k in keys:
            out[k][b] = s[k]
    return out
