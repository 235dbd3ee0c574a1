"""Rejection, binned AUC, multi-class, regression and generic bootstrap metrics against independent
computations: scikit-learn, scipy, NumPy histograms, plain loops and hand-computed values."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import mstats
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score, roc_curve

from e2evision.metrics import (
    auc_in_bins,
    auc_rank,
    background_rejection,
    bootstrap_auc,
    bootstrap_metric,
    confusion_matrix,
    one_vs_rest_auc,
    regression_in_bins,
    regression_summary,
    roc_points,
)
from e2evision.metrics.regression import ROBUST_QUANTILES


def tied_sample(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.round(rng.normal(0.9 * y, 1.0), 1)  # rounding: ties within and across classes


# --- ROC points and background rejection ---------------------------------------------------------


def test_roc_points_match_sklearn_without_dropping():
    y, s = tied_sample(1)
    got = roc_points(y, s)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(got["fpr"], fpr, atol=1e-15)
    np.testing.assert_allclose(got["tpr"], tpr, atol=1e-15)
    np.testing.assert_array_equal(got["thresholds"], thr)
    assert (got["n_signal"], got["n_background"]) == (int(y.sum()), int(y.size - y.sum()))


def test_rejection_by_hand_with_ties_and_interpolation():
    # signal 0.9 0.7 0.5 0.5, background 0.8 0.5 0.2 0.1 0.1. ROC points (ε_B, ε_S) for cuts
    # ≥0.9: (0, ¼)  ≥0.8: (⅕, ¼)  ≥0.7: (⅕, ½)  ≥0.5: (⅗, 1)  ... The cut at 0.5 takes two
    # signal and one background event at once: a diagonal segment.
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.7, 0.5, 0.5, 0.8, 0.5, 0.2, 0.1, 0.1])
    r = background_rejection(y, s, [0.25, 0.3, 0.5, 0.75, 1.0])
    # ε_S = 0.25 at the first point: ε_B = 0 → rejection inf.
    # ε_S = 0.3 lies on the vertical segment from (⅕, ¼) to (⅕, ½): ε_B = ⅕.
    # ε_S = 0.5 is hit exactly at the cut 0.7: ε_B = ⅕.
    # ε_S = 0.75 is half-way along the diagonal (⅕, ½) → (⅖, 1): ε_B = 0.3, which is what
    # "score > 0.5, plus half of the events at 0.5" selects: signal (2 + 1)/4, background 1.5/5.
    # ε_S = 1 is first reached at the cut 0.5 (ε_B = ⅖): the lowest ε_B with all signal kept.
    np.testing.assert_allclose(r["background_efficiency"], [0.0, 0.2, 0.2, 0.3, 0.4], atol=1e-15)
    np.testing.assert_allclose(r["rejection"], [np.inf, 5.0, 5.0, 10 / 3, 2.5])
    np.testing.assert_allclose(
        r["sic"], [np.inf, 0.3 / math.sqrt(0.2), 0.5 / math.sqrt(0.2), 0.75 / math.sqrt(0.3), 1 / math.sqrt(0.4)]
    )
    np.testing.assert_allclose(r["background_passing"], [0.0, 1.0, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(r["threshold_below"], [0.9, 0.8, 0.7, 0.7, 0.5])
    np.testing.assert_array_equal(r["threshold_above"], [0.9, 0.7, 0.7, 0.5, 0.5])
    np.testing.assert_allclose(r["tpr_below"], [0.25, 0.25, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(r["fpr_above"], [0.0, 0.2, 0.2, 0.4, 0.4])


def test_rejection_without_ties_is_a_direct_count():
    # With no ties the ROC is a staircase; at ε_S the cut is the ceil(ε_S·n_S)-th highest signal
    # score and ε_B the fraction of background at or above it.
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 1000)
    s = rng.normal(1.2 * y, 1.0)
    effs = np.array([0.3, 0.5, 0.123])
    r = background_rejection(y, s, effs)
    sig_desc = np.sort(s[y == 1])[::-1]
    for k, e in enumerate(effs):
        cut = sig_desc[math.ceil(e * sig_desc.size) - 1]
        eps_b = np.mean(s[y == 0] >= cut)
        assert r["background_efficiency"][k] == pytest.approx(eps_b, abs=1e-15)
        assert r["rejection"][k] == pytest.approx(1 / eps_b)
    # Cross-check with scikit-learn's ROC: the lowest FPR among points with TPR ≥ ε_S.
    fpr, tpr, _ = roc_curve(y, s)
    assert r["background_efficiency"][1] == pytest.approx(fpr[tpr >= 0.5].min())
    # Default working points are 0.3 and 0.5, and a better classifier rejects more.
    default = background_rejection(y, s)
    np.testing.assert_array_equal(default["signal_efficiency"], [0.3, 0.5])
    assert np.all(background_rejection(y, s + 0.5 * y)["rejection"] > default["rejection"])


def test_rejection_input_errors():
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            background_rejection(y, s, bad)
    with pytest.raises(ValueError, match="only background"):
        background_rejection(np.zeros(4), s)
    with pytest.raises(ValueError, match="non-finite"):
        background_rejection(y, np.array([0.1, np.nan, 0.2, 0.3]))


# --- AUC in bins of a variable -------------------------------------------------------------------


def test_auc_in_bins_matches_sklearn_per_bin_and_histogram_counts():
    rng = np.random.default_rng(9)
    n = 1200
    y = rng.integers(0, 2, n)
    pt = rng.uniform(20.0, 200.0, n)
    s = rng.normal(y * pt / 100.0, 1.0)  # separation grows with pT
    edges = np.array([20.0, 50.0, 100.0, 150.0, 200.0])
    got = auc_in_bins(y, s, pt, edges, n_boot=200, seed=4)
    counts, _ = np.histogram(pt, bins=edges)
    np.testing.assert_array_equal(got["n"], counts)
    for b in range(4):
        sel = (pt >= edges[b]) & ((pt < edges[b + 1]) if b < 3 else (pt <= edges[b + 1]))
        assert got["auc"][b] == pytest.approx(roc_auc_score(y[sel], s[sel]), abs=1e-12)
        assert got["n_signal"][b] == y[sel].sum()
        assert (got["low"][b], got["high"][b]) == pytest.approx(
            bootstrap_auc(y[sel], s[sel], n_boot=200, seed=4 + b)[1:], abs=1e-15
        )
        assert got["low"][b] < got["auc"][b] < got["high"][b]
    assert got["reason"] == [""] * 4 and got["n_outside"] == 0
    assert np.all(np.diff(got["auc"]) > 0)


def test_auc_in_bins_quantile_bins_and_one_class_bins():
    rng = np.random.default_rng(10)
    pt = rng.uniform(0.0, 100.0, 600)
    y = rng.integers(0, 2, 600)
    y[pt > 80] = 0  # the top bin holds background only
    s = rng.normal(y, 1.0)
    got = auc_in_bins(y, s, pt, 5, n_boot=50)
    np.testing.assert_allclose(got["edges"], np.quantile(pt, np.linspace(0, 1, 6)))
    assert got["n"].sum() == 600 and got["n"].max() - got["n"].min() <= 1  # equal-count bins
    assert np.isnan(got["auc"][-1]) and np.isnan(got["low"][-1])
    assert got["reason"][-1].startswith("only background")
    assert np.isfinite(got["auc"][:-1]).all() and got["reason"][:-1] == [""] * 4

    # Explicit edges: an empty bin, a signal-only bin and events outside the edges.
    y2 = np.array([0, 1, 0, 1, 1, 1, 0])
    s2 = np.array([0.1, 0.9, 0.3, 0.7, 0.8, 0.2, 0.5])
    v2 = np.array([1.0, 1.5, 1.2, 5.5, 5.0, 0.5, 9.0])
    got2 = auc_in_bins(y2, s2, v2, [1.0, 2.0, 4.0, 6.0], n_boot=0)
    np.testing.assert_array_equal(got2["n"], [3, 0, 2])
    assert got2["auc"][0] == pytest.approx(1.0) and np.isnan(got2["low"][0])  # n_boot=0: no CI
    assert got2["reason"] == ["", "empty bin", "only signal in this bin (2 events)"]
    assert got2["n_outside"] == 2
    with pytest.raises(ValueError, match="strictly increasing"):
        auc_in_bins(y2, s2, v2, [1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="variable has 3 entries"):
        auc_in_bins(y2, s2, v2[:3], 2)


# --- multi-class ----------------------------------------------------------------------------------


def test_one_vs_rest_and_macro_auc_match_sklearn():
    rng = np.random.default_rng(13)
    y = rng.integers(0, 3, 500)
    logits = rng.normal(size=(500, 3)) + 1.2 * np.eye(3)[y]
    prob = softmax(logits, axis=1)
    got = one_vs_rest_auc(y, prob)
    per_class = roc_auc_score(y, prob, multi_class="ovr", average=None)
    np.testing.assert_allclose(got["auc"], per_class, atol=1e-12)
    macro = roc_auc_score(y, prob, multi_class="ovr", average="macro")
    assert got["macro"] == pytest.approx(macro, abs=1e-12)
    assert got["weighted"] == pytest.approx(roc_auc_score(y, prob, multi_class="ovr", average="weighted"), abs=1e-12)
    np.testing.assert_array_equal(got["support"], np.bincount(y, minlength=3))
    # Logits rank events differently within a column than probabilities: a different number.
    assert one_vs_rest_auc(y, logits)["auc"][0] != pytest.approx(got["auc"][0], abs=1e-6)


def test_one_vs_rest_with_an_absent_class():
    rng = np.random.default_rng(14)
    y = rng.choice([0, 2], 200)  # class 1 never occurs
    scores = rng.normal(size=(200, 3)) + np.eye(3)[y]
    got = one_vs_rest_auc(y, scores)
    assert np.isnan(got["auc"][1]) and got["reason"][1] == "class absent from labels"
    expected = [roc_auc_score(y == c, scores[:, c]) for c in (0, 2)]
    np.testing.assert_allclose(got["auc"][[0, 2]], expected, atol=1e-12)
    assert got["macro"] == pytest.approx(np.mean(expected)) and got["n_classes_averaged"] == 2
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        one_vs_rest_auc(np.array([0, 3]), np.ones((2, 3)))
    with pytest.raises(ValueError, match="rows but labels"):
        one_vs_rest_auc(np.array([0, 1, 2]), np.ones((2, 3)))


@pytest.mark.parametrize("normalize", [None, "true", "pred", "all"])
def test_confusion_matrix_matches_sklearn(normalize):
    rng = np.random.default_rng(15)
    y = rng.integers(0, 4, 300)
    scores = rng.normal(size=(300, 4)) + np.eye(4)[y]
    want = sk_confusion_matrix(y, scores.argmax(axis=1), labels=range(4), normalize=normalize)
    np.testing.assert_allclose(confusion_matrix(y, scores, normalize=normalize), want, atol=1e-15)
    # Integer predictions, with a class (3) never predicted nor present.
    yb, pb = y % 3, scores[:, :3].argmax(axis=1)
    want_b = sk_confusion_matrix(yb, pb, labels=range(4), normalize=normalize)
    got_b = confusion_matrix(yb, pb, n_classes=4, normalize=normalize)
    np.testing.assert_allclose(got_b, want_b, atol=1e-15)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="normalize"):
        confusion_matrix(np.array([0, 1]), np.array([0, 1]), normalize="rows")
    with pytest.raises(ValueError, match="integer class indices"):
        confusion_matrix(np.array([0, 1]), np.array([0.2, 0.7]))
    with pytest.raises(ValueError, match="n_classes=3"):
        confusion_matrix(np.array([0, 1]), np.ones((2, 2)), n_classes=3)


# --- regression -----------------------------------------------------------------------------------


def test_regression_summary_by_hand_and_against_sklearn_and_scipy():
    truth = np.array([10.0, 20.0, 40.0, 50.0])
    pred = np.array([12.0, 18.0, 44.0, 50.0])  # residuals 2, −2, 4, 0; relative .2, −.1, .1, 0
    got = regression_summary(truth, pred)
    assert got["n"] == 4 and got["note"] == ""
    assert got["mae"] == pytest.approx(2.0)
    assert got["mae"] == pytest.approx(mean_absolute_error(truth, pred), rel=1e-14)
    assert got["bias"] == pytest.approx(1.0)
    assert got["rmse"] == pytest.approx(math.sqrt(6.0))
    assert got["rmse"] == pytest.approx(math.sqrt(mean_squared_error(truth, pred)), rel=1e-14)
    assert got["resolution"] == pytest.approx(statistics.stdev([2, -2, 4, 0]))  # sqrt(20/3)
    assert got["rel_mae"] == pytest.approx(0.1) and got["rel_bias"] == pytest.approx(0.05)
    assert got["rel_resolution"] == pytest.approx(statistics.stdev([0.2, -0.1, 0.1, 0.0]))
    # Robust width: half the distance between the Φ(−1), Φ(+1) quantiles, linear interpolation
    # (Hyndman–Fan type 7 = scipy's mquantiles with alphap = betap = 1). Sorted residuals
    # −2, 0, 2, 4: position 3·0.158655 = 0.475966 → −2 + 0.475966·2; symmetric on top.
    lo, hi = mstats.mquantiles([2, -2, 4, 0], prob=ROBUST_QUANTILES, alphap=1, betap=1)
    assert got["resolution_robust"] == pytest.approx((hi - lo) / 2)
    assert got["resolution_robust"] == pytest.approx(3.0 - 2 * 0.4759655, abs=1e-6)
    assert ROBUST_QUANTILES == pytest.approx((0.158655, 0.841345), abs=1e-6)


def test_robust_resolution_is_sigma_for_a_gaussian_and_ignores_outliers():
    rng = np.random.default_rng(16)
    truth = rng.uniform(50, 150, 20000)
    pred = truth + rng.normal(0.5, 2.0, truth.size)
    pred[:400] += rng.choice([-1, 1], 400) * 60.0  # 2 % catastrophic outliers
    got = regression_summary(truth, pred)
    assert got["resolution_robust"] == pytest.approx(2.0, rel=0.05)
    assert got["resolution"] > 4.0  # the standard deviation is dominated by the outliers


def test_regression_in_bins_of_truth_and_zero_truth():
    rng = np.random.default_rng(17)
    truth = rng.uniform(10.0, 100.0, 500)
    pred = truth * 1.1 + rng.normal(0, 1.0, 500)  # 10 % scale error: the bias grows with truth
    edges = np.array([10.0, 25.0, 50.0, 100.0, 120.0])
    got = regression_in_bins(truth, pred, edges)
    np.testing.assert_array_equal(got["n"], np.histogram(truth, bins=edges)[0])
    for b in range(3):
        sel = (truth >= edges[b]) & (truth < edges[b + 1])
        ref = regression_summary(truth[sel], pred[sel])
        for key in ("mae", "bias", "resolution", "resolution_robust", "rel_bias"):
            assert got[key][b] == pytest.approx(ref[key], rel=1e-12)
        assert got["mae"][b] == pytest.approx(mean_absolute_error(truth[sel], pred[sel]))
        assert got["rel_bias"][b] == pytest.approx(np.mean(pred[sel] / truth[sel] - 1.0), rel=1e-12)
    assert np.all(np.diff(got["bias"][:3]) > 0)
    # 10 % scale error; noise/truth averages to 0 within ~0.008 (bin 0) per bin.
    assert got["rel_bias"][:3] == pytest.approx([0.1, 0.1, 0.1], abs=0.025)
    assert np.isnan(got["mae"][3]) and got["note"][3] == "empty bin"

    zero = regression_summary(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.0, 2.5]))
    assert zero["mae"] == pytest.approx(1 / 3) and np.isnan(zero["rel_mae"])
    assert "truth is 0 for 1 sample" in zero["note"]
    with pytest.raises(ValueError, match="prediction has 2 entries"):
        regression_summary(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="non-finite"):
        regression_summary(np.ones(2), np.array([1.0, np.nan]))


# --- generic bootstrap ----------------------------------------------------------------------------


def mean_gap(y: np.ndarray, s: np.ndarray) -> float:
    """A cheap paired statistic: it needs the labels and scores resampled together."""
    return float(s[y == 1].mean() - s[y == 0].mean())


def auc_or_error(y: np.ndarray, s: np.ndarray) -> float:
    if y.min() == y.max():
        raise ValueError("one class")
    return float(auc_rank(y, s))


def test_bootstrap_metric_matches_a_plain_loop():
    y, s = tied_sample(18, n=150)
    got = bootstrap_metric(mean_gap, y, s, n_boot=300, seed=7, confidence=0.9)
    rng = np.random.default_rng(7)
    draws = [rng.integers(0, y.size, y.size) for _ in range(300)]
    loop = np.array([mean_gap(y[i], s[i]) for i in draws])
    assert got["value"] == pytest.approx(s[y == 1].mean() - s[y == 0].mean())
    want = tuple(np.quantile(loop, [0.05, 0.95]))
    assert (got["low"], got["high"]) == pytest.approx(want, abs=1e-15)
    assert got["std"] == pytest.approx(np.std(loop, ddof=1))
    assert (got["n_boot"], got["n_dropped"]) == (300, 0)


def test_bootstrap_metric_stratify_and_dropped_resamples():
    y = np.r_[np.ones(3, dtype=int), np.zeros(40, dtype=int)]
    s = np.linspace(0, 1, 43)
    # Stratified: every resample keeps 3 signal events, so their count never varies.
    strat = bootstrap_metric(lambda yy: float(yy.sum()), y, n_boot=50, stratify=y)
    assert (strat["low"], strat["high"], strat["std"]) == (3.0, 3.0, 0.0)
    # Unstratified, some resamples draw no signal: the metric raises ValueError (or returns NaN,
    # as auc_rank does); either way the resample is dropped and counted, the same ones.
    free = bootstrap_metric(auc_or_error, y, s, n_boot=200, seed=1)
    nan = bootstrap_metric(lambda yy, ss: float(auc_rank(yy, ss)), y, s, n_boot=200, seed=1)
    assert free == nan
    assert free["n_dropped"] > 0 and free["n_boot"] + free["n_dropped"] == 200
    # P(no signal in a resample) = (40/43)^43 ≈ 4.4 %: about 9 of 200 (binomial σ ≈ 3).
    assert free["n_dropped"] == pytest.approx(200 * (40 / 43) ** 43, abs=9)
    with pytest.raises(ValueError, match="rows, expected"):
        bootstrap_metric(mean_gap, y, s[:10])


def test_bootstrap_auc_stratified_keeps_the_default_unchanged():
    y, s = tied_sample(19, n=200)
    default = bootstrap_auc(y, s, n_boot=300, seed=2)
    assert bootstrap_auc(y, s, n_boot=300, seed=2, stratified=False) == default
    strat = bootstrap_auc(y, s, n_boot=300, seed=2, stratified=True)
    assert strat[0] == default[0] and strat[1:] != default[1:]
    # Two events, two resamples: with seed 4 both draw event 1 twice (one class), so there is no
    # interval: NaN rather than an exception. Seed 0 draws (1, 1) and (1, 0): one usable resample.
    auc, lo, hi = bootstrap_auc(np.array([0, 1]), np.array([0.2, 0.8]), n_boot=2, seed=4)
    assert auc == 1.0 and np.isnan(lo) and np.isnan(hi)
    got = bootstrap_auc(np.array([0, 1]), np.array([0.2, 0.8]), n_boot=2, seed=0)
    assert got == (1.0, 1.0, 1.0)
