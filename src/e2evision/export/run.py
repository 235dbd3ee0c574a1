"""A run directory's fold for export: :func:`e2evision.rundir.load_fold` with the export layer's
errors, and the test inputs and reference outputs an export is verified against.

A fold is rebuilt exactly as the runner built it (see :mod:`e2evision.rundir.fold`), so that what
is exported is what was trained. Nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from e2evision import rundir
from e2evision.export.errors import ExportError
from e2evision.rundir import LoadedFold, sha256_file
from e2evision.utils.io import open_npz

__all__ = ["LoadedFold", "choose_fold", "load_fold", "read_test_batch", "reference_raw", "sha256_file"]


@contextmanager
def _as_export_error() -> Iterator[None]:
    """The run directory's errors, raised as the export layer's one exception type."""
    try:
        yield
    except rundir.RunDirError as err:
        raise ExportError(str(err)) from None


def _refuse_stacked_ensemble(run: Path) -> None:
    if rundir.is_ensemble(run):
        from e2evision.export.ensemble import stacked_ensemble_error

        raise stacked_ensemble_error(run)


def choose_fold(run_dir: str | Path, fold: int | None = None) -> tuple[int, str]:
    """The fold to export and why: ``fold`` if given, else the best by the run's own monitor
    (see :func:`e2evision.rundir.choose_fold`)."""
    _refuse_stacked_ensemble(Path(run_dir))
    with _as_export_error():
        return rundir.choose_fold(run_dir, fold)


def load_fold(run_dir: str | Path, fold: int | None = None) -> LoadedFold:
    """Rebuild fold ``fold`` (default: best by the run's monitored metric) of ``run_dir``, in eval
    mode on the CPU (see :func:`e2evision.rundir.load_fold`); problems are ExportErrors."""
    _refuse_stacked_ensemble(Path(run_dir))
    with _as_export_error():
        return rundir.load_fold(run_dir, fold)


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
            raise ExportError(
                f"this model takes {fold.num_scalars} scalar inputs ({', '.join(fold.scalar_names)}): pass them"
            )
        s = torch.from_numpy(np.ascontiguousarray(scalars, dtype=np.float32))
        out = fold.module.raw(x, s)  # both normalisers, geometry, model: what training ran
    return out.reshape(x.shape[0], -1).float().numpy()


def read_test_batch(
    fold: LoadedFold, n: int, data: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The first ``n`` test-split samples of the run's data: raw images, scalars, stored scores.

    The stored scores are this fold's test probabilities from ``predictions.npz`` (``None`` when
    the run has none), so that callers can check that the loaded fold reproduces training.
    """
    from e2evision.datasets import DatasetError
    from e2evision.datasets.experiment import model_scalars, open_experiment_data

    cfg = fold.config
    pred_path = fold.run_dir / rundir.PREDICTIONS_FILE
    stored = None
    if pred_path.is_file():
        with open_npz(pred_path) as pred:
            index = pred["test_index"][:n]
            if "test_fold_scores" in pred.files and fold.fold < pred["test_fold_scores"].shape[0]:
                stored = pred["test_fold_scores"][fold.fold][:n].astype(np.float64)
    else:
        index = None
    paths = list(data) if data else list(cfg.data.paths)
    try:
        reader = open_experiment_data(cfg, paths)
    except (DatasetError, FileNotFoundError, ValueError) as err:
        raise ExportError(
            f"cannot open the run's data {paths} to check the export on real inputs ({err}); "
            "pass --data with the files' new location"
        ) from None
    with reader:
        if tuple(reader.image_shape) != fold.image_shape:
            raise ExportError(
                f"the data {paths} has images of shape {tuple(reader.image_shape)}, "
                f"the run was trained on {fold.image_shape}"
            )
        if index is None:  # no predictions.npz: the first samples of the data
            index = np.arange(min(n, reader.n_samples))
        raw, _ = reader.read(index)
        scalars = model_scalars(reader, cfg, index) if fold.num_scalars else None
    return np.ascontiguousarray(raw, dtype=np.float32), scalars, stored
