"""Export a run's fold ensemble as one model: what the run's test metrics evaluated.

The runner's test score is the mean over the K folds of each fold's score (probability, or
prediction in target units). Each fold fits its own normaliser on its own training folds, so no
single ``preprocess.json`` normalisation serves all of them: the graph takes *raw* inputs and runs
every fold's training module (normaliser, geometry, model, link) inside, then averages. Its
contract therefore states an identity preprocessing. Verified like a single fold: the exported
file, run by its own runtime, against the mean of the per-fold PyTorch modules.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from e2evision.datasets.task import get_task
from e2evision.export.contract import FILE_NAME, build_contract, preprocess_inputs
from e2evision.export.errors import ExportError
from e2evision.export.exporters import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    ExportResult,
    check_export_target,
    stage_verify_publish,
)
from e2evision.export.run import LoadedFold, load_fold, read_test_batch
from e2evision.rundir import ENSEMBLE_FILE, PREDICTIONS_FILE, fold_numbers, is_ensemble
from e2evision.utils.io import open_npz


class FoldScores(nn.Module):
    """A fold's ``ImageModule.scores`` as a plain module (TorchScript cannot trace Lightning's).

    The training module's own ``raw``/``scores`` code runs on this object, which carries the
    module's sub-modules, buffers and plain settings, so preprocessing added to the training
    module (new normaliser steps, geometry) is exported without being restated here.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        from torchmetrics import Metric

        for name, child in module.named_children():
            if not isinstance(child, Metric):
                self.add_module(name, child)
        for name, buf in module.named_buffers(recurse=False):
            self.register_buffer(name, buf)
        for name, value in vars(module).items():  # plain settings read by raw(): task, flags, ...
            if not name.startswith("_") and not hasattr(self, name):
                object.__setattr__(self, name, value)
        self._scores = type(module).scores
        self._raw = type(module).raw

    def raw(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        return self._raw(self, x, scalars)

    def scores(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        return self._scores(self, x, scalars)


class FoldEnsembleGraph(nn.Module):
    """Raw image → mean over folds of ``ImageModule.scores`` → ``(N, outputs)``."""

    def __init__(self, modules: list[nn.Module], task: str) -> None:
        super().__init__()
        self.folds = nn.ModuleList(FoldScores(m) for m in modules)
        self.task = task
        self.per_class = get_task(task).is_multiclass  # (N, K) scores already; else (N,) → (N, 1)

    def _mean(self, outs: list[torch.Tensor]) -> tuple[torch.Tensor]:
        mean = torch.stack(outs).mean(dim=0)
        return (mean if self.per_class else mean.unsqueeze(-1),)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return self._mean([m.scores(image) for m in self.folds])


class FoldEnsembleGraphWithScalars(FoldEnsembleGraph):
    """The same for models that take scalar inputs (raw, normalised inside by each fold)."""

    def forward(
        self,
        image: torch.Tensor,  # type: ignore[override]
        scalars: torch.Tensor,
    ) -> tuple[torch.Tensor]:
        return self._mean([m.scores(image, scalars) for m in self.folds])


def stacked_ensemble_error(run: Path) -> ExportError:
    """Why an ``e2evision ensemble`` run directory is not exported as one graph."""
    import json

    spec = json.loads((run / ENSEMBLE_FILE).read_text(encoding="utf-8"))
    return ExportError(
        f"{run / ENSEMBLE_FILE}: a '{spec.get('method')}' ensemble of finished runs cannot be "
        "exported as one graph: its combiner was fitted on the members' out-of-fold scores, "
        "members may be physics baselines (gradient-boosted trees on expert features, no PyTorch "
        "graph) and stack/gbdt combiners read dataset scalars; export each image member with "
        "--ensemble and apply ensemble.json's 'combiner' to their outputs"
    )


def load_all_folds(run_dir: str | os.PathLike[str]) -> list[LoadedFold]:
    """Every fold of a finished run; an ensemble of fewer folds than trained is an error."""
    run = Path(run_dir)
    if is_ensemble(run):
        raise stacked_ensemble_error(run)
    available = fold_numbers(run) if run.is_dir() else []
    folds = [load_fold(run, k) for k in available]
    if not folds:
        raise ExportError(f"{run}: no fold_K/model.safetensors in this run directory (did training finish a fold?)")
    expected = int(folds[0].config.train.folds)
    if len(folds) != expected:
        raise ExportError(
            f"{run}: the fold ensemble needs all {expected} folds (train.folds), "
            f"found {available}; finish the run with `e2evision train ... --resume`"
        )
    return folds


@torch.inference_mode()
def ensemble_reference(folds: list[LoadedFold], raw: np.ndarray, scalars: np.ndarray | None) -> np.ndarray:
    """Mean of the per-fold modules' scores in float64, ``(N, outputs)`` (the ground truth)."""
    x = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    s = None
    if scalars is not None:
        s = torch.from_numpy(np.ascontiguousarray(scalars, dtype=np.float32))
    parts = [f.module.scores(x, s).double().numpy() for f in folds]
    mean = np.mean(parts, axis=0)
    return mean if mean.ndim == 2 else mean[:, None]


def _identity(spec: dict[str, Any] | None, n: int) -> dict[str, Any] | None:
    """The input's preprocess block turned into the identity (the graph normalises inside)."""
    if spec is None:
        return None
    known = {
        "mode": "none",
        "zero_suppression": None,
        "channel_scale": [1.0] * n,
        "centre": [0.0] * n,
        "scale": [1.0] * n,
        "clip": None,
    }
    return {k: (v if k == "order" else known.get(k)) for k, v in spec.items()}


def ensemble_contract(folds: list[LoadedFold]) -> dict[str, Any]:
    """preprocess.json of the fold ensemble: raw inputs, the averaged score as the only output."""
    first = folds[0]
    contract = build_contract(first)
    for spec in contract["inputs"]:
        n = int(spec["shape"][1])
        spec["preprocess"] = _identity(spec.get("preprocess"), n)
        spec["preprocess_in_graph"] = "each fold's own normaliser (fitted on its training folds)"
    k = len(folds)
    task = get_task(first.task)
    if task.is_regression:
        out = {
            "name": "value",
            "kind": "value",
            "dtype": "float32",
            "shape": [-1, 1],
            "meaning": f"mean over the {k} folds of the prediction in the target's units (the run's test score)",
        }
    else:
        link = task.link
        out = {
            "name": "prob",
            "kind": "probability",
            "dtype": "float32",
            "shape": [-1, first.num_outputs],
            "meaning": f"mean over the {k} folds of {link}(logit): what the run's predictions.npz test_score holds",
            "classes": first.class_names or None,
        }
    contract["outputs"] = [out]
    cfg = first.config.data
    contract["data"] = {"format": cfg.format, "kwargs": dict(cfg.kwargs), "features": cfg.features}
    digest = hashlib.sha256("".join(f.weights_sha256 for f in folds).encode()).hexdigest()
    contract["source"].update(
        fold=None,
        folds=[f.fold for f in folds],
        fold_choice="fold ensemble (mean of all folds)",
        weights=[str(f.weights_path.relative_to(f.run_dir)) for f in folds],
        weights_sha256=digest,
    )
    return contract


def export_ensemble(
    run_dir: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    *,
    data: list[str] | None = None,
    n_check: int = 64,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> ExportResult:
    """Export the mean of all folds of ``run_dir`` as one ``fmt`` model at ``out`` (verified)."""
    t0 = time.perf_counter()
    out_path = check_export_target(fmt, out, n_check)
    if fmt == "onednn":
        raise ExportError(
            "a fold ensemble holds every fold's own normaliser in its graph, which a oneDNN program cannot "
            "express: export the ensemble as torchscript, aoti or onnx, or one fold (--fold K) as onednn"
        )
    folds = load_all_folds(run_dir)
    first = folds[0]
    raw, scalars, _ = read_test_batch(first, n_check, data)
    n = raw.shape[0]
    if n == 0:
        raise ExportError(f"{run_dir}: no test samples to check the export on")
    key = get_task(first.task).score_key
    reference = {key: ensemble_reference(folds, raw, scalars).astype(np.float32)}
    notes: list[str] = []
    stored_diff = _check_stored(Path(run_dir), reference[key], n, atol, rtol, notes)

    contract = ensemble_contract(folds)
    input_names = [spec["name"] for spec in contract["inputs"]]
    raw_inputs = {"image": raw, **({"scalars": scalars} if scalars is not None else {})}

    def batch_of(rows: np.ndarray) -> dict[str, np.ndarray]:
        return preprocess_inputs(contract, {k: v[rows] for k, v in raw_inputs.items()})

    example = tuple(torch.from_numpy(batch_of(np.arange(2) % n)[name]) for name in input_names)
    cls = FoldEnsembleGraphWithScalars if first.num_scalars else FoldEnsembleGraph
    graph = cls([f.module for f in folds], first.task).eval()
    sizes, worst = stage_verify_publish(
        fmt,
        graph,
        example,
        input_names,
        [key],
        batch_of,
        reference,
        n,
        out_path,
        contract,
        f"{first.config.model.name} × {len(folds)} folds",
        "test-split samples of the run's data",
        atol,
        rtol,
        against="the mean of the folds' training modules on the same raw inputs (normalisers included)",
    )
    return ExportResult(
        format=fmt,
        path=out_path,
        preprocess_path=out_path.parent / FILE_NAME,
        fold=-1,
        fold_reason=f"the fold ensemble: mean of folds {[f.fold for f in folds]} (what the test metrics evaluated)",
        rows=n,
        batch_sizes=sizes,
        max_abs_diff=worst,
        stored_max_abs_diff=stored_diff,
        atol=atol,
        rtol=rtol,
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


def _check_stored(run: Path, ref: np.ndarray, n: int, atol: float, rtol: float, notes: list[str]) -> float | None:
    """The rebuilt ensemble must reproduce predictions.npz's test_score on the checked rows."""
    path = run / PREDICTIONS_FILE
    if not path.is_file():
        notes.append("predictions.npz is missing: not checked against training")
        return None
    with open_npz(path) as pred:
        stored = np.asarray(pred["test_score"][:n], dtype=np.float64).reshape(ref.shape)
    delta = np.abs(ref.astype(np.float64) - stored)
    if not (delta <= atol + rtol * np.abs(stored)).all():
        raise ExportError(
            f"{path}: the rebuilt fold ensemble does not reproduce the run's "
            f"test_score (max |Δ| {float(delta.max()):.3g}); the model code or its "
            "config changed since training"
        )
    return float(delta.max())
