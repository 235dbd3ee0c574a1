"""The LightningModule shared by every image model and task: normalise, predict, loss, metrics.

One module serves the three tasks a reader can declare (``ImageDataset.task``):

* ``binary`` — one logit, BCE-with-logits, validation ROC-AUC; scores are sigmoid probabilities;
* ``multiclass`` — K logits, cross-entropy, validation macro one-vs-rest AUC; scores are softmax
  probabilities;
* ``regression`` — one output, MAE / Huber / MSE on the scaled target ``(y − shift)/scale``,
  validation MAE in target units; ``forward`` returns predictions in target units, so a saved or
  exported model needs no separate un-scaling step.

The state-dict keys are ``model.*``, ``normalizer.*`` and ``geometry.*`` (plus ``target_shift`` and
``target_scale`` for regression): the safetensors files of every fold load into this class.
``BinaryClassifier`` is the same class under its first name.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric
from torchmetrics.classification import BinaryAUROC, MulticlassAUROC

from e2evision.config import StageConfig, TrainConfig
from e2evision.datasets.task import TASK_NAMES, get_task
from e2evision.transforms.augment import TestTimeFlips
from e2evision.transforms.normalize import ChannelNormalizer

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = TASK_NAMES


def resolve_loss(name: str, task: str) -> str:
    """The loss for ``task``: ``auto`` picks the usual one; a loss that does not fit is an error."""
    return get_task(task).resolve_loss(name)


#: a batch: ``(images, labels)``, or ``(images, scalars, labels)`` for models with scalar inputs
Batch = tuple[torch.Tensor, ...]


def split_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(x, scalars or None, y)`` of a 2- or 3-tensor batch."""
    if len(batch) == 3:
        return batch[0], batch[1], batch[2]
    if len(batch) == 2:
        return batch[0], None, batch[1]
    raise ValueError(f"a batch holds (images, labels) or (images, scalars, labels), got {len(batch)} tensors")


def monitor_for(task: str) -> tuple[str, str]:
    """The validation metric that selects the best epoch and drives early stopping."""
    t = get_task(task)
    return t.monitor, t.monitor_mode


class StagePlan:
    """Which parameters train, and at which learning-rate factor, in every stage.

    Built once from the config so that a pattern that matches nothing is an error before any
    training starts, not a silently frozen (or unfrozen) network.
    """

    def __init__(self, model: nn.Module, stages: list[StageConfig]) -> None:
        self.stages = list(stages)
        groups: dict[int, str] = {}
        if hasattr(model, "parameter_groups"):
            for gname, params in model.parameter_groups().items():
                for p in params:
                    groups[id(p)] = gname
        self.names = [n for n, _ in model.named_parameters()]
        self._group = {n: groups.get(id(p), "") for n, p in model.named_parameters()}
        for i, st in enumerate(self.stages):
            for field, patterns in (("train", st.train), ("lr_scale", list(st.lr_scale))):
                for pat in patterns:
                    if not any(self._match(n, pat) for n in self.names):
                        known = sorted({g for g in self._group.values() if g})
                        hint = f"groups: {', '.join(known)}; " if known else ""
                        raise ValueError(
                            f"train.stages[{i}].{field}: pattern {pat!r} matches no parameter of the model "
                            f"({hint}parameters look like {', '.join(self.names[:3])}, ...)"
                        )

    def _match(self, name: str, pattern: str) -> bool:
        group = self._group.get(name, "")
        return fnmatch.fnmatchcase(name, pattern) or bool(group and fnmatch.fnmatchcase(group, pattern))

    def stage_at(self, epoch: int) -> int:
        """Index of the stage that ``epoch`` belongs to (the last stage runs to the end)."""
        end = 0
        for i, st in enumerate(self.stages[:-1]):
            end += st.epochs
            if epoch < end:
                return i
        return max(0, len(self.stages) - 1)

    def trainable(self, name: str, stage: int) -> bool:
        return not self.stages or any(self._match(name, p) for p in self.stages[stage].train)

    def scales(self, name: str) -> tuple[float, ...]:
        """The learning-rate factor of parameter ``name`` in each stage (1 without stages)."""
        out = []
        for st in self.stages:
            out.append(next((f for pat, f in st.lr_scale.items() if self._match(name, pat)), 1.0))
        return tuple(out) or (1.0,)


class ImageModule(pl.LightningModule):
    """Classification or regression of images with any registered model.

    The normaliser is a sub-module (its statistics are buffers), so a saved state dict holds
    everything needed to reproduce the model's outputs from raw detector images.
    """

    def __init__(
        self,
        model: nn.Module,
        normalizer: ChannelNormalizer,
        train_cfg: TrainConfig,
        augment: nn.Module | None = None,
        geometry: nn.Module | None = None,
        *,
        task: Task = "binary",
        num_classes: int = 2,
        target_shift: float = 0.0,
        target_scale: float = 1.0,
        scalar_normalizer: ChannelNormalizer | None = None,
        test_time: TestTimeFlips | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        # eval-mode averaging over the training flips (augment.test_time); no state of its own
        self.test_time = test_time
        self.normalizer = normalizer
        # scalar inputs (pt, ieta, lens features, ...): their own normaliser, fitted on the training
        # folds like the image's and saved with the weights; None for image-only models
        self.scalar_normalizer = scalar_normalizer
        self.num_scalars = int(scalar_normalizer.centre.numel()) if scalar_normalizer is not None else 0
        model_scalars = int(getattr(getattr(model, "head", None), "num_scalars", self.num_scalars))
        if model_scalars != self.num_scalars:
            raise ValueError(
                f"the model takes {model_scalars} scalar inputs but data.scalars lists {self.num_scalars}: "
                "name the scalars in data.scalars (it sets the model's num_scalars)"
            )
        self.augment = augment if augment is not None else nn.Identity()
        self.geometry = geometry if geometry is not None else nn.Identity()
        self.cfg = train_cfg
        self.task = task
        self.loss_name = resolve_loss(train_cfg.loss, task)
        self.monitor, self.monitor_mode = monitor_for(task)
        self.num_classes = int(num_classes)
        if task == "regression":
            if not target_scale > 0:
                raise ValueError(f"target_scale must be positive, got {target_scale}")
            self.register_buffer("target_shift", torch.tensor(float(target_shift)))
            self.register_buffer("target_scale", torch.tensor(float(target_scale)))
            self.val_mae = MeanAbsoluteError()
        elif task == "multiclass":
            if self.num_classes < 2:
                raise ValueError(f"a multiclass task needs at least 2 classes, got {num_classes}")
            self.val_auc = MulticlassAUROC(num_classes=self.num_classes, average="macro")
        else:
            self.val_auc = BinaryAUROC()
        self.val_loss_mean = MeanMetric()
        self.stage_plan = StagePlan(model, list(train_cfg.stages))
        self.current_stage = -1
        # set by training.performance.apply_performance: hand the model NHWC images
        self.channels_last = False

    # ------------------------------------------------------------------------------ prediction
    def raw(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        """Network output before any link function: logits, or the scaled regression target.

        ``scalars`` ``(N, S)`` are the raw scalar inputs of a model built with ``data.scalars``.
        """
        image = self.normalizer(x)
        n, tta = image.shape[0], self.test_time is not None and not self.training
        if tta:
            image = self.test_time.views(image)
            scalars = None if scalars is None else scalars.repeat(self.test_time.n_views, 1)
        image = self.geometry(image)
        if self.channels_last and image.ndim == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        if self.scalar_normalizer is None:
            if scalars is not None and scalars.numel():
                raise ValueError("this model takes no scalar inputs (data.scalars is empty)")
            out = self.model(image)
        else:
            if scalars is None or scalars.ndim != 2 or scalars.shape[1] != self.num_scalars:
                got = "none" if scalars is None else tuple(scalars.shape)
                raise ValueError(f"this model takes {self.num_scalars} scalar inputs per sample, got {got}")
            out = self.model(image, self.scalar_normalizer(scalars.float()))
        if tta:
            out = self.test_time.average(out, n)
        return out if self.task == "multiclass" else out.squeeze(-1)

    def forward(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(N,)`` (binary), ``(N, K)`` (multiclass) or predictions in target units (regression)."""
        out = self.raw(x, scalars)
        if self.task == "regression":
            return out.float() * self.target_scale + self.target_shift
        return out

    def scores(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        """What the metrics use: probabilities (classification) or predictions in target units."""
        out = self.raw(x, scalars).float()
        if self.task == "binary":
            return torch.sigmoid(out)
        if self.task == "multiclass":
            return torch.softmax(out, dim=-1)
        return out * self.target_scale + self.target_shift

    def _loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raw = raw.float()
        if self.loss_name == "bce":
            return F.binary_cross_entropy_with_logits(raw, y.float())
        if self.loss_name == "cross_entropy":
            return F.cross_entropy(raw, y.long())
        target = (y.float() - self.target_shift) / self.target_scale
        if self.loss_name == "mae":
            return F.l1_loss(raw, target)
        if self.loss_name == "huber":
            return F.huber_loss(raw, target, delta=self.cfg.huber_delta)
        return F.mse_loss(raw, target)

    # -------------------------------------------------------------------------------- training
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, s, y = split_batch(batch)
        # the epoch's mean training loss is accumulated and logged by callbacks.History: a
        # self.log here cost ~0.3 ms of Python per step (Lightning moves its result object to the
        # loss's device on every call) and its mean restarted from zero after a mid-epoch resume
        return self._loss(self.raw(self.augment(x), s), y)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, s, y = split_batch(batch)
        raw = self.raw(x, s)
        self.val_loss_mean.update(self._loss(raw, y).detach(), weight=y.shape[0])
        raw = raw.float()
        if self.task == "binary":
            # probabilities, always: torchmetrics applies a sigmoid only to batches with values
            # outside [0, 1], so raw logits mixed scales across batches and the AUC depended on
            # how the batches fell (under DDP, on the process count); float64 keeps confident
            # logits apart instead of saturating at 1.0
            self.val_auc.update(torch.sigmoid(raw.double()), y.long())
        elif self.task == "multiclass":
            self.val_auc.update(torch.softmax(raw, dim=-1), y.long())
        else:
            self.val_mae.update(raw * self.target_scale + self.target_shift, y.float())

    def on_validation_epoch_end(self) -> None:
        # torchmetrics gathers the shards of every process before computing: exact under DDP
        self.log("val_loss", self.val_loss_mean.compute(), prog_bar=True, sync_dist=True)
        self.val_loss_mean.reset()
        metric = self.val_mae if self.task == "regression" else self.val_auc
        self.log(self.monitor, metric.compute(), prog_bar=True, sync_dist=True)
        metric.reset()

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, s, _ = split_batch(batch)
        return self.scores(x, s)

    # --------------------------------------------------------------------------------- stages
    def on_train_start(self) -> None:
        # also after a mid-epoch resume, where on_train_epoch_start is not called
        self.apply_stage(self.current_epoch)

    def on_train_epoch_start(self) -> None:
        self.apply_stage(self.current_epoch)

    def apply_stage(self, epoch: int) -> None:
        """Freeze and unfreeze parameters for the stage of ``epoch`` (no-op without stages)."""
        if not self.stage_plan.stages:
            return
        stage = self.stage_plan.stage_at(epoch)
        if stage == self.current_stage:
            return
        for name, p in self.model.named_parameters():
            p.requires_grad_(self.stage_plan.trainable(name, stage))
        self.current_stage = stage

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.cfg
        skip = getattr(self.model, "no_weight_decay", lambda: set())()
        plan = self.stage_plan
        groups: dict[tuple[bool, tuple[float, ...]], list[nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            # biases, norms and tokens listed by the model are not decayed (timm's convention);
            # every parameter is in the optimizer: frozen ones get no gradient and are skipped
            decay = not (p.ndim <= 1 or name in skip)
            groups.setdefault((decay, plan.scales(name)), []).append(p)
        param_groups = [
            {"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": cfg.lr}
            for (decay, _), ps in groups.items()
        ]
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_cls(param_groups, lr=cfg.lr)

        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = min(cfg.warmup_epochs * per_epoch, total // 2)

        def base(step: int) -> float:
            if cfg.scheduler == "step":  # the E2E recipe: halve every `step_size` epochs
                return 0.5 ** ((step // per_epoch) // cfg.step_size)
            if cfg.scheduler == "none":
                return 1.0
            if step < warmup:  # linear warm-up, then cosine decay to zero
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        def factor(scales: tuple[float, ...]) -> Callable[[int], float]:
            # a pure function of the step: resuming restores the schedule from the step count
            return lambda step: base(step) * scales[min(plan.stage_at(step // per_epoch), len(scales) - 1)]

        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(s) for (_, s) in groups])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


#: The module's first name, kept because saved-model loading code imports it.
BinaryClassifier = ImageModule
