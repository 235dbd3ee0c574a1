"""Saliency maps (gradient × input) of a trained fold: written by the trainer, drawn by the report.

Only safetensors and JSON/YAML are read, never a pickle, so a run directory received from
someone else can be inspected safely.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2evision.datasets.task import get_task
from e2evision.training.module import ImageModule


def pick_examples(labels: np.ndarray, task: str, per_class: int = 2) -> np.ndarray:
    """Positions of a few examples of each class (regression: spread over the target's quantiles)."""
    labels = np.asarray(labels)
    if get_task(task).is_regression:
        order = np.argsort(labels, kind="stable")
        k = min(len(order), 2 * per_class)
        return order[np.linspace(0, len(order) - 1, k).round().astype(int)] if k else order[:0]
    picks = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def gradient_x_input(
    module: ImageModule, x: np.ndarray, labels: np.ndarray, scalars: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
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
        if get_task(module.task).is_multiclass:
            picked = raw.gather(1, torch.as_tensor(labels, device=device).long().view(-1, 1)).squeeze(1)
        else:
            picked = raw
        picked.sum().backward()
    grad = xt.grad if xt.grad is not None else torch.zeros_like(xt)  # a model that ignores the image
    with torch.no_grad():
        scores = module.scores(xt.detach(), st).float().cpu().numpy()
    return (grad * xt).detach().cpu().numpy(), scores


def write_saliency(
    module: ImageModule,
    images: np.ndarray,
    labels: np.ndarray,
    index: np.ndarray,
    out: str | os.PathLike[str],
    *,
    channel_names: list[str],
    class_names: list[str],
    scalars: np.ndarray | None = None,
) -> Path:
    """Compute gradient × input for ``images`` and save everything the report draws (no pickles)."""
    from e2evision.utils import atomic_path

    sal, scores = gradient_x_input(module, images, labels, scalars)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            images=np.asarray(images, np.float32),
            saliency=sal.astype(np.float32),
            labels=np.asarray(labels),
            scores=scores,
            index=np.asarray(index, np.int64),
            channel_names=np.asarray(channel_names, dtype=str),
            class_names=np.asarray(class_names, dtype=str),
        )
    return Path(out)


def saliency_from_run_dir(run_dir: str | os.PathLike[str], per_class: int = 2) -> dict[str, Any]:
    """Saliency for a run that has none saved: fold 0's weights on a few test images re-read from
    the data files named in ``run.json`` (which must still exist)."""
    from e2evision.datasets.experiment import model_scalars, open_experiment_data
    from e2evision.rundir import PREDICTIONS_FILE, RUN_FILE, load_fold, read_json

    run = Path(run_dir)
    fold = load_fold(run, 0)
    module, cfg = fold.module, fold.config
    with np.load(run / PREDICTIONS_FILE, allow_pickle=False) as npz:
        test_index, test_label = npz["test_index"], npz["test_label"]
    info = read_json(run / RUN_FILE)
    reader = open_experiment_data(cfg, info["data"]["paths"])
    pos = pick_examples(test_label, module.task, per_class)
    idx = test_index[pos]
    x, y = reader.read(idx)  # in the order asked for
    sal, scores = gradient_x_input(module, x, y, model_scalars(reader, cfg, idx))
    return {
        "images": x,
        "saliency": sal,
        "labels": y,
        "scores": scores,
        "index": idx,
        "channel_names": list(reader.channel_names),
        "class_names": list(reader.class_names),
    }
