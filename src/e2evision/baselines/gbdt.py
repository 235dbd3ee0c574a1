"""Gradient-boosted trees on expert features: the baseline an image model has to beat.

:func:`physics_baseline` takes the same experiment config as ``e2evision train`` and reproduces
its data selection exactly — the same stratified subsample, train+validation / test split and
K folds for the same seed — so the baseline's scores line up with every image model's sample by
sample (ensembles, DeLong's test). It computes expert features per sample (shower shapes for
electron/photon crops, jet observables plus the file's ``pt``/``m0`` for jet images, the lens
physics features of :mod:`e2evision.features.lensing` for DeepLense images), trains
scikit-learn's histogram gradient boosting on each fold and writes a run directory that the report
shows beside the image models. Binary and multi-class tasks (the three DeepLense classes) are
handled; the metrics are those of the image runs (:func:`e2evision.metrics.task_metrics`),
so ``metrics.json`` has the same keys.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.datasets import ImageDataset, open_dataset
from e2evision.datasets.split import fold_splits, split_indices
from e2evision.datasets.task import TASK_NAMES, Task, get_task
from e2evision.metrics import task_metrics
from e2evision.rundir import (
    FEATURES_FILE,
    write_arrays,
    write_config,
    write_metrics,
    write_predictions,
    write_run_info,
)
from e2evision.utils import data_fingerprint, package_versions

SHOWER_FORMATS = {"egamma", "egamma-hdf5"}
JET_FORMATS = {"quark-gluon", "quark-gluon-hdf5", "top", "top-mass"}
LENS_FORMATS = {"deeplense"}
#: tasks the baseline fits (regression: the top mass from the jet observables, pt, ieta, iphi)
TASKS = TASK_NAMES


def _source_format(reader: ImageDataset) -> str:
    return str(reader.source_format if reader.format == "store" else reader.format)  # type: ignore[attr-defined]


def _kind(reader: ImageDataset) -> str:
    fmt = _source_format(reader)
    if fmt in SHOWER_FORMATS:
        return "shower"
    if fmt in JET_FORMATS:
        return "jet"
    if fmt in LENS_FORMATS:
        return "lens"
    raise ValueError(
        f"no expert features are defined for the {fmt!r} format, so it has no physics baseline; features exist "
        f"for electron/photon crops ({', '.join(sorted(SHOWER_FORMATS))}), jet images "
        f"({', '.join(sorted(JET_FORMATS))}) and lensing images ({', '.join(sorted(LENS_FORMATS))})"
    )


def lens_feature_params(reader: ImageDataset) -> Any:
    """The lens-feature settings for ``reader``: defaults, with the simulator's pixel scale when its
    ``metadata.json`` is beside the images (as ``e2evision features`` does)."""
    from e2evision.features.lensing import LensFeatureParams
    from e2evision.features.lensing import metadata_pixel_scale as _metadata_pixel_scale

    scale = _metadata_pixel_scale([Path(p) for p in reader.paths])
    return LensFeatureParams() if scale is None else LensFeatureParams(pixel_scale_arcsec=scale)


def feature_names(reader: ImageDataset) -> list[str]:
    """Column names of :func:`feature_table` for ``reader`` (raises for a format without features).

    Lensing images get the physics features only: the DeepLense reader's ``axion_mass`` scalar is
    non-zero for the axion class alone, so it would hand the trees the label.
    """
    from e2evision.features import jet_images, lensing, shower_shapes

    kind = _kind(reader)
    if kind == "lens":
        return list(lensing.FEATURE_NAMES)
    return list(shower_shapes.NAMES if kind == "shower" else jet_images.NAMES) + list(reader.scalar_names)


def feature_table(
    reader: ImageDataset, indices: np.ndarray, batch: int = 64, progress: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Expert features (and, except for lensing, the reader's scalars) of ``indices``, batch by batch."""
    from e2evision.features import jet_images, lensing, shower_shapes

    kind = _kind(reader)
    names = feature_names(reader)
    lens_params = lens_feature_params(reader) if kind == "lens" else None
    rows = []
    chunks = range(0, len(indices), batch)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="features", unit="batch")
    pt_channels = None
    if kind == "jet" and reader.image_shape[0] == 8:
        pt_channels = [0, 3, 4]  # track pT, ECAL, HCAL: the energy-like channels of the 8-channel images
    for start in chunks:
        idx = np.asarray(indices[start : start + batch])
        x, _ = reader.read(idx)
        if kind == "lens":
            cols = lensing.lens_features(x, lens_params)
            rows.append(np.column_stack([np.asarray(cols[n], dtype=np.float64) for n in names]))
            continue
        f = (
            shower_shapes.shower_shape_features(x)
            if kind == "shower"
            else jet_images.jet_features(x, pt_channels=pt_channels)
        )
        rows.append(np.hstack([f, reader.read_scalars(idx).astype(np.float64)]))
    if not rows:
        return np.zeros((0, len(names))), names
    return np.vstack(rows), names


def _class_probabilities(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` laid out over all ``n_classes`` (a class absent from a fold scores 0);
    the positive-class column for a binary task, like the image runs' scores."""
    p = model.predict_proba(x)
    out = np.zeros((x.shape[0], n_classes), dtype=np.float64)
    out[:, np.asarray(model.classes_, dtype=np.int64)] = p
    return out[:, 1] if n_classes == 2 else out


def physics_baseline(cfg: Any, out_dir: str | os.PathLike[str], *, progress: bool = False) -> dict[str, Any]:
    """Cross-validated gradient boosting on expert features; writes a run directory, returns metrics.

    Binary tasks score the positive class (``(N,)``), multi-class tasks every class (``(N, K)``);
    ``metrics.json`` carries the keys the image runs write for the task (``task_metrics``).
    Regression fits the absolute error (the image runs' MAE) and predicts in target units. A
    format without expert features is a ``ValueError`` raised before anything is written.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    reader = open_dataset(cfg.data.paths, cfg.data.format, **cfg.data.kwargs)
    kind = _kind(reader)  # a format without features fails here, before anything is written
    task = _baseline_task(reader)
    class_names = [str(c) for c in reader.class_names]
    labels = reader.labels()
    trainval, test = split_indices(labels, cfg, task.name)
    out.mkdir(parents=True, exist_ok=True)
    selected = np.concatenate([trainval, test])
    feats, names = feature_table(reader, selected, progress=progress)
    t_fit = time.perf_counter()
    oof, oof_fold, test_fold_scores = _cross_fit(
        cfg, task, feats[: trainval.size], labels[trainval], feats[trainval.size :], task.n_classes(class_names)
    )
    fit_s = time.perf_counter() - t_fit
    test_score = test_fold_scores.mean(axis=0)
    scalar_names = list(reader.scalar_names)
    test_scalars = (
        reader.read_scalars(test).astype(np.float64) if scalar_names else np.zeros((test.size, 0), np.float64)
    )
    # the lens baseline does not use the reader's scalars (axion_mass names the class), so it does not bin in them
    binning = {} if kind == "lens" else dict(zip(scalar_names, test_scalars.T))
    metrics = {
        "name": f"{cfg.name}_baseline" if not cfg.name.endswith("baseline") else cfg.name,
        "model": "gbdt(expert features)",
        "task": task.name,
        "class_names": class_names,
        "features": names,
        "n_params": 0,
        **task_metrics(
            task,
            labels[trainval],
            oof,
            oof_fold,
            labels[test],
            test_score,
            seed=cfg.seed,
            class_names=class_names,
            scalars=binning,
        ),
        "train_time_s": fit_s,
        "wall_time_s": time.perf_counter() - t0,
        "n_trainval": int(trainval.size),
        "n_test": int(test.size),
        "epochs": [],
        "history": [],
    }
    if kind == "lens":
        metrics["feature_params"] = lens_feature_params(reader).to_dict()
    write_predictions(
        out,
        oof_score=oof,
        oof_label=labels[trainval],
        oof_fold=oof_fold,
        oof_index=trainval,
        test_score=test_score,
        test_label=labels[test],
        test_index=test,
        test_fold_scores=test_fold_scores,
        test_scalars=np.asarray(test_scalars, np.float32),
        scalar_names=np.asarray(scalar_names, dtype=str),
        class_names=np.asarray(class_names, dtype=str),
    )
    write_arrays(out / FEATURES_FILE, index=selected, features=feats, names=np.array(names))
    _write_provenance(out, cfg, reader, metrics["name"], task.name, class_names, trainval, test)
    # strict JSON: an infinite rejection (no background left) becomes null
    return write_metrics(out, metrics)


def _baseline_task(reader: ImageDataset) -> Task:
    """The reader's task, if the baseline fits it (a ValueError naming the data otherwise)."""
    if reader.task not in TASKS:
        raise ValueError(
            f"the physics baseline handles {', '.join(TASKS)} tasks; the "
            f"{_source_format(reader)} data is a {reader.task} task"
        )
    return get_task(reader.task)


def _cross_fit(
    cfg: Any, task: Task, f_tv: np.ndarray, y_tv: np.ndarray, f_test: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold scores, each row's fold and every fold model's test scores, on the trainer's folds."""
    shape = task.score_shape(n_classes)
    oof = np.full((y_tv.size, *shape), np.nan)
    oof_fold = np.full(y_tv.size, -1, dtype=np.int64)
    test_fold_scores = np.zeros((cfg.train.folds, f_test.shape[0], *shape))
    for k, (tr, va) in enumerate(fold_splits(y_tv, task.name, cfg.train.folds, cfg.seed)):
        oof_fold[va] = k
        if task.is_regression:
            model = _fit_regressor(f_tv[tr], y_tv[tr].astype(np.float64), cfg.seed + k)
            oof[va] = model.predict(f_tv[va])
            test_fold_scores[k] = model.predict(f_test)
            continue
        model = _fit_classifier(f_tv[tr], y_tv[tr].astype(np.int64), n_classes, cfg.seed + k)
        oof[va] = _class_probabilities(model, f_tv[va], n_classes)
        test_fold_scores[k] = _class_probabilities(model, f_test, n_classes)
    return oof, oof_fold, test_fold_scores


def _fit_regressor(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """Gradient boosting of the absolute error (the image runs' MAE), early-stopped when there is room."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    reg = HistGradientBoostingRegressor(
        loss="absolute_error",
        max_iter=300,
        learning_rate=0.05,
        max_leaf_nodes=31,
        early_stopping=y.size * 0.15 >= 20,
        validation_fraction=0.15,
        random_state=seed,
    )
    return reg.fit(x, y)


def _fit_classifier(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Any:
    """Gradient-boosted classification trees (binary or multi-class)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    # the internal early-stopping split is stratified: it needs a couple of samples of every class
    smallest = int(np.bincount(y, minlength=n_classes).min())
    return HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.05,
        max_leaf_nodes=31,
        early_stopping=smallest * 0.15 >= 2,
        validation_fraction=0.15,
        random_state=seed,
    ).fit(x, y)


def _write_provenance(
    out: Path,
    cfg: Any,
    reader: ImageDataset,
    name: str,
    task: str,
    class_names: list[str],
    trainval: np.ndarray,
    test: np.ndarray,
) -> None:
    """config.yaml (the experiment config whose split the baseline reproduced) and run.json."""
    write_config(out, cfg.to_yaml())
    write_run_info(
        out,
        {
            "name": name,
            "seed": cfg.seed,
            "versions": package_versions(),
            "data": {
                "format": reader.format,
                "paths": [str(p) for p in reader.paths],
                "fingerprint": data_fingerprint(reader.paths),
                "n_samples": reader.n_samples,
                "task": task,
                "class_names": class_names,
                "n_trainval": int(trainval.size),
                "n_test": int(test.size),
            },
            "command": " ".join(["e2evision", *sys.argv[1:]]),
        },
    )
