"""K-fold cross-validation of one config, from files on disk to a self-describing run directory.

Layout of ``out_dir``::

    config.yaml        the resolved config
    run.json           seed, package versions, data paths and fingerprint, timings, device, processes
    metrics.json       per task: AUCs / rejection / binned AUC, or MAE / resolution; history, ...
    predictions.npz    out-of-fold and test scores (numeric arrays, no pickles)
    saliency.npz       gradient × input of fold 0's model on a few test images of each class
    fold_K/            model.safetensors (best epoch), normalizer.json, fold.json, logs/,
                       checkpoints/last.ckpt (+ meta.json)

A fold whose ``fold.json`` exists is reused when the same command runs again on the same data (its
recorded ``data_fingerprint``; see :mod:`.preflight`). A fold that was
interrupted continues from ``checkpoints/last.ckpt`` with ``resume=True`` (``--resume``): model,
optimizer, scheduler, random generators, callbacks and the position inside the epoch's batch
order are restored, so the result equals that of an uninterrupted run.

Under DDP every process runs this function; all of them train, only rank 0 writes files and
evaluates.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.model_selection import StratifiedKFold, train_test_split

from e2evision.config import ExperimentConfig
from e2evision.metrics import (
    auc_in_bins,
    background_rejection,
    bootstrap_auc,
    bootstrap_metric,
    confusion_matrix,
    delong_auc_ci,
    one_vs_rest_auc,
    regression_in_bins,
    regression_summary,
    roc_auc,
)
from e2evision.datasets.feature_table import scalar_columns
from e2evision.models import count_parameters
from e2evision.training.preflight import (
    RunDirError,
    check_finished_folds,
    check_training_labels,
    fold_fingerprint,
)
from e2evision.training.performance import Performance, apply_performance, resolve_performance
from e2evision.training.artifacts import (
    SALIENCY_FILE,
    build_module,
    init_from_run,
    model_scalars,
    open_experiment_data,
    pick_examples,
    write_saliency,
)
from e2evision.training.callbacks import BestWeights, History, LoaderWait, RunCheckpoint, StagedEarlyStopping
from e2evision.training.data import FoldData, SampleSource, make_loader
from e2evision.training.health import diagnose
from e2evision.training.loggers import build_loggers, check_loggers
from e2evision.training.module import ImageModule, split_batch
from e2evision.utils import atomic_path, atomic_write_json, atomic_write_text, data_fingerprint, package_versions
from e2evision.utils.seeding import seed_everything

log = logging.getLogger(__name__)


#: signal efficiencies at which metrics.json reports the background rejection 1/ε_B
SIGNAL_EFFICIENCIES: tuple[float, ...] = (0.3, 0.5)
#: config fields that do not change a fold's result (hardware, display, logging, checkpoint cadence)
# hardware and display settings: they change a fold's numbers at most by float rounding
_NOT_HASHED = ("progress", "num_workers", "accelerator", "devices", "num_nodes", "strategy", "loggers",
               "checkpoint_every_n_steps", "channels_last", "compile", "matmul_precision",
               "not_learning_epochs")


def strata(labels: np.ndarray, task: str, max_bins: int = 10) -> np.ndarray:
    """What splits are stratified on: the class, or a quantile bin of a regression target."""
    if task != "regression":
        return labels
    n_bins = max(1, min(max_bins, labels.size // 20))
    edges = np.quantile(labels, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, labels, side="right")


def split_indices(labels: np.ndarray, cfg: ExperimentConfig, task: str = "binary") -> tuple[np.ndarray, np.ndarray]:
    """Stratified (optional) subsample, then a stratified train+val / test split; both seeded."""
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


def _trainer(cfg: ExperimentConfig, fold_dir: Path, callbacks: list, loggers: list, precision: str) -> Any:
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
        default_root_dir=fold_dir,
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
def predict(module: ImageModule, dataset: Any, batch_size: int = 512,
            device: torch.device | str | None = None) -> np.ndarray:
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


def run_experiment(cfg: ExperimentConfig, out_dir: str | os.PathLike[str], *, command: str | None = None,
                   resume: bool = False,
                   extra_callbacks: Callable[[int], list[Any]] | None = None) -> dict[str, Any]:
    """Cross-validate ``cfg`` and write the run directory; returns the metrics dictionary.

    ``resume`` continues folds interrupted mid-training from their last checkpoint; without it
    such a fold is an error (a finished fold is reused either way). ``extra_callbacks(fold)``
    adds Lightning callbacks to a fold's trainer (hyper-parameter search prunes through it).
    Processes other than rank 0 of a DDP job train but write nothing and return ``{}``.
    """
    _quiet_lightning()
    out = Path(out_dir)
    main = process_rank() == 0
    started = _now()
    t0 = time.perf_counter()
    if not cfg.data.paths:
        raise ValueError("no data: set data.paths in the config or pass --data")
    check_loggers(list(cfg.train.loggers))
    cfg_hash = config_hash(cfg)
    if resume:
        _check_resumable(out, cfg)

    seed_everything(cfg.seed, deterministic=cfg.train.deterministic)
    reader = open_experiment_data(cfg)
    input_columns = scalar_columns(reader, cfg.data.scalars)
    task = reader.task
    class_names = list(reader.class_names)
    n_classes = len(class_names) if task == "multiclass" else 2
    labels_all = reader.labels()
    where = ", ".join(map(str, reader.paths))
    check_training_labels(labels_all, task, cfg.train.folds, n_classes, where)
    trainval, test = split_indices(labels_all, cfg, task)
    # provenance is written only once the data and the finished folds belong to this run
    data_fp = data_fingerprint(reader.paths)
    fold_fp = fold_fingerprint(data_fp, _features_record(reader))
    skf = StratifiedKFold(n_splits=cfg.train.folds, shuffle=True, random_state=cfg.seed)
    check_training_labels(labels_all[trainval], task, cfg.train.folds, n_classes, "the training part")
    fold_val = [va for _, va in skf.split(trainval, strata(labels_all[trainval], task))]
    check_finished_folds(out, fold_val, cfg_hash, fold_fp)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", cfg.to_yaml())
    scalar_names = list(reader.scalar_names)
    image_shape = tuple(int(s) for s in reader.image_shape)
    perf = resolve_performance(cfg.train, build_module(cfg, image_shape, task, n_classes), image_shape)  # type: ignore[arg-type]
    run_info: dict[str, Any] = {
        "name": cfg.name,
        "seed": cfg.seed,
        "versions": package_versions(),
        "data": {
            "format": reader.format,
            "paths": [str(p) for p in reader.paths],
            "fingerprint": data_fp,
            "n_samples": reader.n_samples,
            "image_shape": list(reader.image_shape),
            "channels": reader.channel_names,
            "task": task,
            "class_names": class_names,
            "scalars": scalar_names,
            "model_scalars": list(cfg.data.scalars),
            "features": _features_record(reader),
            "n_trainval": int(trainval.size),
            "n_test": int(test.size),
        },
        "started_at": started,
        "device": _device_name(cfg),
        # what each fold's model runs with (precision, channels-last, compile, TF32); see training.performance
        "performance": perf.to_dict(),
        "processes": expected_processes(cfg),
        "host": socket.gethostname(),
        "command": command or " ".join(sys.argv),
        "resumed": bool(resume),
    }
    if main:
        atomic_write_json(out / "run.json", run_info)

    selected = np.concatenate([trainval, test])
    source = SampleSource(reader, selected, cfg.data.in_memory_limit_gb, progress=cfg.train.progress and main,
                          scalar_columns=input_columns)
    tv_rows = np.arange(trainval.size)
    test_rows = np.arange(trainval.size, selected.size)
    y_tv, y_test = labels_all[trainval], labels_all[test]
    shape = image_shape
    test_set = source.subset(test_rows)
    device = _predict_device(cfg)

    score_shape: tuple[int, ...] = (n_classes,) if task == "multiclass" else ()
    oof = np.full((trainval.size, *score_shape), np.nan, dtype=np.float64)
    oof_fold = np.full(trainval.size, -1, dtype=np.int64)
    test_fold_scores = np.zeros((cfg.train.folds, test.size, *score_shape), dtype=np.float64)
    epochs, history, best_epochs, resumed_folds, loader_wait = [], [], [], [], []
    train_time, n_params = 0.0, 0
    first_module: ImageModule | None = None

    for k, (tr, va) in enumerate(skf.split(tv_rows, strata(y_tv, task))):
        fold_dir = out / f"fold_{k}"
        if main:
            fold_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed + k, deterministic=cfg.train.deterministic)
        shift, scale = _target_scaling(cfg, y_tv[tr]) if task == "regression" else (0.0, 1.0)
        module = build_module(cfg, shape, task, n_classes, shift, scale)  # type: ignore[arg-type]
        n_params = count_parameters(module.model)
        done = _load_finished_fold(fold_dir, module)
        if done is not None and perf.channels_last:  # the memory format of a freshly trained fold
            module.model.to(memory_format=torch.channels_last)
            module.channels_last = True
        if done is None and cfg.model.init_from:
            log.info("fold %d: initialised with %s", k,
                     init_from_run(module.model, cfg.model.init_from, cfg.model.init_fold))
        if done is None:
            extra = list(extra_callbacks(k)) if extra_callbacks is not None else []
            done = _train_fold(cfg, k, module, source, tr, va, fold_dir, out, cfg_hash, resume, main, extra,
                               perf, fold_fp)
        elif done.get("config_sha256") != cfg_hash or done["val_rows"] != va.tolist():
            raise RunDirError(
                f"{fold_dir}: a finished fold from a different config or data split is in the way; "
                "use a new output directory or delete the old one"
            )
        if not main:
            continue
        if first_module is None:
            first_module = module
        oof[va] = predict(module, source.subset(va), device=device)
        oof_fold[va] = k
        test_fold_scores[k] = predict(module, test_set, device=device)
        epochs.append(int(done["epochs"]))
        best_epochs.append(int(done["best_epoch"]))
        history.extend(done["history"])
        loader_wait.append([r["loader_wait_fraction"] for r in done.get("loader_wait", [])])
        train_time += float(done["fit_seconds"])
        if done.get("resumed_from_step") is not None:
            resumed_folds.append(k)

    if not main:
        return {}
    test_score = test_fold_scores.mean(axis=0)
    health = diagnose(task, history, oof, oof_fold, y_tv,
                      min(cfg.train.not_learning_epochs, cfg.train.max_epochs) if cfg.train.not_learning_epochs else None)
    for msg in health:
        log.warning("%s: %s", cfg.name, msg)
    test_scalars = reader.read_scalars(test) if scalar_names else np.zeros((test.size, 0), np.float32)
    metrics: dict[str, Any] = {
        "name": cfg.name,
        "model": cfg.model.name,
        "task": task,
        "class_names": class_names,
        "monitor": module.monitor,
        "n_params": int(n_params),
        **task_metrics(task, y_tv, oof, oof_fold, y_test, test_score, seed=cfg.seed, class_names=class_names,
                       scalars=dict(zip(scalar_names, np.asarray(test_scalars, np.float64).T))),
        "train_time_s": train_time,
        "wall_time_s": time.perf_counter() - t0,
        "n_trainval": int(trainval.size),
        "n_test": int(test.size),
        "epochs": epochs,
        "best_epochs": best_epochs,
        "resumed_folds": resumed_folds,
        "loader_wait_fraction": loader_wait,  # per fold, per epoch: a timing
        "history": history,
        "warnings": health,
    }
    with atomic_path(out / "predictions.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, oof_score=oof, oof_label=y_tv, oof_fold=oof_fold, oof_index=trainval,
                     test_score=test_score, test_label=y_test, test_index=test, test_fold_scores=test_fold_scores,
                     test_scalars=np.asarray(test_scalars, np.float32),
                     scalar_names=np.asarray(scalar_names, dtype=str), class_names=np.asarray(class_names, dtype=str))
    if first_module is not None:
        pos = pick_examples(y_test, task, per_class=2)
        x, y = reader.read(test[pos])
        write_saliency(first_module, x, y, test[pos], out / SALIENCY_FILE,
                       channel_names=list(reader.channel_names), class_names=class_names,
                       scalars=model_scalars(reader, cfg, test[pos]))
    metrics = jsonable(metrics)
    atomic_write_json(out / "metrics.json", metrics)
    run_info["finished_at"] = _now()
    run_info["wall_time_s"] = metrics["wall_time_s"]
    run_info["warnings"] = health
    atomic_write_json(out / "run.json", run_info)
    return metrics


def _features_record(reader: Any) -> dict[str, str] | None:
    """Path and SHA-256 of the features table the scalars come from (part of the data's identity)."""
    table = getattr(reader, "table_path", None)
    if table is None:
        return None
    return {"path": str(table), "sha256": hashlib.sha256(Path(table).read_bytes()).hexdigest()}


def _train_fold(cfg: ExperimentConfig, k: int, module: ImageModule, source: SampleSource, tr: np.ndarray,
                va: np.ndarray, fold_dir: Path, run_dir: Path, cfg_hash: str, resume: bool,
                main: bool, extra_callbacks: list[Any], perf: Performance,
                data_fp: str = "") -> dict[str, Any]:
    """Fit one fold (continuing from its checkpoint when resuming); rank 0 writes its files."""
    normalizer = module.normalizer
    if normalizer.needs_stats:
        normalizer.fit(source.channel_stats(tr, transform=normalizer.raw_transform))
    if module.scalar_normalizer is not None and module.scalar_normalizer.needs_stats:
        assert source.scalars is not None
        module.scalar_normalizer.fit_scalars(source.scalars[tr])
    meta = {"fold": k, "config_sha256": cfg_hash, "train_rows_sha256": _rows_hash(tr),
            "val_rows_sha256": _rows_hash(va), "data_fingerprint": data_fp}
    ckpt_dir = fold_dir / "checkpoints"
    ckpt_path = _resume_checkpoint(ckpt_dir, meta, resume, run_dir)
    if main:
        atomic_write_json(ckpt_dir / "meta.json", meta)
    best, hist = BestWeights(module.monitor, module.monitor_mode), History(k, module.monitor)
    checkpoint = RunCheckpoint(ckpt_dir, cfg.train.checkpoint_every_n_steps)
    loggers = build_loggers(list(cfg.train.loggers), fold_dir, run_name=cfg.name, fold=k, run_dir=run_dir)
    apply_performance(module, perf)
    wait = LoaderWait()  # the share of step time spent waiting for data, per epoch
    trainer = _trainer(cfg, fold_dir, [best, hist, checkpoint, wait, *extra_callbacks], loggers, perf.precision)
    data = FoldData(source.subset(tr), source.subset(va), batch_size=cfg.train.batch_size, seed=cfg.seed + k,
                    num_workers=cfg.train.num_workers, val_batch_size=max(256, cfg.train.batch_size))
    from_step = _checkpoint_step(ckpt_path) if ckpt_path else None
    log.info("fold %d/%d: %d train, %d validation%s", k + 1, cfg.train.folds, tr.size, va.size,
             f", resuming from step {from_step}" if ckpt_path else "")
    t_fit = time.perf_counter()
    # our own checkpoint, inside the run directory: loaded without unpickling arbitrary objects
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    fit_s = time.perf_counter() - t_fit
    if best.state is None:
        raise RuntimeError(f"fold {k}: training produced no validation result")
    module.load_state_dict(best.state)
    module.to("cpu")
    done = {"fold": k, "config_sha256": cfg_hash, "fit_seconds": fit_s, "epochs": trainer.current_epoch,
            "best_epoch": best.best_epoch, "best_score": best.best_score, "monitor": best.monitor,
            "resumed_from_step": from_step, "world_size": int(trainer.world_size), "history": hist.rows, "train_rows": tr.tolist(), "val_rows": va.tolist(),
            "data_fingerprint": data_fp, "loader_wait": wait.rows}
    if main:
        with atomic_path(fold_dir / "model.safetensors") as tmp:
            save_file({kk: v.contiguous() for kk, v in module.state_dict().items()}, str(tmp))
        norm = normalizer.to_dict()
        if module.scalar_normalizer is not None:
            norm["scalars"] = {"names": list(cfg.data.scalars), **module.scalar_normalizer.to_dict()}
        atomic_write_json(fold_dir / "normalizer.json", norm)
        atomic_write_json(fold_dir / "fold.json", done)
    return done


def _resume_checkpoint(ckpt_dir: Path, meta: dict[str, Any], resume: bool, run_dir: Path) -> str | None:
    """The checkpoint to continue from, after checking it belongs to this fold of this config."""
    ckpt = ckpt_dir / RunCheckpoint.FILENAME
    if not ckpt.exists():
        return None
    if not resume:
        raise RunDirError(
            f"{ckpt}: fold {meta['fold']} was interrupted; pass --resume to continue it "
            "(or use a new output directory)"
        )
    if not ckpt.resolve().is_relative_to(run_dir.resolve()):  # a link out of the run: never unpickled
        raise RunDirError(f"{ckpt}: points outside the run directory {run_dir}; refusing to load it")
    meta_path = ckpt_dir / "meta.json"
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
    saved = out / "config.yaml"
    if not saved.is_file():
        return  # nothing to resume: a fresh run (a requeued job's first attempt)
    from e2evision.config import load_config

    old = load_config(saved)
    if config_hash(old) == config_hash(cfg):
        return
    a, b = _flatten(_hashed(old)), _flatten(_hashed(cfg))
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    raise RunDirError(f"{saved}: cannot resume, the config differs in {', '.join(diff)}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
    return out


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


# ------------------------------------------------------------------------------------- metrics
def task_metrics(task: str, y_tv: np.ndarray, oof: np.ndarray, oof_fold: np.ndarray, y_test: np.ndarray,
                 test_score: np.ndarray, *, seed: int, class_names: list[str] | None = None,
                 scalars: dict[str, np.ndarray] | None = None, n_boot: int = 1000) -> dict[str, Any]:
    """The task's entries of metrics.json from out-of-fold and test scores (see docs/training.md)."""
    folds = sorted(int(f) for f in np.unique(oof_fold) if f >= 0)
    if task == "binary":
        fold_auc = [roc_auc(y_tv[oof_fold == f], oof[oof_fold == f]) for f in folds]
        auc, lo, hi = bootstrap_auc(y_test, test_score, n_boot=n_boot, seed=seed)
        delong = delong_auc_ci(y_test, test_score)
        rej = background_rejection(y_test, test_score, SIGNAL_EFFICIENCIES)
        out: dict[str, Any] = {
            **_spread("fold_auc", fold_auc),
            "oof_auc": roc_auc(y_tv, oof),
            "test_auc": float(auc),
            "test_auc_ci": [lo, hi],
            "test_auc_delong_ci": [delong["low"], delong["high"]],
            "test_auc_std_error": delong["std_error"],
            "background_rejection": [
                {key: rej[key][i] for key in ("signal_efficiency", "background_efficiency", "rejection", "sic",
                                              "background_passing")} | {"n_background": rej["n_background"]}
                for i in range(len(SIGNAL_EFFICIENCIES))
            ],
        }
        if scalars and "pt" in scalars:
            b = auc_in_bins(y_test, test_score, scalars["pt"], bins=5, n_boot=min(n_boot, 200), seed=seed)
            out["auc_in_bins"] = {"variable": "pt", **{k: b[k] for k in ("edges", "n", "n_signal", "n_background",
                                                                           "auc", "low", "high", "reason")}}
        return out
    if task == "multiclass":
        names = list(class_names or [])
        fold_auc = [one_vs_rest_auc(y_tv[oof_fold == f], oof[oof_fold == f])["macro"] for f in folds]
        ovr = one_vs_rest_auc(y_test, test_score)
        boot = bootstrap_metric(lambda y, s: one_vs_rest_auc(y, s)["macro"], y_test, test_score,
                                n_boot=min(n_boot, 500), seed=seed)
        k = test_score.shape[1]
        return {
            **_spread("fold_auc", fold_auc),
            "oof_auc": one_vs_rest_auc(y_tv, oof)["macro"],
            "test_auc": ovr["macro"],
            "test_auc_ci": [boot["low"], boot["high"]],
            "test_auc_weighted": ovr["weighted"],
            "test_ovr_auc": {names[c] if c < len(names) else str(c): ovr["auc"][c] for c in range(k)},
            "test_accuracy": float(np.mean(np.argmax(test_score, axis=1) == y_test.astype(int))),
            "confusion_matrix": confusion_matrix(y_test, test_score, n_classes=k),
        }
    if task == "regression":
        fold_mae = [float(np.mean(np.abs(oof[oof_fold == f] - y_tv[oof_fold == f]))) for f in folds]
        summary = regression_summary(y_test, test_score)
        boot = bootstrap_metric(lambda t, p: float(np.mean(np.abs(p - t))), y_test, test_score,
                                n_boot=min(n_boot, 500), seed=seed)
        bins = regression_in_bins(y_test, test_score, bins=5)
        return {
            **_spread("fold_mae", fold_mae),
            "oof_mae": float(np.mean(np.abs(oof - y_tv))),
            "test_mae": summary["mae"],
            "test_mae_ci": [boot["low"], boot["high"]],
            "test": summary,
            "test_in_bins": bins,
        }
    raise ValueError(f"unknown task {task!r}")


def _spread(name: str, values: list[float]) -> dict[str, Any]:
    return {name: [float(v) for v in values], f"{name}_mean": float(np.mean(values)),
            f"{name}_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def jsonable(obj: Any) -> Any:
    """Arrays → lists, NumPy scalars → Python, NaN/±inf → None: metrics.json stays strict JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# ------------------------------------------------------------------------------------- helpers
def _load_finished_fold(fold_dir: Path, module: ImageModule) -> dict[str, Any] | None:
    """Reuse a fold that finished in an earlier, interrupted run (weights read as safetensors)."""
    info, weights = fold_dir / "fold.json", fold_dir / "model.safetensors"
    if not (info.exists() and weights.exists()):
        return None
    module.load_state_dict(load_file(weights))
    log.info("fold %s: reusing finished fold from %s", fold_dir.name, fold_dir)
    return json.loads(info.read_text())


def _hashed(cfg: ExperimentConfig) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    data.pop("tune", None)  # a search space does not change how one config trains
    for key in _NOT_HASHED:
        data["train"].pop(key, None)
    return data


def config_hash(cfg: ExperimentConfig) -> str:
    """Hash of everything that changes a fold's result (not hardware, display or logging settings)."""
    return hashlib.sha256(json.dumps(_hashed(cfg), sort_keys=True).encode()).hexdigest()


def _rows_hash(rows: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _device_name(cfg: ExperimentConfig) -> str:
    if torch.cuda.is_available() and cfg.train.accelerator not in ("cpu",):
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _quiet_lightning() -> None:
    """Keep the console to progress bars and results: Lightning's info banners add nothing here."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
