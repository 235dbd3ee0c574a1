"""Metrics against independent computations (scikit-learn, a plain bootstrap loop)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from e2evision.metrics import auc_rank, bootstrap_auc, roc_auc


def test_auc_rank_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding creates many ties
    assert auc_rank(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    ys, ss = np.stack([y, y[::-1]]), np.stack([s, s])
    np.testing.assert_allclose(auc_rank(ys, ss), [roc_auc_score(y, s), roc_auc_score(y[::-1], s)], atol=1e-12)
    assert np.isnan(auc_rank(np.ones(4), np.arange(4.0)))


def test_bootstrap_ci_matches_a_plain_loop():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    s = rng.normal(y, 1.2)
    auc, lo, hi = bootstrap_auc(y, s, n_boot=400, seed=11, batch=400)
    draws = np.random.default_rng(11).integers(0, y.size, size=(400, y.size))
    loop = np.array([roc_auc_score(y[i], s[i]) for i in draws])
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(loop, [0.025, 0.975])), abs=1e-12)
    assert lo < auc < hi


def test_roc_auc_one_class_is_an_error():
    with pytest.raises(ValueError, match="needs both classes"):
        roc_auc(np.zeros(5), np.arange(5.0))
