"""Which samples an experiment trains, validates and tests on: one seeded, stratified selection.

The trainer and the physics baseline both select through these functions, so for the same config
and seed their out-of-fold and test scores line up sample by sample (ensembles, DeLong's test).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from e2evision.datasets.task import get_task


def strata(labels: np.ndarray, task: str, max_bins: int = 10) -> np.ndarray:
    """What splits are stratified on: the class, or a quantile bin of a regression target."""
    if not get_task(task).is_regression:
        return labels
    n_bins = max(1, min(max_bins, labels.size // 20))
    edges = np.quantile(labels, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, labels, side="right")


def split_indices(labels: np.ndarray, cfg: Any, task: str = "binary") -> tuple[np.ndarray, np.ndarray]:
    """Stratified (optional) subsample, then a stratified train+val / test split; both seeded."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(labels.size)
    st = strata(labels, task)
    if cfg.data.max_samples is not None and cfg.data.max_samples < labels.size:
        idx, _ = train_test_split(idx, train_size=cfg.data.max_samples, stratify=st, random_state=cfg.seed)
        idx = np.sort(idx)
    trainval, test = train_test_split(
        idx, test_size=cfg.data.test_fraction, stratify=strata(labels[idx], task), random_state=cfg.seed
    )
    if cfg.data.max_trainval_samples is not None and cfg.data.max_trainval_samples < trainval.size:
        trainval = nested_subset(trainval, strata(labels[trainval], task), cfg.data.max_trainval_samples, cfg.seed)
    return np.sort(trainval), np.sort(test)


def nested_subset(idx: np.ndarray, strata_of: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of ``idx`` in proportion to each stratum, nested: a smaller ``n`` takes a subset of a larger one's.

    Each sample's place in a seeded shuffle of its stratum, as a fraction of the stratum's size,
    orders all samples; the first ``n`` keep the class fractions to within one sample, and the
    samples of a learning curve's smaller points are always among those of its larger ones.
    """
    rng = np.random.default_rng(seed)
    key = np.empty(idx.size, dtype=np.float64)
    for value in np.unique(strata_of):
        members = np.flatnonzero(strata_of == value)
        key[members[rng.permutation(members.size)]] = (np.arange(members.size) + 0.5) / members.size
    order = np.lexsort((rng.random(idx.size), key))
    return np.sort(idx[order[:n]])


def fold_splits(labels_tv: np.ndarray, task: str, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train rows, validation rows)`` of each of ``folds`` stratified folds of the train+val labels.

    Rows are positions in ``labels_tv`` (not sample indices).
    """
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(skf.split(np.arange(labels_tv.size), strata(labels_tv, task)))
