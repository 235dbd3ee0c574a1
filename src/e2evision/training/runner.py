"""K-fold cross-validation of one config, from files on disk to a self-describing run directory.

Layout of ``out_dir``::

    config.yaml        the resolved config
    run.json           seed, package versions, data paths and fingerprint, timings, device
    metrics.json       fold_auc, oof_auc, test_auc (+ 95 % CI), params, history, ...
    predictions.npz    out-of-fold and test scores (numeric arrays, no pickles)
    fold_K/            model.safetensors (best epoch), normalizer.json, fold.json, logs, checkpoints

A fold whose ``fold.json`` exists is reused when the same command runs again, so an interrupted
cross-validation continues at the first unfinished fold.
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.model_selection import StratifiedKFold, train_test_split

from e2evision.config import ExperimentConfig
from e2evision.datasets import open_dataset
from e2evision.metrics import bootstrap_auc, roc_auc
from e2evision.models import count_parameters, create_model
from e2evision.training.callbacks import BestWeights, History
from e2evision.training.data import SampleSource, make_loader
from e2evision.training.module import BinaryClassifier
from e2evision.transforms import ChannelNormalizer, build_augment, build_geometry, output_size
from e2evision.utils import atomic_path, atomic_write_json, atomic_write_text, data_fingerprint, package_versions
from e2evision.utils.seeding import seed_everything

log = logging.getLogger(__name__)


def split_indices(labels: np.ndarray, cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (optional) subsample, then a stratified train+val / test split; both seeded."""
    idx = np.arange(labels.size)
    if cfg.data.max_samples is not None and cfg.data.max_samples < labels.size:
        idx, _ = train_test_split(idx, train_size=cfg.data.max_samples, stratify=labels, random_state=cfg.seed)
        idx = np.sort(idx)
    trainval, test = train_test_split(
        idx, test_size=cfg.data.test_fraction, stratify=labels[idx], random_state=cfg.seed
    )
    return np.sort(trainval), np.sort(test)


def _trainer(cfg: ExperimentConfig, fold_dir: Path, callbacks: list) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    t = cfg.train
    precision = t.precision or ("bf16-mixed" if torch.cuda.is_available() else "32-true")
    cbs = list(callbacks)
    cbs.append(ModelCheckpoint(dirpath=fold_dir / "checkpoints", save_last=True, save_top_k=0))
    if t.early_stopping_patience:
        cbs.append(EarlyStopping(monitor="val_auc", mode="max", patience=t.early_stopping_patience))
    return pl.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        precision=precision,
        deterministic=t.deterministic,
        callbacks=cbs,
        logger=CSVLogger(fold_dir, name="logs", version=""),
        enable_model_summary=False,
        enable_progress_bar=t.progress,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )


@torch.no_grad()
def predict(module: BinaryClassifier, dataset, batch_size: int = 512) -> np.ndarray:
    """Probabilities for every sample of ``dataset`` in order (eval mode, no autograd)."""
    module.eval()
    device = next(module.parameters()).device
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
    out = [torch.sigmoid(module(x.to(device)).float()).cpu() for x, _ in loader]
    return torch.cat(out).numpy()


def run_experiment(cfg: ExperimentConfig, out_dir: str | os.PathLike[str], *, command: str | None = None) -> dict[str, Any]:
    """Cross-validate ``cfg`` and write the run directory; returns the metrics dictionary."""
    _quiet_lightning()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = _now()
    t0 = time.perf_counter()
    if not cfg.data.paths:
        raise ValueError("no data: set data.paths in the config or pass --data")
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    cfg_hash = _config_hash(cfg)

    seed_everything(cfg.seed, deterministic=cfg.train.deterministic)
    reader = open_dataset(cfg.data.paths, cfg.data.format, **cfg.data.kwargs)
    labels_all = reader.labels()
    trainval, test = split_indices(labels_all, cfg)
    fingerprint = data_fingerprint(reader.paths)
    run_info = {
        "name": cfg.name,
        "seed": cfg.seed,
        "versions": package_versions(),
        "data": {
            "format": reader.format,
            "paths": [str(p) for p in reader.paths],
            "fingerprint": fingerprint,
            "n_samples": reader.n_samples,
            "image_shape": list(reader.image_shape),
            "channels": reader.channel_names,
            "n_trainval": int(trainval.size),
            "n_test": int(test.size),
        },
        "started_at": started,
        "device": _device_name(),
        "host": socket.gethostname(),
        "command": command or " ".join(sys.argv),
    }
    atomic_write_json(out / "run.json", run_info)

    selected = np.concatenate([trainval, test])
    source = SampleSource(reader, selected, cfg.data.in_memory_limit_gb, progress=cfg.train.progress)
    tv_rows = np.arange(trainval.size)
    test_rows = np.arange(trainval.size, selected.size)
    y_tv = labels_all[trainval]
    y_test = labels_all[test]
    c, h, w = reader.image_shape
    test_set = source.subset(test_rows)

    skf = StratifiedKFold(n_splits=cfg.train.folds, shuffle=True, random_state=cfg.seed)
    oof = np.full(trainval.size, np.nan, dtype=np.float64)
    oof_fold = np.full(trainval.size, -1, dtype=np.int64)
    test_fold_scores = np.zeros((cfg.train.folds, test.size), dtype=np.float64)
    fold_auc, epochs, history, train_time, best_epochs = [], [], [], 0.0, []
    n_params = 0

    for k, (tr, va) in enumerate(skf.split(tv_rows, y_tv)):
        fold_dir = out / f"fold_{k}"
        fold_dir.mkdir(exist_ok=True)
        seed_everything(cfg.seed + k, deterministic=cfg.train.deterministic)
        pp, aug = cfg.preprocess, cfg.augment
        normalizer = ChannelNormalizer(c, pp.normalize, pp.clip, pp.zero_suppression, pp.channel_scale)
        geometry = build_geometry(pp.resize, pp.crop, pp.pad)
        model = create_model(cfg.model.name, in_chans=c, img_size=output_size((h, w), pp.resize, pp.crop, pp.pad),
                             num_outputs=1, **cfg.model.kwargs)
        augment = build_augment(aug.flip_eta, aug.flip_phi, aug.p, aug.roll_phi, aug.rot90)
        module = BinaryClassifier(model, normalizer, cfg.train, augment, geometry)
        n_params = count_parameters(model)
        done = _load_finished_fold(fold_dir, module)
        if done is None:
            if normalizer.needs_stats:
                normalizer.fit(source.channel_stats(tr, transform=normalizer.raw_transform))
            best, hist = BestWeights("val_auc", "max"), History(k)
            trainer = _trainer(cfg, fold_dir, [best, hist])
            pin = torch.cuda.is_available()
            train_loader = make_loader(source.subset(tr), cfg.train.batch_size, shuffle=True, seed=cfg.seed + k,
                                       num_workers=cfg.train.num_workers, pin_memory=pin)
            val_loader = make_loader(source.subset(va), max(256, cfg.train.batch_size), shuffle=False, seed=0,
                                     num_workers=cfg.train.num_workers, pin_memory=pin)
            log.info("fold %d/%d: %d train, %d validation", k + 1, cfg.train.folds, tr.size, va.size)
            t_fit = time.perf_counter()
            trainer.fit(module, train_loader, val_loader)
            fit_s = time.perf_counter() - t_fit
            if best.state is None:
                raise RuntimeError(f"fold {k}: training produced no validation result")
            module.load_state_dict(best.state)
            module.to("cpu")
            with atomic_path(fold_dir / "model.safetensors") as tmp:
                save_file({kk: v.contiguous() for kk, v in module.state_dict().items()}, str(tmp))
            atomic_write_json(fold_dir / "normalizer.json", normalizer.to_dict())
            done = {"fold": k, "config_sha256": cfg_hash, "fit_seconds": fit_s, "epochs": trainer.current_epoch, "best_epoch": best.best_epoch,
                    "history": hist.rows, "train_rows": tr.tolist(), "val_rows": va.tolist()}
            atomic_write_json(fold_dir / "fold.json", done)
        elif done.get("config_sha256") != cfg_hash or done["val_rows"] != va.tolist():
            raise RuntimeError(
                f"{fold_dir}: a finished fold from a different config or data split is in the way; "
                "use a new output directory or delete the old one"
            )
        module.to("cpu")
        oof[va] = predict(module, source.subset(va))
        oof_fold[va] = k
        test_fold_scores[k] = predict(module, test_set)
        fold_auc.append(roc_auc(y_tv[va], oof[va]))
        epochs.append(int(done["epochs"]))
        best_epochs.append(int(done["best_epoch"]))
        history.extend(done["history"])
        train_time += float(done["fit_seconds"])

    test_score = test_fold_scores.mean(axis=0)
    test_auc, lo, hi = bootstrap_auc(y_test, test_score, seed=cfg.seed)
    metrics = {
        "name": cfg.name,
        "model": cfg.model.name,
        "task": "binary",
        "n_params": int(n_params),
        "fold_auc": [float(a) for a in fold_auc],
        "fold_auc_mean": float(np.mean(fold_auc)),
        "fold_auc_std": float(np.std(fold_auc, ddof=1)) if len(fold_auc) > 1 else 0.0,
        "oof_auc": roc_auc(y_tv, oof),
        "test_auc": float(test_auc),
        "test_auc_ci": [lo, hi],
        "train_time_s": train_time,
        "wall_time_s": time.perf_counter() - t0,
        "n_trainval": int(trainval.size),
        "n_test": int(test.size),
        "epochs": epochs,
        "best_epochs": best_epochs,
        "history": history,
    }
    with atomic_path(out / "predictions.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, oof_score=oof, oof_label=y_tv, oof_fold=oof_fold, oof_index=trainval,
                     test_score=test_score, test_label=y_test, test_index=test, test_fold_scores=test_fold_scores)
    atomic_write_json(out / "metrics.json", metrics)
    run_info["finished_at"] = _now()
    run_info["wall_time_s"] = metrics["wall_time_s"]
    atomic_write_json(out / "run.json", run_info)
    return metrics


def _load_finished_fold(fold_dir: Path, module: BinaryClassifier) -> dict[str, Any] | None:
    """Reuse a fold that finished in an earlier, interrupted run (weights read as safetensors)."""
    info, weights = fold_dir / "fold.json", fold_dir / "model.safetensors"
    if not (info.exists() and weights.exists()):
        return None
    module.load_state_dict(load_file(weights))
    log.info("fold %s: reusing finished fold from %s", fold_dir.name, fold_dir)
    return json.loads(info.read_text())


def _config_hash(cfg: ExperimentConfig) -> str:
    """Hash of everything that changes a fold's result (not display settings like progress bars)."""
    data = cfg.model_dump(mode="json")
    data["train"].pop("progress", None)
    data["train"].pop("num_workers", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _device_name() -> str:
    if torch.cuda.is_available():
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
