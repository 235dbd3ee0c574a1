"""Callbacks: best weights, per-epoch history and resumable checkpoints.

All three keep their state in Lightning's checkpoint (``state_dict``/``load_state_dict``), so a
run resumed mid-epoch ends with the same best weights, the same history and the same random
numbers as a run that was never interrupted.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping

log = logging.getLogger(__name__)


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

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best_score": float(self.best_score),
            "best_epoch": int(self.best_epoch),
            "state": self.state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = float(state_dict["best_score"])
        self.best_epoch = int(state_dict["best_epoch"])
        self.state = state_dict["state"]


class History(pl.Callback):
    """One row per epoch: train/val loss and the validation metric (the report's learning curves).

    The epoch-mean training loss is accumulated here, weighted by batch size and summed over the
    DDP processes, and checkpointed with the partial sums: Lightning's own logged mean restarts
    from zero when a run resumes mid-epoch, this one does not. It is also what the run's loggers
    and progress bar get as ``train_loss`` (logged once per epoch, from here). The sum stays on the
    loss's device during the epoch (float64, the same additions in the same order as a Python
    float), so no step waits for the device to report its loss.
    """

    def __init__(self, fold: int, monitor: str = "val_auc") -> None:
        self.fold = fold
        self.monitor = monitor
        self.rows: list[dict[str, Any]] = []
        self._loss_sum = 0.0
        self._count = 0
        self._device_sum: torch.Tensor | None = None  # the running sum while an epoch runs

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._count, self._device_sum = 0.0, 0, None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        n = int(batch[-1].shape[0])
        value = loss.detach()
        if value.device.type == "mps":  # no float64 there: add on the host
            self._loss_sum = self.loss_sum + float(value.float()) * n
            self._device_sum = None
        else:
            if self._device_sum is None:
                self._device_sum = torch.tensor(self._loss_sum, dtype=torch.float64, device=value.device)
            self._device_sum += value.float().double() * n
        self._count += n

    @property
    def loss_sum(self) -> float:
        """The epoch's summed training loss so far (one device-to-host copy)."""
        if self._device_sum is not None:
            self._loss_sum = float(self._device_sum)
        return self._loss_sum

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook, so the validation numbers
        # belong to the same epoch as the training loss.
        total = torch.tensor([self.loss_sum, float(self._count)], dtype=torch.float64, device=pl_module.device)
        if trainer.world_size > 1:
            total = trainer.strategy.reduce(total, reduce_op="sum")
        m = trainer.callback_metrics
        row: dict[str, Any] = {"fold": self.fold, "epoch": int(trainer.current_epoch)}
        if total[1] > 0:
            row["train_loss"] = float(total[0] / total[1])
            # already summed over the processes: the same value on each, sync_dist only keeps
            # Lightning from warning about an unsynchronised epoch-level value
            pl_module.log("train_loss", row["train_loss"], on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        for key in ("val_loss", self.monitor):
            if key in m:
                row[key] = float(m[key])
        self.rows.append(copy.deepcopy(row))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": copy.deepcopy(self.rows), "loss_sum": self.loss_sum, "count": self._count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = copy.deepcopy(state_dict["rows"])
        self._loss_sum = float(state_dict["loss_sum"])
        self._count = int(state_dict["count"])
        self._device_sum = None


class LoaderWait(pl.Callback):
    """Per epoch, the share of the training loop's time spent waiting for the next batch.

    The wait is what :class:`~e2evision.training.data.ResumableLoader` timed inside ``next()``
    (reading, decoding, a worker's batch arriving); the step time runs from the epoch's start to
    its last ``on_train_batch_end``, so validation and checkpoints are not in it. Two clock reads
    per step: cheap enough to be always on. Each epoch adds a row to :attr:`rows` (checkpointed,
    so a resumed run keeps the epochs before the interruption), logs ``loader_wait_fraction`` to
    the run's loggers and says it in the Python log. Not part of the history rows: a timing, it
    differs between otherwise identical runs.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._start: float | None = None
        self._last = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = None  # a mid-epoch resume starts timing at its first batch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._last = time.perf_counter()
        if self._start is None:  # resumed mid-epoch: no epoch start was seen
            self._start = self._last

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaders = trainer.train_dataloader
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        timed = [dl for dl in loaders if hasattr(dl, "wait_s")]
        if not timed or self._start is None:
            return
        wait = sum(float(dl.wait_s) for dl in timed)
        total = max(self._last - self._start, 1e-12)
        row = {
            "epoch": int(trainer.current_epoch),
            "steps": int(sum(dl.waits for dl in timed)),
            "loader_wait_s": round(wait, 6),
            "train_s": round(total, 6),
            "loader_wait_fraction": round(min(1.0, wait / total), 6),
        }
        self.rows.append(row)
        pl_module.log(
            "loader_wait_fraction", row["loader_wait_fraction"], on_step=False, on_epoch=True, sync_dist=True
        )  # the mean over the processes
        log.info(
            "epoch %d: waited for data %.1f %% of %.1f s of training steps",
            row["epoch"],
            100 * row["loader_wait_fraction"],
            total,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"rows": copy.deepcopy(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = copy.deepcopy(state_dict["rows"])


def rng_state() -> dict[str, Any]:
    """Every generator a training step may draw from, as tensors and plain types.

    No NumPy arrays: the checkpoint must load with ``torch.load(weights_only=True)``.
    """
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(obj: Any) -> Any:
    return tuple(_as_tuple(o) for o in obj) if isinstance(obj, (list, tuple)) else obj


class RunCheckpoint(Checkpoint):
    """Write ``dirpath/last.ckpt`` every ``every_n_steps`` optimizer steps and at every epoch end.

    * Atomic: the file is written beside the target and renamed over it, so a kill during a save
      leaves the previous checkpoint intact.
    * Complete: Lightning stores model, optimizer, scheduler, loop progress, the training
      loader's position (:class:`~e2evision.training.data.ResumableLoader`) and the callbacks'
      states; this callback adds the random-number generators and a pending early stop.
    * The epoch-end save happens in ``on_train_epoch_end``, after the history row, the best
      weights and the early-stopping decision of the epoch (Lightning runs checkpoint callbacks
      last). A step checkpoint on an epoch's last batch is skipped: the epoch-end one follows.
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str | os.PathLike[str], every_n_steps: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self._trainer: pl.Trainer | None = None
        self._pending: dict[str, Any] | None = None
        self._loader_states: list[dict[str, Any]] = []
        self.saves = 0

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILENAME

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        fit = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        self._loader_states = list(fit.get("combined_loader", []))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning restores a stateful loader's position only when it builds the loader after
        # the checkpoint is loaded; configure_optimizers asking for estimated_stepping_batches
        # builds it before, so the position is set here. No batch has been drawn yet: the
        # loader's iterator is a generator that starts at the first next().
        if self._loader_states:
            loaders = trainer.train_dataloader
            loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
            stateful = [dl for dl in loaders if hasattr(dl, "load_state_dict")]
            if len(stateful) != len(self._loader_states):
                raise RuntimeError(
                    f"the checkpoint holds {len(self._loader_states)} training-loader states for "
                    f"{len(stateful)} resumable loaders"
                )
            for dl, state in zip(stateful, self._loader_states):
                dl.load_state_dict(state)
            self._loader_states = []
        if self._pending is not None:  # resuming: continue the random streams where they stopped
            set_rng_state(self._pending["rng"])
            if self._pending.get("should_stop"):
                trainer.should_stop = True
            self._pending = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n = self.every_n_steps
        if not n or trainer.global_step == 0 or trainer.global_step % n:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        """Save on every process (strategies may shard), publish on rank 0 by an atomic rename."""
        partial = self.dirpath / f".{self.FILENAME}.partial"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(partial, weights_only=False)
        if trainer.is_global_zero:
            with open(partial, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(partial, self.path)
        trainer.strategy.barrier("RunCheckpoint.save")
        self.saves += 1

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        return {"rng": rng_state(), "should_stop": bool(trainer.should_stop) if trainer is not None else False}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)


class StagedEarlyStopping(EarlyStopping):
    """Lightning's early stopping, counting only from epoch ``start`` (the last training stage).

    With staged training the validation metric may stall while most of the network is frozen;
    stopping then would end the run before the stage that trains everything.
    """

    def __init__(self, start_epoch: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_epoch = int(start_epoch)

    def _should_skip_check(self, trainer: pl.Trainer) -> bool:
        return trainer.current_epoch < self.start_epoch or super()._should_skip_check(trainer)
