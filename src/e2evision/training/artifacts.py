"""Reading a finished run back: a fold's model from its safetensors, and saliency maps.

Only safetensors and JSON/YAML are read here, never a pickle, so a run directory received from
someone else can be inspected safely.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from e2evision.config import ExperimentConfig, load_config
from e2evision.training.module import ImageModule

SALIENCY_FILE = "saliency.npz"


def open_experiment_data(cfg: ExperimentConfig, paths: list[str] | None = None) -> Any:
    """The reader of ``cfg.data`` (or of ``paths``), with its features table when one is configured."""
    from e2evision.datasets.feature_table import open_with_features

    return open_with_features(list(paths) if paths else cfg.data.paths, cfg.data.format, cfg.data.features,
                              **cfg.data.kwargs)


def model_scalars(reader: Any, cfg: ExperimentConfig, indices: np.ndarray) -> np.ndarray | None:
    """The raw scalar inputs (``data.scalars``) of ``indices``, or None for an image-only model."""
    if not cfg.data.scalars:
        return None
    from e2evision.datasets.feature_table import scalar_columns

    cols = scalar_columns(reader, cfg.data.scalars)
    return np.asarray(reader.read_scalars(indices), dtype=np.float32)[:, cols]


def build_module(cfg: ExperimentConfig, image_shape: tuple[int, int, int], task: str, num_classes: int = 2,
                 target_shift: float = 0.0, target_scale: float = 1.0) -> ImageModule:
    """The LightningModule of ``cfg`` for images of ``image_shape`` (C, H, W), untrained."""
    from e2evision.models import create_model
    from e2evision.transforms import ChannelNormalizer, TestTimeFlips, build_augment, build_geometry, output_size

    c, h, w = image_shape
    pp, aug = cfg.preprocess, cfg.augment
    normalizer = ChannelNormalizer(c, pp.normalize, pp.clip, pp.zero_suppression, pp.channel_scale,
                                   per_sample=pp.per_sample, log1p=pp.log1p)
    geometry = build_geometry(pp.resize, pp.crop, pp.pad)
    size = (h, w)
    if pp.lens_roi is not None:
        from torch import nn

        from e2evision.transforms.lensing import LensCanonicalize

        roi = LensCanonicalize(pp.lens_roi.size, rotate=pp.lens_roi.rotate, method=pp.lens_roi.method)
        geometry = nn.Sequential(roi, geometry)
        size = (pp.lens_roi.size, pp.lens_roi.size)
    n_scalars = len(cfg.data.scalars)
    scalar_normalizer = ChannelNormalizer(n_scalars, pp.scalar_normalize) if n_scalars else None
    outputs = num_classes if task == "multiclass" else 1
    kwargs = dict(cfg.model.kwargs)
    if n_scalars:
        if kwargs.get("num_scalars", n_scalars) != n_scalars:
            raise ValueError(f"model.kwargs.num_scalars={kwargs['num_scalars']} but data.scalars lists {n_scalars}")
        kwargs["num_scalars"] = n_scalars
    model = create_model(cfg.model.name, in_chans=c, img_size=output_size(size, pp.resize, pp.crop, pp.pad),
                         num_outputs=outputs, **kwargs)
    augment = build_augment(aug.flip_eta, aug.flip_phi, aug.p, aug.roll_phi, aug.rot90, aug.flip_about)
    test_time = TestTimeFlips(aug.flip_eta, aug.flip_phi, aug.flip_about) if aug.test_time else None
    return ImageModule(model, normalizer, cfg.train, augment, geometry, task=task,  # type: ignore[arg-type]
                       num_classes=num_classes, target_shift=target_shift, target_scale=target_scale,
                       scalar_normalizer=scalar_normalizer, test_time=test_time)


def load_fold_module(run_dir: str | os.PathLike[str], fold: int = 0) -> ImageModule:
    """Fold ``fold``'s best weights of a finished run, in eval mode on the CPU.

    Needs ``config.yaml``, ``run.json`` (image shape), ``metrics.json`` (task, classes) and
    ``fold_K/model.safetensors``; every missing piece is an error that names it.
    """
    run = Path(run_dir)
    for name in ("config.yaml", "run.json", "metrics.json", f"fold_{fold}/model.safetensors"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run}: {name} is missing, cannot rebuild fold {fold}'s model")
    cfg = load_config(run / "config.yaml")
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    shape = info.get("data", {}).get("image_shape")
    if not shape or len(shape) != 3:
        raise ValueError(f"{run / 'run.json'}: data.image_shape is missing or not (C, H, W)")
    task = str(metrics.get("task", "binary"))
    n_classes = len(metrics.get("class_names") or []) or 2
    module = build_module(cfg, tuple(int(s) for s in shape), task, n_classes)  # type: ignore[arg-type]
    module.load_state_dict(load_file(run / f"fold_{fold}" / "model.safetensors"))
    return module.eval()


def init_from_run(model: torch.nn.Module, run_dir: str | os.PathLike[str], fold: int = 0) -> str:
    """Initialise ``model`` from fold ``fold`` of a finished run (safetensors only); returns what was copied.

    * A hybrid model (``load_swin_weights``) from a Swin run takes the Swin stages it keeps, the
      final norm and, when the output sizes agree, the head: the published Hybrid EffSwin starts
      from a trained Swin.
    * Otherwise the architectures must match; every weight is copied, except a head whose output
      size differs (a new task), which keeps its fresh initialisation.
    """
    from e2evision.models.swin import SwinTransformer

    source = load_fold_module(run_dir, fold).model
    where = f"{run_dir} fold {fold}"
    same_head = _head_shapes(source) == _head_shapes(model)
    if hasattr(model, "load_swin_weights") and isinstance(source, SwinTransformer):
        try:
            model.load_swin_weights(source, head=same_head)  # type: ignore[operator]
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"model.init_from: {where} does not fit this hybrid: {err}") from None
        return f"Swin stages, norm{' and head' if same_head else ''} from {where}"
    theirs, mine = source.state_dict(), model.state_dict()
    skipped = [k for k in mine if k.startswith("head.") and k in theirs and theirs[k].shape != mine[k].shape]
    wanted = {k: v for k, v in theirs.items() if k not in skipped}
    bad = sorted(set(wanted) ^ (set(mine) - set(skipped)))
    bad += [k for k in wanted if k in mine and wanted[k].shape != mine[k].shape]
    if bad:
        raise ValueError(
            f"model.init_from: {where} holds a different architecture ({getattr(source, 'model_name', '?')}); "
            f"mismatched weights: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
        )
    model.load_state_dict(wanted, strict=False)
    return f"all weights{' but the head' if skipped else ''} from {where}"


def _head_shapes(model: torch.nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for n, p in model.named_parameters() if n.startswith("head.")]


def pick_examples(labels: np.ndarray, task: str, per_class: int = 2) -> np.ndarray:
    """Positions of a few examples of each class (regression: spread over the target's quantiles)."""
    labels = np.asarray(labels)
    if task == "regression":
        order = np.argsort(labels, kind="stable")
        k = min(len(order), 2 * per_class)
        return order[np.linspace(0, len(order) - 1, k).round().astype(int)] if k else order[:0]
    picks = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def gradient_x_input(module: ImageModule, x: np.ndarray, labels: np.ndarray,
                     scalars: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gradient × input of the output that decides each image (Shrikumar et al. 2016), and the scores.

    Binary: the signal logit; multi-class: the logit of the image's true class; regression: the
    prediction. Returns ``(saliency (N, C, H, W), scores)``; positive saliency pushes the output up.
    """
    module = module.eval()
    device = next(module.parameters()).device
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device).requires_grad_(True)
    st = None if scalars is None else torch.as_tensor(np.asarray(scalars, dtype=np.float32), device=device)
    with torch.enable_grad():
        raw = module.raw(xt, st).float()
        if module.task == "multiclass":
            picked = raw.gather(1, torch.as_tensor(labels, device=device).long().view(-1, 1)).squeeze(1)
        else:
            picked = raw
        picked.sum().backward()
    grad = xt.grad if xt.grad is not None else torch.zeros_like(xt)  # a model that ignores the image
    with torch.no_grad():
        scores = module.scores(xt.detach(), st).float().cpu().numpy()
    return (grad * xt).detach().cpu().numpy(), scores


def write_saliency(module: ImageModule, images: np.ndarray, labels: np.ndarray, index: np.ndarray,
                   out: str | os.PathLike[str], *, channel_names: list[str], class_names: list[str],
                   scalars: np.ndarray | None = None) -> Path:
    """Compute gradient × input for ``images`` and save everything the report draws (no pickles)."""
    from e2evision.utils import atomic_path

    sal, scores = gradient_x_input(module, images, labels, scalars)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=np.asarray(images, np.float32), saliency=sal.astype(np.float32),
                                labels=np.asarray(labels), scores=scores, index=np.asarray(index, np.int64),
                                channel_names=np.asarray(channel_names, dtype=str),
                                class_names=np.asarray(class_names, dtype=str))
    return Path(out)


def saliency_from_run_dir(run_dir: str | os.PathLike[str], per_class: int = 2) -> dict[str, Any]:
    """Saliency for a run that has none saved: fold 0's weights on a few test images re-read from
    the data files named in ``run.json`` (which must still exist)."""
    run = Path(run_dir)
    module = load_fold_module(run, 0)
    cfg = load_config(run / "config.yaml")
    with np.load(run / "predictions.npz", allow_pickle=False) as npz:
        test_index, test_label = npz["test_index"], npz["test_label"]
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    reader = open_experiment_data(cfg, info["data"]["paths"])
    pos = pick_examples(test_label, module.task, per_class)
    idx = test_index[pos]
    x, y = reader.read(idx)  # in the order asked for
    sal, scores = gradient_x_input(module, x, y, model_scalars(reader, cfg, idx))
    return {"images": x, "saliency": sal, "labels": y, "scores": scores, "index": idx,
            "channel_names": list(reader.channel_names), "class_names": list(reader.class_names)}
