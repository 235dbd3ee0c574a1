"""DeLong's AUC variance and paired test against computations done another way: by hand, the
O(m·n) structural components, scikit-learn / scipy AUCs, Hanley–McNeil's closed form and a
paired bootstrap."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm
from sklearn.metrics import roc_auc_score

from e2evision.metrics import auc_rank, bootstrap_auc, delong_auc_ci, delong_covariance, delong_test

# Worked example: 3 signal and 3 background samples, two models, one signal/background tie (0.4).
HAND_Y = np.array([1, 1, 1, 0, 0, 0])
HAND_A = np.array([0.9, 0.6, 0.4, 0.5, 0.4, 0.1])
HAND_B = np.array([0.8, 0.3, 0.7, 0.2, 0.6, 0.4])


def psi_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ψ(x_i, y_j) for all signal/background pairs: the O(m·n) definition, ties ½."""
    return (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])


def test_hand_worked_example():
    # By hand, model A: ψ rows (signal 0.9, 0.6, 0.4) against background (0.5, 0.4, 0.1) are
    # [1,1,1], [1,1,1], [0,½,1] → V10 = (1, 1, ½), AUC = 7.5/9 = 5/6; columns give
    # V01 = (2/3, 5/6, 1). S10 = ((1/6)² + (1/6)² + (1/3)²)/2 = 1/12, S01 = ((1/6)² + 0 + (1/6)²)/2
    # = 1/36, Var = S10/3 + S01/3 = 1/27.
    # Model B: V10 = (1, 1/3, 1), V01 = (1, 2/3, 2/3), AUC = 7/9, Var = 4/81 + 1/81 = 5/81;
    # Cov10 = −1/18, Cov01 = −1/36, Cov(A, B) = −1/54 − 1/108 = −1/36.
    # Var(A − B) = 1/27 + 5/81 + 2/36 = 25/162, difference 1/18, z = (1/18)/sqrt(25/162) = √2/10.
    cov = delong_covariance(HAND_Y, np.stack([HAND_A, HAND_B]))
    np.testing.assert_allclose(cov["auc"], [5 / 6, 7 / 9], rtol=1e-14)
    np.testing.assert_allclose(cov["v10"], [[1, 1, 0.5], [1, 1 / 3, 1]], rtol=1e-14)
    np.testing.assert_allclose(cov["v01"], [[2 / 3, 5 / 6, 1], [1, 2 / 3, 2 / 3]], rtol=1e-14)
    want = [[1 / 27, -1 / 36], [-1 / 36, 5 / 81]]
    np.testing.assert_allclose(cov["covariance"], want, rtol=1e-13)

    res = delong_test(HAND_Y, HAND_A, HAND_B)
    assert res["difference"] == pytest.approx(1 / 18, rel=1e-13)
    assert res["var_difference"] == pytest.approx(25 / 162, rel=1e-13)
    assert res["z"] == pytest.approx(math.sqrt(2) / 10, rel=1e-12)
    assert res["p_value"] == pytest.approx(2 * norm.sf(math.sqrt(2) / 10), rel=1e-12)
    assert res["p_value"] == pytest.approx(0.887537, abs=1e-6)  # 2·(1 − Φ(0.141421))
    assert res["correlation"] == pytest.approx((-1 / 36) / math.sqrt(1 / 27 * 5 / 81), rel=1e-12)
    # Sample order does not matter.
    perm = np.array([4, 0, 5, 2, 1, 3])
    shuffled = delong_test(HAND_Y[perm], HAND_A[perm], HAND_B[perm])
    assert shuffled["p_value"] == pytest.approx(res["p_value"], rel=1e-12)


def test_variance_equals_hanley_mcneil_form_on_the_hand_example():
    # DeLong's variance is algebraically (Q2 − A²)/(m − 1) + (Q1 − A²)/(n − 1), Hanley & McNeil's
    # form, when Q2 = P(signal above two background draws) and Q1 = P(two signal draws above one
    # background) are the empirical frequencies (draws with replacement). Count the triples.
    x, y = HAND_A[HAND_Y == 1], HAND_A[HAND_Y == 0]
    m, n = x.size, y.size

    def psi(u: float, v: float) -> float:
        return 1.0 if u > v else 0.5 if u == v else 0.0

    a = sum(psi(xi, yj) for xi in x for yj in y) / (m * n)
    pairs_y, pairs_x = list(itertools.product(y, y)), list(itertools.product(x, x))
    q2 = sum(psi(xi, yj) * psi(xi, yk) for xi in x for yj, yk in pairs_y) / (m * n * n)
    q1 = sum(psi(xi, yj) * psi(xk, yj) for yj in y for xi, xk in pairs_x) / (m * m * n)
    assert (a, q2, q1) == pytest.approx((5 / 6, 3 / 4, 77 / 108), rel=1e-14)  # by hand
    hm_form = (q2 - a**2) / (m - 1) + (q1 - a**2) / (n - 1)
    assert hm_form == pytest.approx(1 / 27, rel=1e-13)
    assert delong_auc_ci(HAND_Y, HAND_A)["variance"] == pytest.approx(hm_form, rel=1e-13)


def test_fast_algorithm_matches_quadratic_structural_components_with_ties():
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 90)
    latent = rng.normal(0.9 * y, 1.0)
    scores = np.stack(
        [
            np.round(latent, 1),  # many ties
            np.round(latent + rng.normal(0, 0.5, y.size), 0),  # very many ties
            latent + rng.normal(0, 1.0, y.size),  # none
        ]
    )
    got = delong_covariance(y, scores)
    m, n = int(y.sum()), int((1 - y).sum())
    v10 = np.stack([psi_matrix(s[y == 1], s[y == 0]).mean(axis=1) for s in scores])
    v01 = np.stack([psi_matrix(s[y == 1], s[y == 0]).mean(axis=0) for s in scores])
    d10, d01 = v10 - v10.mean(1, keepdims=True), v01 - v01.mean(1, keepdims=True)
    direct = (d10 @ d10.T) / ((m - 1) * m) + (d01 @ d01.T) / ((n - 1) * n)
    np.testing.assert_allclose(got["v10"], v10, atol=1e-12)
    np.testing.assert_allclose(got["v01"], v01, atol=1e-12)
    np.testing.assert_allclose(got["covariance"], direct, rtol=1e-10, atol=1e-15)
    for k, s in enumerate(scores):
        assert got["auc"][k] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        u = mannwhitneyu(s[y == 1], s[y == 0]).statistic  # U of the signal sample, ties ½
        assert got["auc"][k] == pytest.approx(u / (m * n), abs=1e-12)
    assert (got["n_signal"], got["n_background"]) == (m, n)


@pytest.mark.parametrize(
    ("data_seed", "p_delong"),
    [(1, 0.014550), (5, 0.109582)],  # one significant at 5 %, one not
)
def test_delong_p_value_agrees_with_a_paired_bootstrap(data_seed, p_delong):
    # Two correlated models (shared latent variable, B slightly worse) on the same 300 events.
    rng = np.random.default_rng(data_seed)
    y = np.r_[np.ones(150, dtype=int), np.zeros(150, dtype=int)]
    latent = rng.normal(0.0, 1.0, y.size) + 0.8 * y
    a = latent + rng.normal(0.0, 0.6, y.size)
    b = latent + rng.normal(0.0, 0.6, y.size) - 0.25 * y
    res = delong_test(y, a, b)
    assert res["p_value"] == pytest.approx(p_delong, abs=1e-6)

    # Paired bootstrap, stratified like DeLong's (class counts fixed), 2000 resamples, seed 100:
    # the same rows for both models in each resample, so the covariance is kept.
    boot = np.random.default_rng(100)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.concatenate(
        [pos[boot.integers(0, pos.size, (2000, pos.size))], neg[boot.integers(0, neg.size, (2000, neg.size))]],
        axis=1,
    )
    auc_a, auc_b = auc_rank(y[idx], a[idx]), auc_rank(y[idx], b[idx])
    se_boot = np.std(auc_a - auc_b, ddof=1)
    p_boot = 2 * norm.sf(abs(res["difference"]) / se_boot)
    # Tolerances: the Monte-Carlo error on a bootstrap standard deviation from 2000 resamples is
    # about 1/sqrt(2·2000) = 1.6 %; allow 5 % on the standard error, 0.015 on the p-value and
    # 0.05 on the correlation of the two AUCs.
    assert se_boot / res["std_error"] == pytest.approx(1.0, abs=0.05)
    assert p_boot == pytest.approx(res["p_value"], abs=0.015)
    assert (p_boot < 0.05) == (res["p_value"] < 0.05)
    assert np.corrcoef(auc_a, auc_b)[0, 1] == pytest.approx(res["correlation"], abs=0.05)
    # Pairing matters: treating the AUCs as independent overstates the error of the difference.
    unpaired_se = math.sqrt(res["var_a"] + res["var_b"])
    assert res["covariance"] > 0 and res["std_error"] < 0.7 * unpaired_se


def test_single_auc_variance_agrees_with_hanley_mcneil_where_it_is_exact():
    # Exponential scores have the power-law ROC TPR = FPR^(λ1/λ0), for which Hanley & McNeil's
    # Q1 = A/(2 − A), Q2 = 2A²/(1 + A) are exact; on 2000 + 2000 events DeLong's estimate and the
    # closed form must agree to a few per cent (noise of a variance estimate from 2000 + 2000
    # events: 2–3 %; this seed gives 0.7 %).
    rng = np.random.default_rng(21)
    x = rng.exponential(2.0, 2000)  # signal: larger scale
    y = rng.exponential(1.0, 2000)
    labels = np.r_[np.ones(2000, dtype=int), np.zeros(2000, dtype=int)]
    ci = delong_auc_ci(labels, np.r_[x, y])
    a, m, n = ci["auc"], x.size, y.size
    q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
    hm = (a * (1 - a) + (m - 1) * (q1 - a**2) + (n - 1) * (q2 - a**2)) / (m * n)
    assert a == pytest.approx(2 / 3, abs=0.02)  # P(X > Y) = 2/(2 + 1)
    assert ci["variance"] == pytest.approx(hm, rel=0.05)


def test_delong_ci_is_the_wald_interval_and_close_to_a_stratified_bootstrap():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 400)
    s = rng.normal(0.8 * y, 1.0)
    ci = delong_auc_ci(y, s, confidence=0.9)
    assert ci["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    half = norm.ppf(0.95) * math.sqrt(ci["variance"])
    assert (ci["low"], ci["high"]) == pytest.approx((ci["auc"] - half, ci["auc"] + half), abs=1e-12)
    assert ci["std_error"] == pytest.approx(math.sqrt(ci["variance"]))
    _, lo, hi = bootstrap_auc(y, s, n_boot=2000, confidence=0.9, seed=3, stratified=True)
    # Interval width 0.088; bootstrap noise on its ends ~0.002.
    assert (lo, hi) == pytest.approx((ci["low"], ci["high"]), abs=0.005)
    # Perfect separation: zero variance, the interval collapses to 1 (and never exceeds it).
    perfect = delong_auc_ci(np.r_[np.zeros(4), np.ones(4)], np.arange(8.0))
    got = (perfect["auc"], perfect["variance"], perfect["low"], perfect["high"])
    assert got == (1.0, 0.0, 1.0, 1.0)


def test_identical_models_give_a_degenerate_but_defined_test():
    rng = np.random.default_rng(2)
    y, s = rng.integers(0, 2, 50), rng.normal(size=50)
    res = delong_test(y, s, s)
    assert (res["difference"], res["z"], res["p_value"]) == (0.0, 0.0, 1.0)
    assert res["var_difference"] == pytest.approx(0.0, abs=1e-15)
    assert res["correlation"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("labels", "a", "b", "match"),
    [
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3], "not the same samples"),
        ([0, 1, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "labels have 3"),
        ([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], r"0 \(background\) or 1"),
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "only signal"),
        ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "non-finite"),
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, np.inf, 0.4], "non-finite"),
        ([0, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "at least 2 signal"),
    ],
)
def test_bad_inputs_are_clear_errors(labels, a, b, match):
    with pytest.raises(ValueError, match=match):
        delong_test(np.asarray(labels), np.asarray(a), np.asarray(b))


def test_other_input_errors():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="1-D for a single AUC"):
        delong_auc_ci(y, np.ones((2, 4)))
    with pytest.raises(ValueError, match="equal-length rows"):
        delong_covariance(y, [np.arange(4.0), np.arange(3.0)])
    with pytest.raises(ValueError, match="confidence"):
        delong_auc_ci(y, np.arange(4.0), confidence=95)
    with pytest.raises(ValueError, match="must be 1-D"):
        delong_test(y, np.ones((4, 1, 1)), np.ones(4))
