"""The LightningModule shared by every image model: normalise, predict, BCE-with-logits."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryAUROC

from e2evision.config import TrainConfig
from e2evision.transforms.normalize import ChannelNormalizer


class BinaryClassifier(pl.LightningModule):
    """Binary classification of images with any registered model.

    The normaliser is a sub-module (its statistics are buffers), so a saved state dict holds
    everything needed to reproduce the model's outputs from raw detector images.
    """

    def __init__(self, model: nn.Module, normalizer: ChannelNormalizer, train_cfg: TrainConfig,
                 augment: nn.Module | None = None, geometry: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.normalizer = normalizer
        self.augment = augment if augment is not None else nn.Identity()
        self.geometry = geometry if geometry is not None else nn.Identity()
        self.cfg = train_cfg
        self.val_auc = BinaryAUROC()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N,)`` from raw images."""
        return self.model(self.geometry(self.normalizer(x))).squeeze(-1)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return F.binary_cross_entropy_with_logits(logits.float(), y.float()), logits, y

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, _, y = self._loss((self.augment(x), y))
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=y.shape[0])
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self._loss(batch)
        self.val_auc.update(logits.float(), y.long())
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=y.shape[0])

    def on_validation_epoch_end(self) -> None:
        self.log("val_auc", self.val_auc.compute(), prog_bar=True)
        self.val_auc.reset()

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return torch.sigmoid(self(batch[0]).float())

    def configure_optimizers(self):
        cfg = self.cfg
        skip = getattr(self.model, "no_weight_decay", lambda: set())()
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            # biases, norms and tokens listed by the model are not decayed (timm's convention)
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_cls(groups, lr=cfg.lr)
        if cfg.scheduler == "none":
            return optimizer
        if cfg.scheduler == "step":  # the E2E recipe: halve every `step_size` epochs
            sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=0.5)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = min(cfg.warmup_epochs * steps_per_epoch, total // 2)

        def factor(step: int) -> float:  # linear warm-up, then cosine decay to zero
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
