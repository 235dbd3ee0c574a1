"""Load one fold of a run directory as PyTorch modules: the model, its normaliser and geometry.

A fold is rebuilt exactly as the runner built it (same registry call, same normaliser settings from
``normalizer.json``) and its ``model.safetensors`` is loaded strictly, so that what is exported is
what was trained. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from e2evision.export.errors import ExportError


@dataclass
class LoadedFold:
    """One trained fold, ready to run on raw images (``module``) or to export (``model``, ``geometry``)."""

    run_dir: Path
    fold: int
    fold_reason: str
    config: Any  # ExperimentConfig
    module: nn.Module  # the training module (ImageModule): raw images in, normaliser included
    model: nn.Module
    normalizer: nn.Module
    geometry: nn.Module
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


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as err:
        raise ExportError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return data


def _fold_dirs(run_dir: Path) -> list[int]:
    folds = []
    for d in run_dir.glob("fold_*"):
        suffix = d.name.removeprefix("fold_")
        if d.is_dir() and suffix.isdigit() and (d / "model.safetensors").is_file():
            folds.append(int(suffix))
    return sorted(folds)


#: the runner's monitor -> (metrics.json per-fold list, whether larger is better)
_FOLD_METRIC = {"val_auc": ("fold_auc", True), "val_mae": ("fold_mae", False)}


def choose_fold(run_dir: str | Path, fold: int | None = None) -> tuple[int, str]:
    """The fold to export and why: ``fold`` if given, else the best by the run's own monitor.

    The monitor is ``metrics.json``'s ``monitor`` (``val_auc``: highest ``fold_auc``, binary and
    multi-class; ``val_mae``: lowest ``fold_mae``, regression), each the out-of-fold value of the
    best epoch; an interrupted run without metrics.json falls back to the best monitored value in
    each ``fold_K/fold.json`` history.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ExportError(f"{run}: run directory not found")
    if (run / "ensemble.json").is_file():
        from e2evision.export.ensemble import stacked_ensemble_error

        raise stacked_ensemble_error(run)
    available = _fold_dirs(run)
    if not available:
        raise ExportError(f"{run}: no fold_K/model.safetensors in this run directory (did training finish a fold?)")
    if fold is not None:
        if fold not in available:
            raise ExportError(f"{run}: fold {fold} has no model.safetensors; folds available: {available}")
        return fold, f"fold {fold} (asked for)"
    metrics_path = run / "metrics.json"
    metrics = _read_json(metrics_path, "metrics.json") if metrics_path.is_file() else {}
    default = "val_mae" if metrics.get("task") == "regression" else "val_auc"
    monitor = str(metrics.get("monitor") or default)
    key, higher = _FOLD_METRIC.get(monitor, ("fold_auc", True))
    what = "validation AUC" if higher else "validation MAE"
    values = metrics.get(key)
    if isinstance(values, list) and values and all(isinstance(a, (int, float)) for a in values):
        order = np.argsort(values)[::-1] if higher else np.argsort(values, kind="stable")
        ranked = [int(k) for k in order if k in available]
        if ranked:
            best = ranked[0]
            listing = ", ".join(f"{a:.4f}" for a in values)
            return best, (f"fold {best}: best {what} {values[best]:.4f} "
                          f"(metrics.json {key}: {listing})")
    scores = {}
    for k in available:
        info_path = run / f"fold_{k}" / "fold.json"
        if info_path.is_file():
            hist = _read_json(info_path, "fold.json").get("history") or []
            vals = [h[monitor] for h in hist
                    if isinstance(h, dict) and isinstance(h.get(monitor), (int, float))]
            if vals:
                scores[k] = max(vals) if higher else min(vals)
    if scores:
        pick = max if higher else min
        best = pick(scores, key=lambda k: scores[k])
        return best, (f"fold {best}: best {what} {scores[best]:.4f} "
                      "(fold.json histories; metrics.json absent)")
    return available[0], f"fold {available[0]}: no {what} recorded, first fold with weights"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_fold(run_dir: str | Path, fold: int | None = None) -> LoadedFold:
    """Rebuild fold ``fold`` (default: best by the run's monitored metric) of ``run_dir``, in eval
    mode on the CPU.

    The module comes from the runner's own ``build_module`` and the weights load strictly, so the
    exported model is the trained one; ``normalizer.json`` must agree with the loaded buffers.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from e2evision.config import load_config
    from e2evision.training.artifacts import build_module

    run = Path(run_dir)
    k, reason = choose_fold(run, fold)
    fold_dir = run / f"fold_{k}"
    try:
        cfg = load_config(run / "config.yaml")
    except (ValueError, FileNotFoundError) as err:
        raise ExportError(f"{run / 'config.yaml'}: {err}") from None
    run_info = _read_json(run / "run.json", "run.json")
    metrics = _read_json(run / "metrics.json", "metrics.json") if (run / "metrics.json").is_file() else None
    data = run_info.get("data") or {}
    shape = data.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise ExportError(f"{run / 'run.json'}: data.image_shape must be [C, H, W], got {shape!r}")
    c, h, w = shape
    channel_names = list(data.get("channels") or [f"channel_{i}" for i in range(c)])
    task = str((metrics or {}).get("task") or data.get("task") or "binary")
    class_names = list((metrics or {}).get("class_names") or data.get("class_names") or [])
    n_classes = len(class_names) if task == "multiclass" else 2

    norm_path = fold_dir / "normalizer.json"
    norm = _read_json(norm_path, "normalizer.json")
    for key in ("mode", "centre", "scale"):
        if key not in norm:
            raise ExportError(f"{norm_path}: missing field {key!r}")
    weights_path = fold_dir / "model.safetensors"
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError) as err:
        raise ExportError(f"{weights_path}: cannot read the weights ({err})") from None
    if "normalizer.channel_scale" not in state:  # runs from before per-channel scale factors existed
        state["normalizer.channel_scale"] = torch.tensor(norm.get("channel_scale") or [1.0] * c, dtype=torch.float32)
    try:
        module = build_module(cfg, (c, h, w), task, n_classes)
    except (TypeError, ValueError) as err:
        raise ExportError(f"{run / 'config.yaml'}: cannot build model {cfg.model.name!r}: {err}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ExportError(f"{weights_path}: does not fit {cfg.model.name} as configured in config.yaml: {err}") from None
    module.eval()
    _check_normalizer(module.normalizer, norm, norm_path)

    model = module.model
    num_scalars = int(getattr(getattr(model, "head", None), "num_scalars", 0) or 0)
    head = state.get("model.head.fc.weight")
    num_outputs = int(head.shape[0]) if head is not None else (n_classes if task == "multiclass" else 1)
    names = list(data.get("model_scalars") or cfg.data.scalars or data.get("scalars") or [])
    scalar_names = names if len(names) == num_scalars else [f"scalar_{i}" for i in range(num_scalars)]
    if task == "binary" and not class_names:
        class_names = ["0", "1"]
    return LoadedFold(
        run_dir=run.resolve(), fold=k, fold_reason=reason, config=cfg, module=module, model=model,
        normalizer=module.normalizer, geometry=module.geometry, image_shape=(c, h, w), channel_names=channel_names,
        num_outputs=num_outputs, num_scalars=num_scalars, scalar_names=scalar_names, task=task,
        class_names=class_names, weights_path=weights_path.resolve(), weights_sha256=sha256_file(weights_path),
        run_info=run_info, metrics=metrics,
    )


def _check_normalizer(normalizer: nn.Module, norm: dict[str, Any], path: Path) -> None:
    """normalizer.json (the contract file) and the buffers in the weights must agree."""
    loaded = normalizer.to_dict()
    for key in ("mode", "zero_suppression", "clip", "per_sample", "log1p"):
        if key in norm and norm[key] != loaded[key]:
            raise ExportError(f"{path}: {key} {norm[key]!r} disagrees with config.yaml's preprocess ({loaded[key]!r})")
    for key in ("centre", "scale", "channel_scale"):
        want = norm.get(key)
        if want is None and key == "channel_scale":
            want = [1.0] * len(loaded[key])
        if len(want) != len(loaded[key]) or not np.allclose(want, loaded[key], rtol=1e-6, atol=0):
            raise ExportError(f"{path}: {key} {want} disagrees with the weights' normaliser buffers {loaded[key]}")


@torch.inference_mode()
def reference_raw(fold: LoadedFold, raw: np.ndarray, scalars: np.ndarray | None = None) -> np.ndarray:
    """The network's output before any link function, from raw images, normaliser included.

    ``(N, num_outputs)`` float32: logits for classification, the scaled target for regression.
    Without scalar inputs this is the training module's own ``raw``; with them, the same
    composition (normaliser → geometry → model) with the scalars passed to the model.
    """
    x = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    if fold.num_scalars == 0:
        if scalars is not None and np.size(scalars):
            raise ExportError("this model takes no scalar inputs")
        out = fold.module.raw(x)
    else:
        if scalars is None:
            raise ExportError(f"this model takes {fold.num_scalars} scalar inputs ({', '.join(fold.scalar_names)}): pass them")
        s = torch.from_numpy(np.ascontiguousarray(scalars, dtype=np.float32))
        out = fold.module.raw(x, s)  # both normalisers, geometry, model: what training ran
    return out.reshape(x.shape[0], -1).float().numpy()


def read_test_batch(fold: LoadedFold, n: int, data: list[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The first ``n`` test-split samples of the run's data: raw images, scalars, stored scores.

    The stored scores are this fold's test probabilities from ``predictions.npz`` (``None`` when
    the run has none), so that callers can check that the loaded fold reproduces training.
    """
    from e2evision.datasets import DatasetError
    from e2evision.training.artifacts import model_scalars, open_experiment_data

    cfg = fold.config
    pred_path = fold.run_dir / "predictions.npz"
    stored = None
    if pred_path.is_file():
        with np.load(pred_path, allow_pickle=False) as pred:
            index = pred["test_index"][:n]
            if "test_fold_scores" in pred.files and fold.fold < pred["test_fold_scores"].shape[0]:
                stored = pred["test_fold_scores"][fold.fold][:n].astype(np.float64)
    else:
        index = None
    paths = list(data) if data else list(cfg.data.paths)
    try:
        reader = open_experiment_data(cfg, paths)
    except (DatasetError, FileNotFoundError, ValueError) as err:
        raise ExportError(f"cannot open the run's data {paths} to check the export on real inputs ({err}); "
                          "pass --data with the files' new location") from None
    with reader:
        if tuple(reader.image_shape) != fold.image_shape:
            raise ExportError(f"the data {paths} has images of shape {tuple(reader.image_shape)}, "
                              f"the run was trained on {fold.image_shape}")
        if index is None:  # no predictions.npz: the first samples of the data
            index = np.arange(min(n, reader.n_samples))
        raw, _ = reader.read(index)
        scalars = model_scalars(reader, cfg, index) if fold.num_scalars else None
    return np.ascontiguousarray(raw, dtype=np.float32), scalars, stored
