"""Gradient-boosted trees on expert features: the baseline an image model has to beat.

:func:`physics_baseline` takes the same experiment config as ``e2evision train`` and reproduces
its data selection exactly — the same stratified subsample, train+validation / test split and
K folds for the same seed — so the baseline's scores line up with every image model's sample by
sample (ensembles, DeLong's test). It computes expert features per sample (shower shapes for
electron/photon crops, jet observables plus the file's ``pt``/``m0`` for jet images, the lens
physics features of :mod:`e2evision.features.lensing` for DeepLense images), trains
scikit-learn's histogram gradient boosting on each fold and writes a run directory that the report
shows beside the image models. Binary and multi-class tasks (the three DeepLense classes) are
handled; the metrics are those of the image runs (:func:`e2evision.training.runner.task_metrics`),
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
from e2evision.utils import atomic_path, atomic_write_json, atomic_write_text, data_fingerprint, package_versions

SHOWER_FORMATS = {"egamma", "egamma-hdf5"}
JET_FORMATS = {"quark-gluon", "quark-gluon-hdf5", "top", "top-mass"}
LENS_FORMATS = {"deeplense"}
#: tasks the baseline fits (regression: the top mass from the jet observables, pt, ieta, iphi)
TASKS = ("binary", "multiclass", "regression")


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
    from e2evision.features.lensing import LensFeatureParams, metadata_pixel_scale as _metadata_pixel_scale

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


def feature_table(reader: ImageDataset, indices: np.ndarray, batch: int = 64,
                  progress: bool = False) -> tuple[np.ndarray, list[str]]:
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
        idx = np.asarray(indices[start:start + batch])
        x, _ = reader.read(idx)
        if kind == "lens":
            cols = lensing.lens_features(x, lens_params)
            rows.append(np.column_stack([np.asarray(cols[n], dtype=np.float64) for n in names]))
            continue
        f = (shower_shapes.shower_shape_features(x) if kind == "shower"
             else jet_images.jet_features(x, pt_channels=pt_channels))
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
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.model_selection import StratifiedKFold

    from e2evision.training import split_indices
    from e2evision.training.runner import jsonable, strata, task_metrics

    t0 = time.perf_counter()
    out = Path(out_dir)
    reader = open_dataset(cfg.data.paths, cfg.data.format, **cfg.data.kwargs)
    kind = _kind(reader)  # a format without features fails here, before anything is written
    task = reader.task
    if task not in TASKS:
        raise ValueError(f"the physics baseline handles {', '.join(TASKS)} tasks; the "
                         f"{_source_format(reader)} data is a {task} task")
    class_names = [str(c) for c in reader.class_names]
    n_classes = len(class_names) if task == "multiclass" else 2
    labels = reader.labels()
    trainval, test = split_indices(labels, cfg, task)
    out.mkdir(parents=True, exist_ok=True)
    selected = np.concatenate([trainval, test])
    feats, names = feature_table(reader, selected, progress=progress)
    f_tv, f_test = feats[:trainval.size], feats[trainval.size:]
    y_tv, y_test = labels[trainval], labels[test]
    yi_tv = y_tv.astype(np.int64) if task != "regression" else None

    skf = StratifiedKFold(n_splits=cfg.train.folds, shuffle=True, random_state=cfg.seed)
    score_shape: tuple[int, ...] = (n_classes,) if task == "multiclass" else ()
    oof = np.full((trainval.size, *score_shape), np.nan)
    oof_fold = np.full(trainval.size, -1, dtype=np.int64)
    test_fold_scores = np.zeros((cfg.train.folds, test.size, *score_shape))
    t_fit = time.perf_counter()
    for k, (tr, va) in enumerate(skf.split(np.arange(trainval.size), strata(y_tv, task))):
        oof_fold[va] = k
        if task == "regression":
            reg = HistGradientBoostingRegressor(loss="absolute_error", max_iter=300, learning_rate=0.05,
                                                max_leaf_nodes=31, early_stopping=tr.size * 0.15 >= 20,
                                                validation_fraction=0.15, random_state=cfg.seed + k)
            reg.fit(f_tv[tr], y_tv[tr].astype(np.float64))
            oof[va] = reg.predict(f_tv[va])
            test_fold_scores[k] = reg.predict(f_test)
            continue
        assert yi_tv is not None
        # the internal early-stopping split is stratified: it needs a couple of samples of every class
        smallest = int(np.bincount(yi_tv[tr], minlength=n_classes).min())
        model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=31,
                                               early_stopping=smallest * 0.15 >= 2, validation_fraction=0.15,
                                               random_state=cfg.seed + k).fit(f_tv[tr], yi_tv[tr])
        oof[va] = _class_probabilities(model, f_tv[va], n_classes)
        test_fold_scores[k] = _class_probabilities(model, f_test, n_classes)
    fit_s = time.perf_counter() - t_fit
    test_score = test_fold_scores.mean(axis=0)
    scalar_names = list(reader.scalar_names)
    test_scalars = (reader.read_scalars(test).astype(np.float64) if scalar_names
                    else np.zeros((test.size, 0), np.float64))
    # the lens baseline does not use the reader's scalars (axion_mass names the class), so it does not bin in them
    binning = {} if kind == "lens" else dict(zip(scalar_names, test_scalars.T))
    metrics = {
        "name": f"{cfg.name}_baseline" if not cfg.name.endswith("baseline") else cfg.name,
        "model": "gbdt(expert features)",
        "task": task,
        "class_names": class_names,
        "features": names,
        "n_params": 0,
        **task_metrics(task, y_tv, oof, oof_fold, y_test, test_score, seed=cfg.seed, class_names=class_names,
                       scalars=binning),
        "train_time_s": fit_s,
        "wall_time_s": time.perf_counter() - t0,
        "n_trainval": int(trainval.size),
        "n_test": int(test.size),
        "epochs": [],
        "history": [],
    }
    if kind == "lens":
        metrics["feature_params"] = lens_feature_params(reader).to_dict()
    with atomic_path(out / "predictions.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, oof_score=oof, oof_label=y_tv, oof_fold=oof_fold, oof_index=trainval, test_score=test_score,
                     test_label=y_test, test_index=test, test_fold_scores=test_fold_scores,
                     test_scalars=np.asarray(test_scalars, np.float32),
                     scalar_names=np.asarray(scalar_names, dtype=str), class_names=np.asarray(class_names, dtype=str))
    with atomic_path(out / "features.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, index=selected, features=feats, names=np.array(names))
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    atomic_write_json(out / "run.json", {
        "name": metrics["name"], "seed": cfg.seed, "versions": package_versions(),
        "data": {"format": reader.format, "paths": [str(p) for p in reader.paths],
                 "fingerprint": data_fingerprint(reader.paths), "n_samples": reader.n_samples,
                 "task": task, "class_names": class_names,
                 "n_trainval": int(trainval.size), "n_test": int(test.size)},
        "command": " ".join(["e2evision", *sys.argv[1:]]),
    })
    metrics = jsonable(metrics)  # strict JSON: an infinite rejection (no background left) becomes null
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
