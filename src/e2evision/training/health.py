"""Did the model learn? Checks on a finished run's loss curves and validation scores.

A model that never trained and a model that trained and lost look alike in a table of AUCs, and
only the first is a bug. Two signs tell them apart without a person reading the curves:

* the training loss never fell below where it started (its first epoch, or the loss of a constant
  prediction at the class frequencies, whichever is higher) after ``epochs`` epochs;
* the validation scores collapsed to one value (all samples get the same probability).

:func:`diagnose` returns warnings as sentences that name the fold, the numbers and what to try;
the runner logs them and writes them into ``metrics.json`` and ``run.json`` (``warnings``), and the
report flags the run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: relative fall of the training loss below its start that counts as learning
MIN_RELATIVE_FALL = 0.01
#: standard deviation of validation probabilities under which the scores count as collapsed
COLLAPSED_STD = 1e-3

HINT = (
    "check the input transforms (preprocess.log1p for energies) and lower train.lr or lengthen "
    'train.warmup_epochs (docs/training.md, "When a model does not learn")'
)


def chance_loss(task: str, labels: np.ndarray) -> float | None:
    """The loss of a constant prediction at the class frequencies (binary or multi-class entropy)."""
    if task not in ("binary", "multiclass") or labels.size == 0:
        return None
    _, counts = np.unique(labels.astype(np.int64), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def loss_warning(fold: int, rows: list[dict[str, Any]], epochs: int, chance: float | None) -> str | None:
    """A warning when fold ``fold``'s training loss has not fallen after ``epochs`` epochs."""
    losses = [float(r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    if any(not math.isfinite(v) for v in losses):
        return f"fold {fold}: the training loss is not finite (NaN or inf); {HINT}"
    if not losses or len(losses) < epochs:
        return None
    start = max(losses[0], chance) if chance is not None else losses[0]
    if min(losses) < start * (1.0 - MIN_RELATIVE_FALL):
        return None
    level = f" (a constant guess scores {chance:.3f})" if chance is not None else ""
    return (
        f"fold {fold}: the model is not learning: the training loss stayed at {losses[-1]:.3f} over "
        f"{len(losses)} epochs, from {losses[0]:.3f}{level}; {HINT}"
    )


def scores_warning(fold: int, scores: np.ndarray, task: str) -> str | None:
    """A warning when fold ``fold``'s validation probabilities are (nearly) one value."""
    if task == "regression" or scores.size < 2:
        return None
    spread = float(np.std(scores, axis=0).max())
    if spread >= COLLAPSED_STD:
        return None
    return (
        f"fold {fold}: the validation scores collapsed to one value (standard deviation {spread:.1e} "
        f"across {scores.shape[0]} samples); {HINT}"
    )


def diagnose(
    task: str,
    history: list[dict[str, Any]],
    oof: np.ndarray,
    oof_fold: np.ndarray,
    labels: np.ndarray,
    epochs: int | None,
) -> list[str]:
    """Warnings for every fold that did not learn; empty when all did (or ``epochs`` is None)."""
    if epochs is None:
        return []
    warnings: list[str] = []
    for fold in sorted(int(f) for f in np.unique(oof_fold) if f >= 0):
        rows = [r for r in history if int(r.get("fold", -1)) == fold]
        mask = oof_fold == fold
        msg = loss_warning(fold, rows, epochs, chance_loss(task, labels[mask]))
        msg = msg or scores_warning(fold, oof[mask], task)
        if msg:
            warnings.append(msg)
    return warnings
