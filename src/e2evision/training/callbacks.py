"""Callbacks: remember the best weights in memory and record a per-epoch history."""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning.pytorch as pl
import torch


class BestWeights(pl.Callback):
    """Keep a CPU copy of the weights at the best ``monitor`` value seen so far.

    Avoids re-reading a pickled Lightning checkpoint to get the best model back: the best state
    is written out as safetensors by the runner.
    """

    def __init__(self, monitor: str = "val_auc", mode: str = "max") -> None:
        self.monitor = monitor
        self.mode = mode
        self.best_score = -math.inf if mode == "max" else math.inf
        self.best_epoch = -1
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        score = float(value)
        better = score > self.best_score if self.mode == "max" else score < self.best_score
        if better or self.state is None:
            self.best_score = score
            self.best_epoch = trainer.current_epoch
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}


class History(pl.Callback):
    """One row per epoch: train/val loss and val AUC (what the report's learning curves plot)."""

    def __init__(self, fold: int) -> None:
        self.fold = fold
        self.rows: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook and logs the epoch-mean train
        # loss just before it, so here both belong to the same epoch (at validation end the
        # train loss would still be the previous epoch's).
        m = trainer.callback_metrics
        row = {"fold": self.fold, "epoch": int(trainer.current_epoch)}
        for key in ("train_loss", "val_loss", "val_auc"):
            if key in m:
                row[key] = float(m[key])
        self.rows.append(copy.deepcopy(row))
