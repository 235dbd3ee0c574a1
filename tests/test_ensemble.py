"""Ensembles from out-of-fold predictions: exact combiners, honest stacking, alignment checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from e2evision.ensemble import Combiner, build_ensemble, load_combiner


def _fake_runs(
    tmp_path: Path, noise=(1.0, 1.2, 1.5), n_tv=900, n_test=600, folds=3, seed=0, task="binary"
) -> list[Path]:
    """Run directories whose members see a shared latent through independent noise."""
    rng = np.random.default_rng(seed)
    n = n_tv + n_test
    y = (rng.random(n) < 0.5).astype(np.float64)
    latent = 1.5 * (2 * y - 1) if task == "binary" else 100 + 50 * rng.random(n)
    if task == "regression":
        y = latent.copy()
    fold = rng.integers(0, folds, n_tv)
    dirs = []
    for j, s in enumerate(noise):
        raw = latent + rng.normal(0, s * (1 if task == "binary" else 10), n)
        score = 1 / (1 + np.exp(-raw)) if task == "binary" else raw
        d = tmp_path / f"m{j}"
        d.mkdir(parents=True)
        np.savez(
            d / "predictions.npz",
            oof_score=score[:n_tv],
            oof_label=y[:n_tv],
            oof_fold=fold,
            oof_index=np.arange(n_tv),
            test_score=score[n_tv:],
            test_label=y[n_tv:],
            test_index=np.arange(n_tv, n),
            test_fold_scores=np.tile(score[n_tv:], (folds, 1)),
        )
        (d / "metrics.json").write_text(
            json.dumps({"name": f"m{j}", "model": "fake", "task": task, "n_params": 10, "train_time_s": 1.0})
        )
        dirs.append(d)
    return dirs


def test_mean_is_the_average_and_weights_ignore_a_useless_member(tmp_path):
    dirs = _fake_runs(tmp_path, noise=(1.0, 1.0, 50.0))
    m = build_ensemble(dirs, tmp_path / "mean", method="mean")
    with np.load(tmp_path / "mean" / "predictions.npz") as npz:
        members = npz["member_test_scores"]
        np.testing.assert_allclose(npz["test_score"], members.mean(axis=0), rtol=1e-12)
    assert m["test_auc"] == pytest.approx(roc_auc_score(npz_label(tmp_path / "mean"), members.mean(axis=0)))
    build_ensemble(dirs, tmp_path / "w", method="weighted")
    w = np.array(json.loads((tmp_path / "w" / "ensemble.json").read_text())["combiner"]["weights"])
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all() and w[2] < 0.05 and w[0] > 0.3


def npz_label(d: Path) -> np.ndarray:
    with np.load(d / "predictions.npz") as npz:
        return npz["test_label"]


@pytest.mark.parametrize("method", ["stack", "gbdt", "weighted"])
def test_combiners_beat_the_best_member_with_intervals(tmp_path, method):
    dirs = _fake_runs(tmp_path)
    m = build_ensemble(dirs, tmp_path / method, method=method)
    best = max(r["test_auc"] for r in m["ensemble"]["members"])
    assert m["best_member"] == "m0"
    lo, hi = m["test_auc_ci"]
    assert lo < m["test_auc"] < hi
    # independent noise averages out: the ensemble must be at least as good as its best member
    assert m["test_auc"] >= best - (0.01 if method == "gbdt" else 0.0)
    assert len(m["fold_auc"]) == 3 and 0.5 < m["oof_auc"] <= 1.0
    # the combiner's OOF scores are second-level out-of-fold: recompute one fold by hand
    with np.load(tmp_path / method / "predictions.npz") as npz:
        oof, fold, y = npz["oof_score"], npz["oof_fold"], npz["oof_label"]
    assert m["fold_auc"][1] == pytest.approx(roc_auc_score(y[fold == 1], oof[fold == 1]))
    assert 0.0 <= m["versus_best_member"]["p_value"] <= 1.0


def test_saved_combiner_reproduces_test_scores_without_pickles(tmp_path):
    dirs = _fake_runs(tmp_path)
    for method in ("stack", "gbdt"):
        build_ensemble(dirs, tmp_path / method, method=method)
        with np.load(tmp_path / method / "predictions.npz", allow_pickle=False) as npz:
            X, expected = npz["member_test_scores"].T, npz["test_score"]
        np.testing.assert_allclose(load_combiner(tmp_path / method).predict(X), expected, rtol=1e-10)


def test_regression_stacking_and_alignment_errors(tmp_path):
    dirs = _fake_runs(tmp_path / "r", task="regression")
    m = build_ensemble(dirs, tmp_path / "reg", method="stack")
    best = min(r["test_mae"] for r in m["ensemble"]["members"])
    assert m["test"]["mae"] == m["test_mae"] <= best
    lo, hi = m["test_mae_ci"]
    assert lo < m["test_mae"] < hi and len(m["fold_mae"]) == 3
    vs = m["versus_best_member"]  # paired: the ensemble's MAE minus its best member's, on the test split
    assert vs["difference"] == pytest.approx(m["test_mae"] - best, abs=1e-12)
    assert vs["ci"][0] <= vs["difference"] <= vs["ci"][1] and 0 <= vs["p_value"] <= 1
    assert vs["verdict"].startswith("the ensemble's test MAE is") and "below its best member" in vs["verdict"]
    other = _fake_runs(tmp_path / "o", seed=1)
    with pytest.raises(ValueError, match="task 'binary' differs"):
        build_ensemble([dirs[0], other[0]], tmp_path / "bad")
    shifted = _fake_runs(tmp_path / "s", n_tv=800)
    with pytest.raises(ValueError, match="oof_index differs"):
        build_ensemble([other[0], shifted[1]], tmp_path / "bad2")
    with pytest.raises(ValueError, match="at least two runs"):
        build_ensemble([dirs[0]], tmp_path / "bad3")
    with pytest.raises(ValueError, match="unknown ensemble method 'vote'"):
        Combiner("vote", "binary", 2)
    with pytest.raises(FileNotFoundError, match=r"nowhere: not a finished run \(metrics.json is missing\)"):
        build_ensemble([tmp_path / "nowhere", dirs[0]], tmp_path / "bad4")


def test_cli_writes_an_ensemble_the_report_accepts(tmp_path):
    from typer.testing import CliRunner

    from e2evision.cli import app
    from e2evision.report import build_report

    dirs = _fake_runs(tmp_path)
    res = CliRunner().invoke(app, ["ensemble", *map(str, dirs), "--out", str(tmp_path / "ens"), "--method", "weighted"])
    assert res.exit_code == 0, res.output
    assert "best member m0" in res.output and "DeLong p" in res.output
    page = build_report([tmp_path / "ens"], tmp_path / "report.html")
    html = page.read_text()
    assert "ensemble:weighted(m0, m1, m2)" in html  # the full name, kept as the cell's tooltip
    # the column itself: method and member count, then one member per line
    assert 'weighted of 3<ul class="members"><li>m0</li><li>m1</li><li>m2</li></ul></td>' in html
    res = CliRunner().invoke(app, ["ensemble", str(dirs[0]), "--out", str(tmp_path / "e2")])
    assert res.exit_code == 2 and "at least two runs" in res.output


def test_verdict_says_why_an_ensemble_falls_below_its_best_member(tmp_path):
    dirs = _fake_runs(tmp_path, noise=(0.5, 8.0))
    m = build_ensemble(dirs, tmp_path / "mean", method="mean")  # a plain mean drags in the noisy member
    v = m["versus_best_member"]
    assert v["difference"] < 0 and "below its best member m0" in v["verdict"]
    assert f"{v['p_value']:.3g}" in v["verdict"] and "900 out-of-fold samples" in v["verdict"]
    up = build_ensemble(_fake_runs(tmp_path / "b"), tmp_path / "stack", method="stack")["versus_best_member"]
    assert up["difference"] >= 0 and "above its best member" in up["verdict"]
