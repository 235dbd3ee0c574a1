"""One fold of a finished run, rebuilt as PyTorch modules: the model, its normaliser and geometry.

A fold is rebuilt exactly as the trainer built it (the same module builder, the normaliser
settings of ``normalizer.json``) and its ``model.safetensors`` loads strictly, so what is
exported, scored or initialised from is what was trained. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.datasets.task import Task, get_task
from e2evision.rundir.layout import (
    CONFIG_FILE,
    FOLD_FILE,
    METRICS_FILE,
    NORMALIZER_FILE,
    RUN_FILE,
    WEIGHTS_FILE,
    RunDirError,
    fold_dir,
    fold_numbers,
    is_ensemble,
    read_json,
)


@dataclass
class LoadedFold:
    """One trained fold, ready to run on raw images (``module``) or to export (``model``, ``geometry``)."""

    run_dir: Path
    fold: int
    fold_reason: str
    config: Any  # ExperimentConfig
    module: Any  # the training module (ImageModule): raw images in, normaliser included
    model: Any  # nn.Module
    normalizer: Any  # ChannelNormalizer
    geometry: Any  # nn.Module
    image_shape: tuple[int, int, int]
    channel_names: list[str]
    num_outputs: int
    num_scalars: int
    scalar_names: list[str]
    task: str
    class_names: list[str]
    weights_path: Path
    weights_sha256: str
    run_info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None

    @property
    def normalizer_dict(self) -> dict[str, Any]:
        """The normalisation as data, from the loaded buffers (what preprocess.json records)."""
        return self.normalizer.to_dict()


def choose_fold(run_dir: str | os.PathLike[str], fold: int | None = None) -> tuple[int, str]:
    """The fold to use and why: ``fold`` if given, else the best by the run's own monitor.

    The monitor is ``metrics.json``'s ``monitor`` (``val_auc``: highest ``fold_auc``, binary and
    multi-class; ``val_mae``: lowest ``fold_mae``, regression), each the out-of-fold value of the
    best epoch; an interrupted run without metrics.json falls back to the best monitored value in
    each ``fold_K/fold.json`` history.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{run}: run directory not found")
    if is_ensemble(run):
        raise RunDirError(f"{run}: an ensemble of finished runs has no folds of its own")
    available = fold_numbers(run)
    if not available:
        raise RunDirError(f"{run}: no fold_K/{WEIGHTS_FILE} in this run directory (did training finish a fold?)")
    if fold is not None:
        if fold not in available:
            raise RunDirError(f"{run}: fold {fold} has no {WEIGHTS_FILE}; folds available: {available}")
        return fold, f"fold {fold} (asked for)"
    metrics = read_json(run / METRICS_FILE) if (run / METRICS_FILE).is_file() else {}
    task = get_task(str(metrics.get("task") or "binary"))
    monitor = str(metrics.get("monitor") or task.monitor)
    monitored = _monitor_task(monitor)
    higher, key = monitored.higher_is_better, monitored.fold_metric
    what = "validation AUC" if higher else "validation MAE"
    picked = _best_listed(metrics.get(key), available, higher, key, what)
    if picked is not None:
        return picked
    picked = _best_in_histories(run, available, monitor, higher, what)
    if picked is not None:
        return picked
    return available[0], f"fold {available[0]}: no {what} recorded, first fold with weights"


def _monitor_task(monitor: str) -> Task:
    """The task whose monitor ``monitor`` is (``val_auc``: classification, ``val_mae``: regression)."""
    return {"val_auc": get_task("binary"), "val_mae": get_task("regression")}.get(monitor, get_task("binary"))


def _best_listed(values: Any, available: list[int], higher: bool, key: str, what: str) -> tuple[int, str] | None:
    """The best fold by metrics.json's per-fold list ``key``, among those with weights."""
    if not (isinstance(values, list) and values and all(isinstance(a, (int, float)) for a in values)):
        return None
    order = np.argsort(values)[::-1] if higher else np.argsort(values, kind="stable")
    ranked = [int(k) for k in order if k in available]
    if not ranked:
        return None
    best = ranked[0]
    listing = ", ".join(f"{a:.4f}" for a in values)
    return best, f"fold {best}: best {what} {values[best]:.4f} (metrics.json {key}: {listing})"


def _best_in_histories(
    run: Path, available: list[int], monitor: str, higher: bool, what: str
) -> tuple[int, str] | None:
    """The best fold by the monitored value in each fold.json history (an interrupted run)."""
    scores = {}
    for k in available:
        info_path = fold_dir(run, k) / FOLD_FILE
        if info_path.is_file():
            hist = read_json(info_path, FOLD_FILE).get("history") or []
            vals = [h[monitor] for h in hist if isinstance(h, dict) and isinstance(h.get(monitor), (int, float))]
            if vals:
                scores[k] = max(vals) if higher else min(vals)
    if not scores:
        return None
    best = (max if higher else min)(scores, key=lambda k: scores[k])
    return best, f"fold {best}: best {what} {scores[best]:.4f} (fold.json histories; metrics.json absent)"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_fold(run_dir: str | os.PathLike[str], fold: int | None = None) -> LoadedFold:
    """Rebuild fold ``fold`` (default: best by the run's monitored metric) of ``run_dir``, in eval
    mode on the CPU.

    The module comes from the trainer's own builder and the weights load strictly, so the rebuilt
    model is the trained one; ``normalizer.json`` must agree with the loaded buffers. Every
    problem is a :class:`RunDirError` naming the file.
    """
    run = Path(run_dir)
    k, reason = choose_fold(run, fold)
    cfg = _read_config(run)
    run_info = read_json(run / RUN_FILE, RUN_FILE)
    metrics = read_json(run / METRICS_FILE, METRICS_FILE) if (run / METRICS_FILE).is_file() else None
    data = run_info.get("data") or {}
    shape = data.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise RunDirError(f"{run / RUN_FILE}: data.image_shape must be [C, H, W], got {shape!r}")
    c, h, w = shape
    task = get_task(str((metrics or {}).get("task") or data.get("task") or "binary"))
    class_names = list((metrics or {}).get("class_names") or data.get("class_names") or [])
    state, weights_path, norm_path = _read_fold_files(fold_dir(run, k), c)
    module = _build_and_load(run, cfg, (c, h, w), task.name, task.n_classes(class_names), state, weights_path)
    _check_normalizer(module.normalizer, read_json(norm_path, NORMALIZER_FILE), norm_path)

    model = module.model
    num_scalars = int(getattr(getattr(model, "head", None), "num_scalars", 0) or 0)
    head = state.get("model.head.fc.weight")
    num_outputs = int(head.shape[0]) if head is not None else task.n_outputs(task.n_classes(class_names))
    names = list(data.get("model_scalars") or cfg.data.scalars or data.get("scalars") or [])
    scalar_names = names if len(names) == num_scalars else [f"scalar_{i}" for i in range(num_scalars)]
    if task.link == "sigmoid" and not class_names:
        class_names = ["0", "1"]
    return LoadedFold(
        run_dir=run.resolve(),
        fold=k,
        fold_reason=reason,
        config=cfg,
        module=module,
        model=model,
        normalizer=module.normalizer,
        geometry=module.geometry,
        image_shape=(c, h, w),
        channel_names=list(data.get("channels") or [f"channel_{i}" for i in range(c)]),
        num_outputs=num_outputs,
        num_scalars=num_scalars,
        scalar_names=scalar_names,
        task=task.name,
        class_names=class_names,
        weights_path=weights_path.resolve(),
        weights_sha256=sha256_file(weights_path),
        run_info=run_info,
        metrics=metrics,
    )


def load_fold_module(run_dir: str | os.PathLike[str], fold: int = 0) -> Any:
    """Fold ``fold``'s best weights of a finished run as its training module (eval mode, CPU)."""
    return load_fold(run_dir, fold).module


def _read_config(run: Path) -> Any:
    from e2evision.config import load_config

    try:
        return load_config(run / CONFIG_FILE)
    except (ValueError, FileNotFoundError) as err:
        raise RunDirError(f"{run / CONFIG_FILE}: {err}") from None


def _read_fold_files(fold_path: Path, channels: int) -> tuple[dict[str, Any], Path, Path]:
    """The fold's weights (safetensors) and the path of its normalizer.json, checked for its fields."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    norm_path = fold_path / NORMALIZER_FILE
    norm = read_json(norm_path, NORMALIZER_FILE)
    for key in ("mode", "centre", "scale"):
        if key not in norm:
            raise RunDirError(f"{norm_path}: missing field {key!r}")
    weights_path = fold_path / WEIGHTS_FILE
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError) as err:
        raise RunDirError(f"{weights_path}: cannot read the weights ({err})") from None
    if "normalizer.channel_scale" not in state:  # runs from before per-channel scale factors existed
        scale = norm.get("channel_scale") or [1.0] * channels
        state["normalizer.channel_scale"] = torch.tensor(scale, dtype=torch.float32)
    return state, weights_path, norm_path


def _build_and_load(
    run: Path,
    cfg: Any,
    shape: tuple[int, int, int],
    task: str,
    n_classes: int,
    state: dict[str, Any],
    weights_path: Path,
) -> Any:
    """The training module of ``cfg`` with the fold's weights loaded strictly, in eval mode."""
    from e2evision.training.build import build_module

    try:
        module = build_module(cfg, shape, task, n_classes)
    except (TypeError, ValueError) as err:
        raise RunDirError(f"{run / CONFIG_FILE}: cannot build model {cfg.model.name!r}: {err}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RunDirError(
            f"{weights_path}: does not fit {cfg.model.name} as configured in config.yaml: {err}"
        ) from None
    return module.eval()


def _check_normalizer(normalizer: Any, norm: dict[str, Any], path: Path) -> None:
    """normalizer.json (the contract file) and the buffers in the weights must agree."""
    loaded = normalizer.to_dict()
    for key in ("mode", "zero_suppression", "clip", "per_sample", "log1p"):
        if key in norm and norm[key] != loaded[key]:
            raise RunDirError(f"{path}: {key} {norm[key]!r} disagrees with config.yaml's preprocess ({loaded[key]!r})")
    for key in ("centre", "scale", "channel_scale"):
        want = norm.get(key)
        if want is None and key == "channel_scale":
            want = [1.0] * len(loaded[key])
        if len(want) != len(loaded[key]) or not np.allclose(want, loaded[key], rtol=1e-6, atol=0):
            raise RunDirError(f"{path}: {key} {want} disagrees with the weights' normaliser buffers {loaded[key]}")
