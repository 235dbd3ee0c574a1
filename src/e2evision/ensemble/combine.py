"""Ensembles of finished runs, built from their out-of-fold predictions.

Every run's ``predictions.npz`` holds out-of-fold (OOF) scores for the train+validation samples
and averaged fold-model scores for the held-out test split. Runs trained on the same data with the
same seed share both splits, so their scores line up sample by sample. A combiner is fitted on the
OOF scores (which no member saw in training) and applied to the test scores:

``mean``       plain average (of probabilities, or of regression predictions)
``weighted``   non-negative weights summing to 1, fitted on OOF by minimising log-loss (binary)
               or squared error (regression)
``stack``      logistic regression on the members' logits (binary) or ridge regression
               (regression), optionally with the dataset's scalar features (pt, m0, ...)
``gbdt``       scikit-learn's histogram gradient boosting on member outputs plus scalars

The combiner's own generalisation is measured honestly with a second cross-validation level that
reuses the members' fold assignment: for fold k it is fitted on the OOF rows of the other folds
and scores the rows of fold k. Those scores give the ensemble's fold AUCs and OOF AUC, exactly as a
single run reports them; the final combiner is then fitted on all OOF rows.

Nothing is pickled: the combiner is saved as numbers (weights, coefficients) in ``ensemble.json``;
gradient boosting, whose trees scikit-learn can only pickle, is saved as its training table
(``combiner_train.npz``) and refitted deterministically (fixed ``random_state``) on load.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit, softmax

from e2evision.datasets.task import get_task
from e2evision.metrics import (
    bootstrap_auc,
    bootstrap_metric,
    delong_test,
    regression_summary,
    task_metrics,
)
from e2evision.rundir import (
    COMBINER_TRAIN_FILE,
    CONFIG_FILE,
    ENSEMBLE_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    read_run,
    write_arrays,
    write_config,
    write_metrics,
    write_predictions,
    write_run_info,
)
from e2evision.utils import atomic_write_json, open_npz, package_versions

METHODS = ("mean", "weighted", "stack", "gbdt")
_EPS = 1e-6


@dataclass
class Member:
    """One finished run's predictions, as the ensemble needs them."""

    name: str
    path: Path
    task: str
    metrics: dict[str, Any]
    preds: dict[str, np.ndarray]

    @property
    def oof(self) -> np.ndarray:
        return self.preds["oof_score"].astype(np.float64)

    @property
    def test(self) -> np.ndarray:
        return self.preds["test_score"].astype(np.float64)


def load_member(run_dir: str | os.PathLike[str]) -> Member:
    """A finished run (trained, baseline or ensemble) read through the run directory's validated
    reader, checked for what combining needs: out-of-fold scores, one finite score per sample."""
    record = read_run(run_dir, complete=False)
    path, preds = record.path, record.preds
    ppath = path / PREDICTIONS_FILE
    need = ("oof_score", "oof_label", "oof_index", "oof_fold", "test_score", "test_label", "test_index")
    missing = [k for k in need if k not in preds]
    if missing:
        raise ValueError(f"{ppath}: lacks {missing}; the ensemble needs out-of-fold and test predictions")
    if preds["oof_score"].ndim != 1 or preds["test_score"].ndim != 1:
        raise ValueError(f"{ppath}: ensembles need one score per sample (binary or regression runs)")
    if not (np.isfinite(preds["oof_score"]).all() and np.isfinite(preds["test_score"]).all()):
        raise ValueError(f"{ppath}: scores hold NaN or inf (an unfinished fold?)")
    return Member(name=record.name, path=path, task=record.task, metrics=record.metrics, preds=preds)


def check_aligned(members: Sequence[Member]) -> None:
    """All members must score the same samples in the same order, with the same labels and folds."""
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two runs")
    ref = members[0]
    for m in members[1:]:
        if m.task != ref.task:
            raise ValueError(f"{m.path}: task {m.task!r} differs from {ref.path}'s {ref.task!r}")
        for key in ("oof_index", "test_index", "oof_label", "test_label", "oof_fold"):
            if not np.array_equal(m.preds[key], ref.preds[key]):
                raise ValueError(
                    f"{m.path}: {key} differs from {ref.path}; ensemble runs trained on the same data "
                    "with the same seed, test fraction and number of folds"
                )


# ------------------------------------------------------------------------------------ combiners
class Combiner:
    """Maps a (n, k) table of member scores (+ scalar columns) to one score per sample."""

    def __init__(self, method: str, task: str, n_members: int, seed: int = 0) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")
        self.method, self.task, self.k, self.seed = method, task, n_members, seed
        # binary members score probabilities (combined on the logit scale, by classifiers);
        # regression members predict values (combined as they are, by regressors)
        self.classify = not get_task(task).is_regression
        self.params: dict[str, Any] = {}
        self._model: Any = None
        self._center: np.ndarray | None = None
        self._scale: np.ndarray | None = None

    # Binary members output probabilities; linear combiners work on their logits.
    def _features(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        F = X.copy()
        if self.classify:
            F[:, : self.k] = logit(np.clip(X[:, : self.k], _EPS, 1 - _EPS))
        return F

    def fit(self, X: np.ndarray, y: np.ndarray) -> Combiner:
        X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
        if self.method == "mean":
            self.params = {"weights": [1.0 / self.k] * self.k}
        elif self.method == "weighted":
            self.params = {"weights": self._fit_weights(X[:, : self.k], y).tolist()}
        elif self.method == "stack":
            F = self._features(X)
            self._center, self._scale = F.mean(axis=0), F.std(axis=0) + 1e-12
            Z = (F - self._center) / self._scale
            if self.classify:
                from sklearn.linear_model import LogisticRegression

                model = LogisticRegression(C=1.0, max_iter=1000).fit(Z, y)
                coef, intercept = model.coef_.ravel(), float(model.intercept_[0])
            else:
                from sklearn.linear_model import Ridge

                model = Ridge(alpha=1.0).fit(Z, y)
                coef, intercept = np.asarray(model.coef_).ravel(), float(model.intercept_)
            self.params = {
                "coef": coef.tolist(),
                "intercept": intercept,
                "center": self._center.tolist(),
                "scale": self._scale.tolist(),
            }
        else:
            from sklearn.ensemble import (
                HistGradientBoostingClassifier,
                HistGradientBoostingRegressor,
            )

            cls = HistGradientBoostingClassifier if self.classify else HistGradientBoostingRegressor
            self._model = cls(
                max_iter=200,
                learning_rate=0.05,
                max_leaf_nodes=15,
                min_samples_leaf=40,
                l2_regularization=1.0,
                random_state=self.seed,
            ).fit(self._features(X), y)
            self.params = {
                "max_iter": 200,
                "learning_rate": 0.05,
                "max_leaf_nodes": 15,
                "min_samples_leaf": 40,
                "l2_regularization": 1.0,
                "random_state": self.seed,
            }
        return self

    def _fit_weights(self, P: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Simplex weights (softmax-parametrised) minimising log-loss or squared error on OOF."""

        def loss(theta: np.ndarray) -> float:
            w = softmax(theta)
            if self.classify:
                p = np.clip(P @ w, _EPS, 1 - _EPS)
                return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
            return float(np.mean((P @ w - y) ** 2))

        res = minimize(loss, np.zeros(self.k), method="L-BFGS-B")
        return softmax(res.x)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float64)
        if self.method in ("mean", "weighted"):
            return X[:, : self.k] @ np.asarray(self.params["weights"])
        if self.method == "stack":
            Z = (self._features(X) - np.asarray(self.params["center"])) / np.asarray(self.params["scale"])
            t = Z @ np.asarray(self.params["coef"]) + self.params["intercept"]
            return expit(t) if self.classify else t
        if self.classify:
            return self._model.predict_proba(self._features(X))[:, 1]
        return self._model.predict(self._features(X))


# ------------------------------------------------------------------------------------ ensembles
@dataclass
class _Table:
    """The members' scores side by side (+ scalar columns), with the shared labels and folds."""

    X_oof: np.ndarray  # (n_trainval, members + scalars)
    X_test: np.ndarray  # (n_test, members + scalars)
    y_oof: np.ndarray
    y_test: np.ndarray
    folds: np.ndarray  # each out-of-fold row's fold
    n_members: int
    scalar_names: list[str]

    @property
    def member_test(self) -> np.ndarray:
        return self.X_test[:, : self.n_members]


def build_ensemble(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    method: str = "stack",
    scalars: bool = False,
    name: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Combine finished runs into an ensemble run directory; returns its metrics.

    The directory has the layout of a training run (``metrics.json``, ``predictions.npz``,
    ``run.json``, ``config.yaml``) plus ``ensemble.json``, so reports treat it as one more model.
    """
    t0 = time.perf_counter()
    members = [load_member(d) for d in run_dirs]
    check_aligned(members)
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")
    table = _member_table(members, scalars)
    task = members[0].task
    oof, test_fold_scores = _cross_fit(table, method, task, seed)
    final = Combiner(method, task, len(members), seed).fit(table.X_oof, table.y_oof)
    test = final.predict(table.X_test)
    label = name or f"ensemble_{method}"
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = _ensemble_metrics(members, table, oof, test, method, label, seed)
    metrics["wall_time_s"] = time.perf_counter() - t0
    write_predictions(
        out_dir,
        oof_score=oof,
        oof_label=table.y_oof,
        oof_fold=table.folds,
        oof_index=members[0].preds["oof_index"],
        test_score=test,
        test_label=table.y_test,
        test_index=members[0].preds["test_index"],
        test_fold_scores=test_fold_scores,
        member_test_scores=table.member_test.T,
    )
    _write_spec(out_dir, members, table, final, method, label, seed)
    return write_metrics(out_dir, metrics)  # strict JSON: NaN / inf become null


def _member_table(members: Sequence[Member], scalars: bool) -> _Table:
    """Member scores as columns (out-of-fold and test), with the dataset's scalars when asked."""
    ref = members[0]
    X_oof = np.stack([m.oof for m in members], axis=1)
    X_test = np.stack([m.test for m in members], axis=1)
    scalar_names: list[str] = []
    if scalars:
        s_oof, s_test, scalar_names = _member_scalars(ref)
        X_oof, X_test = np.hstack([X_oof, s_oof]), np.hstack([X_test, s_test])
    return _Table(
        X_oof=X_oof,
        X_test=X_test,
        y_oof=ref.preds["oof_label"].astype(np.float64),
        y_test=ref.preds["test_label"].astype(np.float64),
        folds=ref.preds["oof_fold"],
        n_members=len(members),
        scalar_names=scalar_names,
    )


def _cross_fit(table: _Table, method: str, task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The combiner's own out-of-fold scores (fitted on the other folds' rows) and its per-fold test scores."""
    oof = np.full(table.y_oof.shape, np.nan)
    fold_ids = sorted(int(f) for f in np.unique(table.folds))
    test_fold_scores = np.zeros((len(fold_ids), table.y_test.size))
    for i, k in enumerate(fold_ids):
        tr, va = table.folds != k, table.folds == k
        comb = Combiner(method, task, table.n_members, seed).fit(table.X_oof[tr], table.y_oof[tr])
        oof[va] = comb.predict(table.X_oof[va])
        test_fold_scores[i] = comb.predict(table.X_test)
    return oof, test_fold_scores


def _member_rows(members: Sequence[Member], table: _Table, seed: int) -> list[dict[str, Any]]:
    """Each member's name, path, model and test metric (AUC with its interval, or MAE)."""
    rows = []
    for j, m in enumerate(members):
        row: dict[str, Any] = {"name": m.name, "path": str(m.path), "model": m.metrics.get("model")}
        if get_task(m.task).is_regression:
            row.update(test_mae=regression_summary(table.y_test, table.X_test[:, j])["mae"])
        else:
            auc, lo, hi = bootstrap_auc(table.y_test, table.X_test[:, j], seed=seed)
            row.update(test_auc=float(auc), test_auc_ci=[lo, hi])
        rows.append(row)
    return rows


def _ensemble_metrics(
    members: Sequence[Member], table: _Table, oof: np.ndarray, test: np.ndarray, method: str, label: str, seed: int
) -> dict[str, Any]:
    """metrics.json of the ensemble: the task's metrics (as a run's) and the comparison with its best member."""
    task = get_task(members[0].task)
    rows = _member_rows(members, table, seed)
    metrics: dict[str, Any] = {
        "name": label,
        "model": f"ensemble:{method}(" + ", ".join(m.name for m in members) + ")",
        "task": task.name,
        "ensemble": {"method": method, "members": rows, "scalars": table.scalar_names},
        "n_params": int(sum(int(m.metrics.get("n_params", 0)) for m in members)),
        "train_time_s": float(sum(float(m.metrics.get("train_time_s", 0.0)) for m in members)),
        "epochs": [],
        "history": [],
        "n_trainval": int(table.y_oof.size),
        "n_test": int(table.y_test.size),
        **task_metrics(task, table.y_oof, oof, table.folds, table.y_test, test, seed=seed),
    }
    pick = max if task.higher_is_better else min
    best = pick(range(len(members)), key=lambda j: rows[j][task.headline])
    metrics["best_member"] = rows[best]["name"]
    if task.is_regression:
        metrics["versus_best_member"] = _regression_versus_best(
            table.y_test, test, table.member_test, best, rows[best]["name"], table.y_oof.size, seed, method
        )
    else:
        cmp = delong_test(table.y_test, test, table.member_test[:, best])
        metrics["versus_best_member"] = {
            "difference": cmp["difference"],
            "p_value": cmp["p_value"],
            "z": cmp["z"],
            "ci": [cmp["low"], cmp["high"]],
            "verdict": _verdict(cmp, table.member_test, rows[best]["name"], table.y_oof.size),
        }
    return metrics


def _write_spec(
    out_dir: Path, members: Sequence[Member], table: _Table, final: Combiner, method: str, label: str, seed: int
) -> None:
    """ensemble.json (the fitted combiner as numbers), its config.yaml and run.json; gbdt's training table."""
    if method == "gbdt":
        write_arrays(out_dir / COMBINER_TRAIN_FILE, X=table.X_oof, y=table.y_oof)
    spec = {
        "method": method,
        "task": members[0].task,
        "seed": seed,
        "members": [str(m.path) for m in members],
        "member_names": [m.name for m in members],
        "scalars": table.scalar_names,
        "combiner": final.params,
    }
    atomic_write_json(out_dir / ENSEMBLE_FILE, spec)
    write_config(out_dir, _yaml(spec))
    ref = members[0].path / RUN_FILE
    info = json.loads(ref.read_text()) if ref.exists() else {}
    write_run_info(
        out_dir,
        {
            "name": label,
            "seed": seed,
            "versions": package_versions(),
            "data": info.get("data", {}),
            "members": spec["members"],
            "command": f"ensemble {method}",
        },
    )


def _verdict(cmp: dict[str, Any], member_scores: np.ndarray, best: str, n_fit: int) -> str:
    """One sentence for reports: is the ensemble at least as good as its best member, and if not why."""
    d, p = cmp["difference"], cmp["p_value"]
    if d >= 0:
        return (
            f"the ensemble's test AUC is {d:+.4f} above its best member {best} "
            f"(DeLong p = {p:.3g}{', significant at 5 %' if p < 0.05 else ', not significant at 5 %'})"
        )
    corr = np.corrcoef(member_scores.T)
    off = corr[~np.eye(corr.shape[0], dtype=bool)]
    why = (
        f"the members' test scores are strongly correlated (mean Pearson r = {off.mean():.2f}), so there is "
        "little independent information to combine"
        if off.mean() > 0.8
        else "the weaker members add noise that the combiner, fitted on out-of-fold scores, does not fully discount"
    )
    return (
        f"the ensemble's test AUC is {-d:.4f} below its best member {best} (DeLong p = {p:.3g}, "
        f"{'significant' if p < 0.05 else 'not significant'} at 5 %): {why}; the combiner was fitted on "
        f"{n_fit} out-of-fold samples"
    )


def _regression_versus_best(
    y: np.ndarray,
    ens: np.ndarray,
    members: np.ndarray,
    best: int,
    name: str,
    n_fit: int,
    seed: int,
    method: str = "stack",
) -> dict[str, Any]:
    """Paired bootstrap of MAE(ensemble) − MAE(best member) on the test split, and a sentence."""
    from scipy.stats import norm

    boot = bootstrap_metric(
        lambda t, a, b: float(np.mean(np.abs(a - t)) - np.mean(np.abs(b - t))),
        y,
        ens,
        members[:, best],
        n_boot=1000,
        seed=seed,
    )
    d = boot["value"]
    p = float(2 * norm.sf(abs(d) / boot["std"])) if boot["std"] > 0 else 0.0
    sig = "significant" if p < 0.05 else "not significant"
    if d <= 0:
        verdict = (
            f"the ensemble's test MAE is {-d:.4g} below its best member {name}'s (paired bootstrap "
            f"95 % CI of the difference [{boot['low']:+.4g}, {boot['high']:+.4g}], p = {p:.3g}, {sig} at 5 %)"
        )
    else:
        corr = np.corrcoef(members.T)
        off = corr[~np.eye(corr.shape[0], dtype=bool)]
        why = (
            f"the members' predictions are strongly correlated (mean Pearson r = {off.mean():.2f}), so there is "
            "little independent information to combine"
            if off.size and off.mean() > 0.8
            else (
                "an unweighted mean gives the weaker members as much weight as the best one (stacking fits the weights)"
                if method == "mean"
                else "the weaker members add noise that the combiner, fitted on out-of-fold predictions, does not "
                "fully discount"
            )
        )
        fitted = "" if method == "mean" else f"; the combiner was fitted on {n_fit} out-of-fold samples"
        verdict = (
            f"the ensemble's test MAE is {d:.4g} above its best member {name}'s (95 % CI "
            f"[{boot['low']:+.4g}, {boot['high']:+.4g}], p = {p:.3g}, {sig} at 5 %): {why}{fitted}"
        )
    return {"difference": d, "ci": [boot["low"], boot["high"]], "p_value": p, "verdict": verdict}


def _yaml(spec: dict[str, Any]) -> str:
    import yaml

    shown = {k: v for k, v in spec.items() if k != "combiner"}
    return yaml.safe_dump(shown, sort_keys=False)


def _member_scalars(ref: Member) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The dataset's scalar features of the OOF and test samples, read through the run's config."""
    from e2evision.config import load_config
    from e2evision.datasets.experiment import open_experiment_data

    info = json.loads((ref.path / RUN_FILE).read_text())
    reader = open_experiment_data(load_config(ref.path / CONFIG_FILE), info["data"]["paths"])
    if not reader.scalar_names:
        raise ValueError(f"{ref.path}: the dataset ({reader.format}) has no scalar features to add")
    return (
        reader.read_scalars(ref.preds["oof_index"]).astype(np.float64),
        reader.read_scalars(ref.preds["test_index"]).astype(np.float64),
        reader.scalar_names,
    )


def load_combiner(ensemble_dir: str | os.PathLike[str]) -> Combiner:
    """The fitted combiner of an ensemble directory, to combine member scores of new samples."""
    d = Path(ensemble_dir)
    spec = json.loads((d / ENSEMBLE_FILE).read_text())
    comb = Combiner(spec["method"], spec["task"], len(spec["members"]), spec["seed"])
    if spec["method"] == "gbdt":
        with open_npz(d / COMBINER_TRAIN_FILE) as npz:
            comb.fit(npz["X"], npz["y"])
    else:
        comb.params = spec["combiner"]
    return comb
