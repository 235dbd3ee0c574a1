"""What a dataset's task means downstream: outputs, link, loss, monitor and headline metric.

A reader states its task as a name (``reader.task``: ``binary``, ``multiclass`` or
``regression``); :func:`get_task` turns that name into a :class:`Task` that every layer asks
instead of comparing strings, so that the number of outputs, the link function, the metric that
picks the best epoch and the number the CLI prints are decided in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TASK_NAMES", "Task", "get_task"]


@dataclass(frozen=True)
class Task:
    """One learning task and the conventions every layer follows for it."""

    name: str
    #: the link from the network's raw output to its score: ``sigmoid``, ``softmax`` or ``identity``
    link: str
    #: losses that fit the task; the first is the default (``train.loss: auto``)
    losses: tuple[str, ...]
    #: the validation metric that selects the best epoch, and whether it is maximised or minimised
    monitor: str
    monitor_mode: str
    #: ``metrics.json``'s headline: the test metric (``test_auc``/``test_mae``) and its short label
    headline: str
    headline_label: str

    # --------------------------------------------------------------------------- properties
    @property
    def is_regression(self) -> bool:
        """A continuous target: scores are predictions in target units, splits stratify on bins."""
        return self.link == "identity"

    @property
    def is_multiclass(self) -> bool:
        """One score per class (``(N, K)`` arrays) instead of one per sample."""
        return self.link == "softmax"

    @property
    def higher_is_better(self) -> bool:
        return self.monitor_mode == "max"

    @property
    def fold_metric(self) -> str:
        """metrics.json's per-fold list of the monitored metric (``fold_auc`` / ``fold_mae``)."""
        return "fold_" + self.headline.removeprefix("test_")

    @property
    def score_key(self) -> str:
        """The name of the score output of an exported graph: ``prob`` or ``value``."""
        return "value" if self.is_regression else "prob"

    # ------------------------------------------------------------------------ class counting
    def n_classes(self, class_names: Sequence[str] | None) -> int:
        """Classes the model distinguishes: the named ones (multi-class), else 2.

        Regression reports 2 as well, the value every layer has passed to the module builder.
        """
        return len(class_names or []) if self.is_multiclass else 2

    def n_outputs(self, n_classes: int) -> int:
        """Width of the network's head: one logit per class (multi-class), else one."""
        return int(n_classes) if self.is_multiclass else 1

    def score_shape(self, n_classes: int) -> tuple[int, ...]:
        """Shape of one sample's score in ``predictions.npz``: ``(K,)`` or ``()``."""
        return (int(n_classes),) if self.is_multiclass else ()

    # ---------------------------------------------------------------------------------- loss
    def resolve_loss(self, name: str) -> str:
        """The loss for this task: ``auto`` picks the usual one; a loss that does not fit is an error."""
        if name == "auto":
            return self.losses[0]
        if name not in self.losses:
            raise ValueError(
                f"train.loss: {name!r} does not fit a {self.name} task (use {', '.join(self.losses)} or auto)"
            )
        return name

    # ------------------------------------------------------------------------------ headline
    def headline_text(self, metrics: Mapping[str, Any]) -> str:
        """One line for the console: fold mean ± std, then the test value with its 95 % interval.

        Every command that writes a run (train, baseline, ensemble) prints this same line.
        """
        fmt = "{:.4g}" if self.is_regression else "{:.4f}"
        label, fold = self.headline_label, self.fold_metric
        lo, hi = metrics[f"{self.headline}_ci"]
        return (
            f"fold {label} {fmt.format(metrics[f'{fold}_mean'])} ± {fmt.format(metrics[f'{fold}_std'])}, "
            f"test {label} {fmt.format(metrics[self.headline])} [{fmt.format(lo)}, {fmt.format(hi)}]"
        )


_TASKS: dict[str, Task] = {
    "binary": Task("binary", "sigmoid", ("bce",), "val_auc", "max", "test_auc", "AUC"),
    "multiclass": Task("multiclass", "softmax", ("cross_entropy",), "val_auc", "max", "test_auc", "macro AUC"),
    "regression": Task("regression", "identity", ("mae", "huber", "mse"), "val_mae", "min", "test_mae", "MAE"),
}
#: the task names readers may state
TASK_NAMES: tuple[str, ...] = tuple(_TASKS)


def get_task(task: str | Task) -> Task:
    """The :class:`Task` named ``task`` (a Task passes through); an unknown name is a ValueError."""
    if isinstance(task, Task):
        return task
    try:
        return _TASKS[str(task)]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_NAMES)}") from None
