"""K-fold cross-validation of one config, from files on disk to a self-describing run directory.

The run directory's layout and files are those of :mod:`e2evision.rundir` (config.yaml, run.json,
metrics.json, predictions.npz, saliency.npz, fold_K/ with model.safetensors, normalizer.json,
fold.json, logs/ and checkpoints/last.ckpt + meta.json).

A fold whose ``fold.json`` exists is reused when the same command runs again on the same data (its
recorded ``data_fingerprint``; see :mod:`.preflight`). A fold that was
interrupted continues from ``checkpoints/last.ckpt`` with ``resume=True`` (``--resume``): model,
optimizer, scheduler, random generators, callbacks and the position inside the epoch's batch
order are restored, so the result equals that of an uninterrupted run.

Under DDP every process runs this function; all of them train, only rank 0 writes files and
evaluates.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import hashlib
import json
import logging
import os
import platform
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2evision.config import ExperimentConfig
from e2evision.datasets.experiment import model_scalars, open_experiment_data
from e2evision.datasets.feature_table import scalar_columns
from e2evision.datasets.split import fold_splits, split_indices
from e2evision.datasets.task import Task, get_task
from e2evision.metrics import task_metrics
from e2evision.models import count_parameters
from e2evision.rundir import (
    CHECKPOINT_DIR,
    CHECKPOINT_META_FILE,
    CONFIG_FILE,
    SALIENCY_FILE,
    RunDirError,
    config_diff,
    config_hash,
    fold_dir,
    read_finished_fold,
    write_checkpoint_meta,
    write_config,
    write_fold,
    write_metrics,
    write_predictions,
    write_run_info,
)
from e2evision.training.build import build_module, init_from_run
from e2evision.training.callbacks import (
    BestWeights,
    History,
    LoaderWait,
    RunCheckpoint,
    StagedEarlyStopping,
)
from e2evision.training.data import FoldData, SampleSource, make_loader
from e2evision.training.health import diagnose
from e2evision.training.loggers import build_loggers, check_loggers
from e2evision.training.module import ImageModule, split_batch
from e2evision.training.performance import Performance, apply_performance, resolve_performance
from e2evision.training.preflight import (
    check_finished_folds,
    check_training_labels,
    fold_fingerprint,
)
from e2evision.training.saliency import pick_examples, write_saliency
from e2evision.utils import data_fingerprint, package_versions
from e2evision.utils.seeding import seed_everything

__all__ = ["RunDirError", "expected_processes", "predict", "process_rank", "run_experiment", "split_indices"]

log = logging.getLogger(__name__)


def process_rank() -> int:
    """Global rank of this process as the launcher set it (0 when not distributed)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def expected_processes(cfg: ExperimentConfig) -> int:
    """How many processes Lightning will start for ``train.devices`` × ``train.num_nodes``."""
    t = cfg.train
    devices: Any = t.devices
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            devices = "auto"
        elif "," in text:  # a list of device indices, e.g. "0,1" or "0,"
            devices = len([p for p in text.split(",") if p.strip()])
        else:
            devices = int(text) if text.isdigit() else 1
    if devices in ("auto", -1):
        gpu = t.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        devices = torch.cuda.device_count() if gpu else 1
    n = int(devices) * t.num_nodes
    return max(n, int(os.environ.get("WORLD_SIZE", "1") or 1))


def _strategy(cfg: ExperimentConfig) -> Any:
    t = cfg.train
    if "spawn" in t.strategy or "fork" in t.strategy:
        raise ValueError(
            f"train.strategy: {t.strategy!r} trains in child processes whose best weights and history "
            "never come back to this one; use 'ddp' (or 'auto'), which runs this command once per process"
        )
    if t.strategy != "auto" or expected_processes(cfg) <= 1:
        return t.strategy
    from lightning.pytorch.strategies import DDPStrategy

    # stages freeze parameters after DDP has wrapped the model: DDP must expect unused ones
    return DDPStrategy(find_unused_parameters=bool(t.stages))


def _trainer(cfg: ExperimentConfig, fold_path: Path, callbacks: list, loggers: list, precision: str) -> Any:
    import lightning.pytorch as pl

    t = cfg.train
    cbs = list(callbacks)
    if t.early_stopping_patience:
        monitor, mode = next((c.monitor, c.mode) for c in cbs if isinstance(c, BestWeights))
        last_stage = sum(st.epochs for st in t.stages[:-1])  # 0 without stages
        cbs.append(StagedEarlyStopping(last_stage, monitor=monitor, mode=mode, patience=t.early_stopping_patience))
    plugins = []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        # our own checkpoints and --resume continue a run; Lightning's SIGUSR1 requeue would write
        # a second kind of checkpoint (and reload it unasked into whichever fold starts next)
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return pl.Trainer(
        default_root_dir=fold_path,
        plugins=plugins or None,
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=_strategy(cfg),
        precision=precision,
        deterministic="warn" if t.deterministic else False,
        callbacks=cbs,
        logger=loggers,
        enable_checkpointing=True,  # RunCheckpoint is the checkpoint callback
        use_distributed_sampler=False,  # EpochBatchSampler splits the global batches itself
        enable_model_summary=False,
        enable_progress_bar=t.progress,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )


def _predict_device(cfg: ExperimentConfig) -> torch.device:
    use_gpu = torch.cuda.is_available() and cfg.train.accelerator not in ("cpu",)
    return torch.device("cuda" if use_gpu else "cpu")


@torch.no_grad()
def predict(
    module: ImageModule, dataset: Any, batch_size: int = 512, device: torch.device | str | None = None
) -> np.ndarray:
    """Scores for every sample of ``dataset`` in order (eval mode, no autograd): probabilities for
    classification (``(N,)`` or ``(N, K)``), predictions in target units for regression."""
    module.eval()
    device = torch.device(device) if device is not None else next(module.parameters()).device
    module.to(device)
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
    out = []
    for batch in loader:
        x, s, _ = split_batch(batch)
        out.append(module.scores(x.to(device), None if s is None else s.to(device)).float().cpu())
    module.to("cpu")
    return torch.cat(out).numpy().astype(np.float64)


# ------------------------------------------------------------------------------------- contexts
@dataclass
class RunContext:
    """What every fold of one run shares: the config, the data, its split and the output place."""

    cfg: ExperimentConfig
    out: Path
    main: bool  # rank 0: the process that writes files and evaluates
    resume: bool
    cfg_hash: str
    reader: Any
    task: Task
    class_names: list[str]
    labels: np.ndarray  # every sample's label
    trainval: np.ndarray  # sample indices of the train+validation part
    test: np.ndarray  # sample indices of the test split
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train rows, validation rows) into trainval
    data_fp: str
    fold_fp: str
    input_columns: list[int]
    perf: Performance | None = None
    source: SampleSource | None = None

    @property
    def n_classes(self) -> int:
        return self.task.n_classes(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.reader.image_shape)  # type: ignore[return-value]

    @property
    def y_tv(self) -> np.ndarray:
        return self.labels[self.trainval]

    @property
    def y_test(self) -> np.ndarray:
        return self.labels[self.test]


@dataclass
class FoldContext:
    """One fold to fit: its module, its rows and the run it belongs to."""

    run: RunContext
    k: int
    module: ImageModule
    tr: np.ndarray
    va: np.ndarray
    extra_callbacks: list[Any] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return fold_dir(self.run.out, self.k)


@dataclass
class FoldResults:
    """Out-of-fold and test scores and the training record, gathered fold by fold (rank 0)."""

    oof: np.ndarray
    oof_fold: np.ndarray
    test_fold_scores: np.ndarray
    epochs: list[int] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_folds: list[int] = field(default_factory=list)
    loader_wait: list[list[float]] = field(default_factory=list)  # per fold, per epoch: a timing
    train_time: float = 0.0
    n_params: int = 0
    first_module: ImageModule | None = None
    monitor: str = ""

    @classmethod
    def empty(cls, run: RunContext) -> FoldResults:
        shape = run.task.score_shape(run.n_classes)
        return cls(
            oof=np.full((run.trainval.size, *shape), np.nan, dtype=np.float64),
            oof_fold=np.full(run.trainval.size, -1, dtype=np.int64),
            test_fold_scores=np.zeros((run.cfg.train.folds, run.test.size, *shape), dtype=np.float64),
            monitor=run.task.monitor,
        )

    def add(
        self, k: int, va: np.ndarray, module: ImageModule, done: dict[str, Any], oof: np.ndarray, test: np.ndarray
    ) -> None:
        """Record fold ``k``: its scores on its validation rows and on the test split, its history."""
        if self.first_module is None:
            self.first_module = module
        self.oof[va] = oof
        self.oof_fold[va] = k
        self.test_fold_scores[k] = test
        self.epochs.append(int(done["epochs"]))
        self.best_epochs.append(int(done["best_epoch"]))
        self.history.extend(done["history"])
        self.loader_wait.append([r["loader_wait_fraction"] for r in done.get("loader_wait", [])])
        self.train_time += float(done["fit_seconds"])
        if done.get("resumed_from_step") is not None:
            self.resumed_folds.append(k)


# ---------------------------------------------------------------------------------- the run
def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike[str],
    *,
    command: str | None = None,
    resume: bool = False,
    extra_callbacks: Callable[[int], list[Any]] | None = None,
) -> dict[str, Any]:
    """Cross-validate ``cfg`` and write the run directory; returns the metrics dictionary.

    ``resume`` continues folds interrupted mid-training from their last checkpoint; without it
    such a fold is an error (a finished fold is reused either way). ``extra_callbacks(fold)``
    adds Lightning callbacks to a fold's trainer (hyper-parameter search prunes through it).
    Processes other than rank 0 of a DDP job train but write nothing and return ``{}``.
    """
    try:
        return _run_experiment(cfg, Path(out_dir), command, resume, extra_callbacks)
    finally:
        # Lightning's trainer, the module and the data module refer to one another, so the run's
        # in-memory images outlived it until Python's next full collection: a process that runs
        # experiments one after another (learning curves, tuning) grew by the data's size per
        # run (1.45 GB for 8,000 jets) and was once killed for memory (docs/benchmarks.md).
        # Collected here, after the run's own frame is gone.
        gc.collect()


def _run_experiment(
    cfg: ExperimentConfig,
    out: Path,
    command: str | None,
    resume: bool,
    extra_callbacks: Callable[[int], list[Any]] | None,
) -> dict[str, Any]:
    with _quiet_lightning():
        started, t0 = _now(), time.perf_counter()
        run = _prepare_run(cfg, out, resume)
        run_info = _run_info(run, started, command)
        if run.main:
            write_run_info(run.out, run_info)
        results = _cross_validate(run, extra_callbacks)
        if not run.main:
            return {}
        return _finish_run(run, results, run_info, t0)


def _prepare_run(cfg: ExperimentConfig, out: Path, resume: bool) -> RunContext:
    """Every check that can fail before the run directory is touched, then config.yaml.

    The data, its split and the finished folds already in ``out`` must belong to this run before
    its provenance is written.
    """
    if not cfg.data.paths:
        raise ValueError("no data: set data.paths in the config or pass --data")
    check_loggers(list(cfg.train.loggers))
    cfg_hash = config_hash(cfg)
    if resume:
        _check_resumable(out, cfg)
    seed_everything(cfg.seed, deterministic=cfg.train.deterministic)
    reader = open_experiment_data(cfg)
    input_columns = scalar_columns(reader, cfg.data.scalars)
    task = get_task(reader.task)
    class_names = list(reader.class_names)
    labels = reader.labels()
    n_classes = task.n_classes(class_names)
    check_training_labels(labels, task.name, cfg.train.folds, n_classes, ", ".join(map(str, reader.paths)))
    trainval, test = split_indices(labels, cfg, task.name)
    data_fp = data_fingerprint(reader.paths)
    fold_fp = fold_fingerprint(data_fp, _features_record(reader))
    check_training_labels(labels[trainval], task.name, cfg.train.folds, n_classes, "the training part")
    folds = fold_splits(labels[trainval], task.name, cfg.train.folds, cfg.seed)
    check_finished_folds(out, [va for _, va in folds], cfg_hash, fold_fp)
    run = RunContext(
        cfg=cfg,
        out=out,
        main=process_rank() == 0,
        resume=resume,
        cfg_hash=cfg_hash,
        reader=reader,
        task=task,
        class_names=class_names,
        labels=labels,
        trainval=trainval,
        test=test,
        folds=folds,
        data_fp=data_fp,
        fold_fp=fold_fp,
        input_columns=list(input_columns),
    )
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, cfg.to_yaml())
    probe = build_module(cfg, run.image_shape, task.name, n_classes)
    run.perf = resolve_performance(cfg.train, probe, run.image_shape)  # type: ignore[arg-type]
    return run


def _run_info(run: RunContext, started: str, command: str | None) -> dict[str, Any]:
    """run.json's provenance: seed, versions, the data and its fingerprint, device, processes."""
    cfg, reader = run.cfg, run.reader
    assert run.perf is not None
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "versions": package_versions(),
        "data": {
            "format": reader.format,
            "paths": [str(p) for p in reader.paths],
            "fingerprint": run.data_fp,
            "n_samples": reader.n_samples,
            "image_shape": list(reader.image_shape),
            "channels": reader.channel_names,
            "task": run.task.name,
            "class_names": run.class_names,
            "scalars": list(reader.scalar_names),
            "model_scalars": list(cfg.data.scalars),
            "features": _features_record(reader),
            "n_trainval": int(run.trainval.size),
            "n_test": int(run.test.size),
        },
        "started_at": started,
        "device": _device_name(cfg),
        # what each fold's model runs with (precision, channels-last, compile, TF32); see training.performance
        "performance": run.perf.to_dict(),
        "processes": expected_processes(cfg),
        "host": socket.gethostname(),
        "command": command or " ".join(sys.argv),
        "resumed": bool(run.resume),
    }


def _cross_validate(run: RunContext, extra_callbacks: Callable[[int], list[Any]] | None) -> FoldResults:
    """Fit (or reuse) every fold; rank 0 scores each on its validation rows and the test split."""
    cfg = run.cfg
    selected = np.concatenate([run.trainval, run.test])
    run.source = SampleSource(
        run.reader,
        selected,
        cfg.data.in_memory_limit_gb,
        progress=cfg.train.progress and run.main,
        scalar_columns=run.input_columns,
    )
    test_set = run.source.subset(np.arange(run.trainval.size, selected.size))
    device = _predict_device(cfg)
    results = FoldResults.empty(run)
    for k, (tr, va) in enumerate(run.folds):
        module, done = _fit_or_reuse_fold(run, k, tr, va, extra_callbacks)
        results.n_params = count_parameters(module.model)
        if not run.main:
            continue
        results.monitor = module.monitor
        results.add(
            k,
            va,
            module,
            done,
            predict(module, run.source.subset(va), device=device),
            predict(module, test_set, device=device),
        )
    return results


def _fit_or_reuse_fold(
    run: RunContext, k: int, tr: np.ndarray, va: np.ndarray, extra_callbacks: Callable[[int], list[Any]] | None
) -> tuple[ImageModule, dict[str, Any]]:
    """Fold ``k``'s module with its best weights: reused from an earlier run, or trained now."""
    cfg, path = run.cfg, fold_dir(run.out, k)
    assert run.perf is not None
    if run.main:
        path.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + k, deterministic=cfg.train.deterministic)
    shift, scale = _target_scaling(cfg, run.y_tv[tr]) if run.task.is_regression else (0.0, 1.0)
    module = build_module(cfg, run.image_shape, run.task.name, run.n_classes, shift, scale)
    done = _load_finished_fold(path, module)
    if done is not None and run.perf.channels_last:  # the memory format of a freshly trained fold
        module.model.to(memory_format=torch.channels_last)
        module.channels_last = True
    if done is None:
        if cfg.model.init_from:
            log.info(
                "fold %d: initialised with %s", k, init_from_run(module.model, cfg.model.init_from, cfg.model.init_fold)
            )
        extra = list(extra_callbacks(k)) if extra_callbacks is not None else []
        done = _train_fold(FoldContext(run, k, module, tr, va, extra))
    elif done.get("config_sha256") != run.cfg_hash or done["val_rows"] != va.tolist():
        raise RunDirError(
            f"{path}: a finished fold from a different config or data split is in the way; "
            "use a new output directory or delete the old one"
        )
    return module, done


def _finish_run(run: RunContext, results: FoldResults, run_info: dict[str, Any], t0: float) -> dict[str, Any]:
    """Evaluate the fold ensemble on the test split and write predictions, saliency and metrics."""
    cfg, reader, task = run.cfg, run.reader, run.task
    y_tv, y_test = run.y_tv, run.y_test
    test_score = results.test_fold_scores.mean(axis=0)
    not_learning = min(cfg.train.not_learning_epochs, cfg.train.max_epochs) if cfg.train.not_learning_epochs else None
    health = diagnose(task.name, results.history, results.oof, results.oof_fold, y_tv, not_learning)
    for msg in health:
        log.warning("%s: %s", cfg.name, msg)
    scalar_names = list(reader.scalar_names)
    test_scalars = reader.read_scalars(run.test) if scalar_names else np.zeros((run.test.size, 0), np.float32)
    metrics: dict[str, Any] = {
        "name": cfg.name,
        "model": cfg.model.name,
        "task": task.name,
        "class_names": run.class_names,
        "monitor": results.monitor,
        "n_params": int(results.n_params),
        **task_metrics(
            task,
            y_tv,
            results.oof,
            results.oof_fold,
            y_test,
            test_score,
            seed=cfg.seed,
            class_names=run.class_names,
            scalars=dict(zip(scalar_names, np.asarray(test_scalars, np.float64).T)),
        ),
        "train_time_s": results.train_time,
        "wall_time_s": time.perf_counter() - t0,
        "n_trainval": int(run.trainval.size),
        "n_test": int(run.test.size),
        "epochs": results.epochs,
        "best_epochs": results.best_epochs,
        "resumed_folds": results.resumed_folds,
        "loader_wait_fraction": results.loader_wait,  # per fold, per epoch: a timing
        "history": results.history,
        "warnings": health,
    }
    write_predictions(
        run.out,
        oof_score=results.oof,
        oof_label=y_tv,
        oof_fold=results.oof_fold,
        oof_index=run.trainval,
        test_score=test_score,
        test_label=y_test,
        test_index=run.test,
        test_fold_scores=results.test_fold_scores,
        test_scalars=np.asarray(test_scalars, np.float32),
        scalar_names=np.asarray(scalar_names, dtype=str),
        class_names=np.asarray(run.class_names, dtype=str),
    )
    if results.first_module is not None:
        _write_run_saliency(run, results.first_module)
    metrics = write_metrics(run.out, metrics)
    run_info.update(finished_at=_now(), wall_time_s=metrics["wall_time_s"], warnings=health)
    write_run_info(run.out, run_info)
    return metrics


def _write_run_saliency(run: RunContext, module: ImageModule) -> None:
    """saliency.npz: gradient × input of fold 0's model on a few test images of each class."""
    pos = pick_examples(run.y_test, run.task.name, per_class=2)
    index = run.test[pos]
    x, y = run.reader.read(index)
    write_saliency(
        module,
        x,
        y,
        index,
        run.out / SALIENCY_FILE,
        channel_names=list(run.reader.channel_names),
        class_names=run.class_names,
        scalars=model_scalars(run.reader, run.cfg, index),
    )


def _features_record(reader: Any) -> dict[str, str] | None:
    """Path and SHA-256 of the features table the scalars come from (part of the data's identity)."""
    table = getattr(reader, "table_path", None)
    if table is None:
        return None
    return {"path": str(table), "sha256": hashlib.sha256(Path(table).read_bytes()).hexdigest()}


# ---------------------------------------------------------------------------------- one fold
def _train_fold(ctx: FoldContext) -> dict[str, Any]:
    """Fit one fold (continuing from its checkpoint when resuming); rank 0 writes its files."""
    run, module, k = ctx.run, ctx.module, ctx.k
    cfg = run.cfg
    assert run.perf is not None and run.source is not None
    _fit_normalizers(ctx)
    meta = {
        "fold": k,
        "config_sha256": run.cfg_hash,
        "train_rows_sha256": _rows_hash(ctx.tr),
        "val_rows_sha256": _rows_hash(ctx.va),
        "data_fingerprint": run.fold_fp,
    }
    ckpt_dir = ctx.path / CHECKPOINT_DIR
    ckpt_path = _resume_checkpoint(ckpt_dir, meta, run.resume, run.out)
    if run.main:
        write_checkpoint_meta(ctx.path, meta)
    best, hist = BestWeights(module.monitor, module.monitor_mode), History(k, module.monitor)
    checkpoint = RunCheckpoint(ckpt_dir, cfg.train.checkpoint_every_n_steps)
    loggers = build_loggers(list(cfg.train.loggers), ctx.path, run_name=cfg.name, fold=k, run_dir=run.out)
    apply_performance(module, run.perf)
    wait = LoaderWait()  # the share of step time spent waiting for data, per epoch
    trainer = _trainer(cfg, ctx.path, [best, hist, checkpoint, wait, *ctx.extra_callbacks], loggers, run.perf.precision)
    data = FoldData(
        run.source.subset(ctx.tr),
        run.source.subset(ctx.va),
        batch_size=cfg.train.batch_size,
        seed=cfg.seed + k,
        num_workers=cfg.train.num_workers,
        val_batch_size=max(256, cfg.train.batch_size),
    )
    from_step = _checkpoint_step(ckpt_path) if ckpt_path else None
    log.info(
        "fold %d/%d: %d train, %d validation%s",
        k + 1,
        cfg.train.folds,
        ctx.tr.size,
        ctx.va.size,
        f", resuming from step {from_step}" if ckpt_path else "",
    )
    t_fit = time.perf_counter()
    # our own checkpoint, inside the run directory: loaded without unpickling arbitrary objects
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    fit_s = time.perf_counter() - t_fit
    if best.state is None:
        raise RuntimeError(f"fold {k}: training produced no validation result")
    module.load_state_dict(best.state)
    module.to("cpu")
    done = {
        "fold": k,
        "config_sha256": run.cfg_hash,
        "fit_seconds": fit_s,
        "epochs": trainer.current_epoch,
        "best_epoch": best.best_epoch,
        "best_score": best.best_score,
        "monitor": best.monitor,
        "resumed_from_step": from_step,
        "world_size": int(trainer.world_size),
        "history": hist.rows,
        "train_rows": ctx.tr.tolist(),
        "val_rows": ctx.va.tolist(),
        "data_fingerprint": run.fold_fp,
        "loader_wait": wait.rows,
    }
    if run.main:
        _save_fold(ctx, done)
    return done


def _fit_normalizers(ctx: FoldContext) -> None:
    """Fit the image (and scalar) normaliser on the fold's training rows only, when it needs statistics."""
    module, source = ctx.module, ctx.run.source
    assert source is not None
    if module.normalizer.needs_stats:
        module.normalizer.fit(source.channel_stats(ctx.tr, transform=module.normalizer.raw_transform))
    if module.scalar_normalizer is not None and module.scalar_normalizer.needs_stats:
        assert source.scalars is not None
        module.scalar_normalizer.fit_scalars(source.scalars[ctx.tr])


def _save_fold(ctx: FoldContext, done: dict[str, Any]) -> None:
    """The fold's best weights, its normalisers as data and its record (fold.json, written last)."""
    module = ctx.module
    norm = module.normalizer.to_dict()
    if module.scalar_normalizer is not None:
        norm["scalars"] = {"names": list(ctx.run.cfg.data.scalars), **module.scalar_normalizer.to_dict()}
    write_fold(ctx.path, module.state_dict(), norm, done)


def _resume_checkpoint(ckpt_dir: Path, meta: dict[str, Any], resume: bool, run_dir: Path) -> str | None:
    """The checkpoint to continue from, after checking it belongs to this fold of this config."""
    ckpt = ckpt_dir / RunCheckpoint.FILENAME
    if not ckpt.exists():
        return None
    if not resume:
        raise RunDirError(
            f"{ckpt}: fold {meta['fold']} was interrupted; pass --resume to continue it (or use a new output directory)"
        )
    if not ckpt.resolve().is_relative_to(run_dir.resolve()):  # a link out of the run: never unpickled
        raise RunDirError(f"{ckpt}: points outside the run directory {run_dir}; refusing to load it")
    meta_path = ckpt_dir / CHECKPOINT_META_FILE
    if not meta_path.is_file():
        raise RunDirError(f"{meta_path} is missing: cannot tell which config wrote {ckpt}")
    saved = json.loads(meta_path.read_text(encoding="utf-8"))
    for key in ("config_sha256", "train_rows_sha256", "val_rows_sha256"):
        if saved.get(key) != meta[key]:
            what = "config" if key == "config_sha256" else "data split"
            raise RunDirError(f"{ckpt}: written by a different {what} ({key} differs); cannot resume from it")
    return str(ckpt)


def _checkpoint_step(path: str) -> int | None:
    """Global step stored in a checkpoint (read with ``weights_only=True``)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged checkpoint: say which file
        raise RunDirError(f"{path}: cannot be read as a checkpoint ({err})") from err
    return int(ckpt.get("global_step", 0))


def _check_resumable(out: Path, cfg: ExperimentConfig) -> None:
    """``--resume`` into a directory written by a different config is an error naming the fields."""
    saved = out / CONFIG_FILE
    if not saved.is_file():
        return  # nothing to resume: a fresh run (a requeued job's first attempt)
    from e2evision.config import load_config

    old = load_config(saved)
    if config_hash(old) == config_hash(cfg):
        return
    raise RunDirError(f"{saved}: cannot resume, the config differs in {', '.join(config_diff(old, cfg))}")


def _target_scaling(cfg: ExperimentConfig, y_train: np.ndarray) -> tuple[float, float]:
    """``(shift, scale)`` of the regression target, fitted on the training folds when asked."""
    pp = cfg.preprocess
    shift = float(np.mean(y_train)) if pp.target_shift == "mean" else float(pp.target_shift or 0.0)
    if pp.target_scale == "std":
        scale = float(np.std(y_train))
        if not scale > 0:
            raise ValueError("preprocess.target_scale=std: the training targets are constant")
    else:
        scale = float(pp.target_scale or 1.0)
    return shift, scale


# ------------------------------------------------------------------------------------- helpers
def _load_finished_fold(fold_path: Path, module: ImageModule) -> dict[str, Any] | None:
    """Reuse a fold that finished in an earlier, interrupted run (weights read as safetensors)."""
    finished = read_finished_fold(fold_path)
    if finished is None:
        return None
    record, state = finished
    module.load_state_dict(state)
    log.info("fold %s: reusing finished fold from %s", fold_path.name, fold_path)
    return record


def _rows_hash(rows: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _device_name(cfg: ExperimentConfig) -> str:
    if torch.cuda.is_available() and cfg.train.accelerator not in ("cpu",):
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


#: Lightning's messages that add nothing to a run's console: banners, and warnings about choices
#: the runner makes on purpose (few loader workers, a reused fold directory, ...)
_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric")
_QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*exists and is not empty.*",
    ".*LeafSpec.*",
    ".*smaller than the logging interval.*",
)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Keep the console to progress bars and results while a run trains, and only then: the
    warning filters and logger levels are restored afterwards (library code sets no process-wide
    state)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for pattern in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
