"""What scores a batch of raw inputs: a run's folds (their mean, as the runner evaluates the test
split, or one fold), or an exported model run by its own runtime after its ``preprocess.json``.

Both expose the same :class:`ModelContract` (what the data must look like) and
``score(images, scalars) -> float64 scores``: ``(N,)`` probabilities of label 1 (binary),
``(N, K)`` class probabilities (multi-class) or ``(N,)`` predictions in target units (regression).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2evision.datasets.task import get_task
from e2evision.export.errors import ExportError
from e2evision.rundir import CONFIG_FILE, ENSEMBLE_FILE, RUN_FILE, fold_numbers, is_ensemble


class ScorerError(ValueError):
    """A model cannot be loaded for scoring; the message names the file and the fix."""


@dataclass
class ModelContract:
    """The inputs a model was trained on, checked against the data before anything is scored."""

    source: str  # the file that states the contract (run.json or preprocess.json)
    image_shape: tuple[int, int, int]
    channel_names: list[str]
    scalar_names: list[str]
    task: str
    class_names: list[str]
    data_format: str | None = None  # the run's reader format; None: detect from the files
    data_features: str | None = None  # the run's data.features (lens feature table)
    reader_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


class RunScorer:
    """The folds of a finished run: the mean of their scores (default) or one fold's.

    The runner's test scores are ``mean_k scores_k`` with each fold's ``ImageModule.scores`` in
    float32, averaged in float64 (the trainer's ``predict``); this is the same computation.
    """

    def __init__(
        self, run_dir: str | os.PathLike[str], fold: int | None = None, device: str | torch.device | None = None
    ) -> None:
        from e2evision.export.run import load_fold

        run = Path(run_dir)
        if not (run / CONFIG_FILE).is_file():
            raise ScorerError(
                f"{run}: not a run directory (config.yaml is missing); pass a run "
                "from `e2evision train` or an exported model file"
            )
        if is_ensemble(run):
            raise ScorerError(
                f"{run / ENSEMBLE_FILE}: an ensemble of finished runs has no model of "
                "its own; predict with each member run and apply ensemble.json's "
                "'combiner' to their scores"
            )
        available = fold_numbers(run)
        folds = available if fold is None else [fold]
        try:
            self.folds = [load_fold(run, k) for k in folds]
        except ExportError as err:
            raise ScorerError(str(err)) from None
        if not self.folds:
            raise ScorerError(f"{run}: no fold_K/model.safetensors; did training finish a fold?")
        first = self.folds[0]
        expected = int(first.config.train.folds)
        if fold is None and len(available) != expected:
            raise ScorerError(
                f"{run}: the fold ensemble needs all {expected} folds (train.folds), "
                f"found {available}; finish the run with --resume or pass --fold K"
            )
        self.device = torch.device(device) if device is not None else _default_device(first.config)
        for f in self.folds:
            f.module.to(self.device)
        cfg = first.config
        self.contract = ModelContract(
            source=str(run / RUN_FILE),
            image_shape=first.image_shape,
            channel_names=first.channel_names,
            scalar_names=list(first.scalar_names),
            task=first.task,
            class_names=first.class_names,
            data_format=cfg.data.format,
            data_features=cfg.data.features,
            reader_kwargs=dict(cfg.data.kwargs),
            description=(
                f"the mean of folds {[f.fold for f in self.folds]} of {run}"
                if fold is None
                else f"fold {fold} of {run}"
            ),
        )

    @torch.no_grad()
    def score(self, images: np.ndarray, scalars: np.ndarray | None) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        s = None
        if scalars is not None:
            s = torch.from_numpy(np.ascontiguousarray(scalars, np.float32)).to(self.device)
        total: np.ndarray | None = None
        for f in self.folds:
            part = f.module.scores(x, s).float().cpu().numpy().astype(np.float64)
            total = part if total is None else total + part
        assert total is not None
        return total / len(self.folds)


class ExportScorer:
    """An exported model (ONNX, TorchScript, AOTInductor) fed through its ``preprocess.json``."""

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        from e2evision.export.contract import FILE_NAME, read_contract
        from e2evision.export.exporters import FORMATS, runner_for

        path = Path(model_path)
        if not path.is_file():
            raise ScorerError(f"{path}: model file not found")
        fmt = next((k for k, suffix in FORMATS.items() if path.suffix == suffix), None)
        if fmt is None:
            raise ScorerError(
                f"{path}: not an exported model (expected {', '.join(FORMATS.values())}) or a run directory"
            )
        try:
            self.preprocess = read_contract(path.parent / FILE_NAME)
            self._run = runner_for(
                fmt,
                path,
                [s["name"] for s in self.preprocess["inputs"]],
                [s["name"] for s in self.preprocess["outputs"]],
            )
        except ExportError as err:
            raise ScorerError(str(err)) from None
        except ImportError as err:  # onnxruntime for an ONNX file
            from e2evision.utils.extras import missing_extra

            raise missing_extra("Scoring an ONNX model", "export", err) from None
        inputs = {s["kind"]: s for s in self.preprocess["inputs"]}
        image = inputs["image"]
        outputs = self.preprocess["outputs"]
        self.task = str(self.preprocess.get("model", {}).get("task", "binary"))
        self._key = get_task(self.task).score_key
        if self._key not in [o["name"] for o in outputs]:
            raise ScorerError(f"{path.parent / FILE_NAME}: outputs lack {self._key!r}")
        classes = next(o.get("classes") for o in outputs if o["name"] == self._key) or []
        self.contract = ModelContract(
            source=str(path.parent / FILE_NAME),
            image_shape=tuple(int(v) for v in image["shape"][1:]),  # type: ignore[arg-type]
            channel_names=list(image.get("channels") or []),
            scalar_names=list(inputs["scalars"]["names"]) if "scalars" in inputs else [],
            task=self.task,
            class_names=list(classes),
            description=f"the {fmt} export {path}",
            **_reader_settings(self.preprocess),
        )

    def score(self, images: np.ndarray, scalars: np.ndarray | None) -> np.ndarray:
        from e2evision.export.contract import preprocess_inputs

        raw = {"image": images, **({"scalars": scalars} if scalars is not None else {})}
        out = self._run(preprocess_inputs(self.preprocess, raw))[self._key].astype(np.float64)
        return out if get_task(self.task).is_multiclass else out.reshape(-1)


def _reader_settings(preprocess: dict[str, Any]) -> dict[str, Any]:
    """How the training data was read: the contract's ``data`` block (fold-ensemble exports), else
    the source run's config.yaml when it is still there, else nothing (the format is detected)."""
    data = preprocess.get("data")
    if data is None:
        cfg_path = Path(str(preprocess.get("source", {}).get("run_dir", ""))) / CONFIG_FILE
        if not cfg_path.is_file():
            return {}
        from e2evision.config import load_config

        d = load_config(cfg_path).data
        data = {"format": d.format, "kwargs": dict(d.kwargs), "features": d.features}
    return {
        "data_format": data.get("format"),
        "reader_kwargs": dict(data.get("kwargs") or {}),
        "data_features": data.get("features"),
    }


def open_scorer(
    model: str | os.PathLike[str], fold: int | None = None, device: str | torch.device | None = None
) -> RunScorer | ExportScorer:
    """A run directory (its fold ensemble, or ``fold``) or an exported model file."""
    path = Path(model)
    if path.is_dir():
        return RunScorer(path, fold, device)
    if fold is not None:
        raise ScorerError(f"{path}: --fold applies to a run directory, not to an exported model")
    return ExportScorer(path)


def _default_device(cfg: Any) -> torch.device:
    """Where the runner evaluated: the GPU when there is one and the config allows it."""
    use_gpu = torch.cuda.is_available() and cfg.train.accelerator not in ("cpu",)
    return torch.device("cuda" if use_gpu else "cpu")
