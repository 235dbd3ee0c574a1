"""Gradient-boosted trees on expert features: the baseline an image model has to beat.

:func:`physics_baseline` takes the same experiment config as ``e2evision train`` and reproduces
its data selection exactly — the same stratified subsample, train+validation / test split and
K folds for the same seed — so the baseline's scores line up with every image model's sample by
sample (ensembles, DeLong's test). It computes expert features per sample (shower shapes for
electron/photon crops, jet observables plus the file's ``pt``/``m0`` for jet images), trains
scikit-learn's histogram gradient boosting on each fold and writes a run directory that the report
shows beside the image models.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.datasets import ImageDataset, open_dataset
from e2evision.metrics import background_rejection, bootstrap_auc, roc_auc
from e2evision.utils import atomic_path, atomic_write_json, atomic_write_text, data_fingerprint, package_versions

JET_FORMATS = {"quark-gluon", "quark-gluon-hdf5", "top", "top-mass"}


def _kind(reader: ImageDataset) -> str:
    fmt = reader.source_format if reader.format == "store" else reader.format  # type: ignore[attr-defined]
    if fmt in ("egamma", "egamma-hdf5"):
        return "shower"
    if fmt in JET_FORMATS:
        return "jet"
    raise ValueError(f"no expert features are defined for the {fmt!r} format (electron/photon and jet images are)")


def feature_table(reader: ImageDataset, indices: np.ndarray, batch: int = 64,
                  progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """Expert features (and the reader's scalars) of ``indices``, computed batch by batch."""
    from e2evision.features import jet_images, shower_shapes

    kind = _kind(reader)
    names = list(shower_shapes.NAMES if kind == "shower" else jet_images.NAMES) + reader.scalar_names
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
        f = (shower_shapes.shower_shape_features(x) if kind == "shower"
             else jet_images.jet_features(x, pt_channels=pt_channels))
        rows.append(np.hstack([f, reader.read_scalars(idx).astype(np.float64)]))
    return np.vstack(rows), names


def physics_baseline(cfg: Any, out_dir: str | os.PathLike[str], *, progress: bool = False) -> dict[str, Any]:
    """Cross-validated gradient boosting on expert features; writes a run directory, returns metrics."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    from e2evision.training import split_indices
    from e2evision.training.runner import jsonable

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader = open_dataset(cfg.data.paths, cfg.data.format, **cfg.data.kwargs)
    if reader.task != "binary":
        raise ValueError(f"the physics baseline handles binary tasks; {reader.format} is {reader.task}")
    labels = reader.labels()
    trainval, test = split_indices(labels, cfg)
    selected = np.concatenate([trainval, test])
    feats, names = feature_table(reader, selected, progress=progress)
    f_tv, f_test = feats[:trainval.size], feats[trainval.size:]
    y_tv, y_test = labels[trainval], labels[test]

    skf = StratifiedKFold(n_splits=cfg.train.folds, shuffle=True, random_state=cfg.seed)
    oof = np.full(trainval.size, np.nan)
    oof_fold = np.full(trainval.size, -1, dtype=np.int64)
    test_fold_scores = np.zeros((cfg.train.folds, test.size))
    fold_auc = []
    t_fit = time.perf_counter()
    for k, (tr, va) in enumerate(skf.split(np.arange(trainval.size), y_tv)):
        model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=31,
                                               early_stopping=True, validation_fraction=0.15,
                                               random_state=cfg.seed + k).fit(f_tv[tr], y_tv[tr])
        oof[va] = model.predict_proba(f_tv[va])[:, 1]
        oof_fold[va] = k
        test_fold_scores[k] = model.predict_proba(f_test)[:, 1]
        fold_auc.append(roc_auc(y_tv[va], oof[va]))
    fit_s = time.perf_counter() - t_fit
    test_score = test_fold_scores.mean(axis=0)
    auc, lo, hi = bootstrap_auc(y_test, test_score, seed=cfg.seed)
    metrics = {
        "name": f"{cfg.name}_baseline" if not cfg.name.endswith("baseline") else cfg.name,
        "model": "gbdt(expert features)",
        "task": "binary",
        "features": names,
        "n_params": 0,
        "fold_auc": [float(a) for a in fold_auc],
        "fold_auc_mean": float(np.mean(fold_auc)),
        "fold_auc_std": float(np.std(fold_auc, ddof=1)) if len(fold_auc) > 1 else 0.0,
        "oof_auc": roc_auc(y_tv, oof),
        "test_auc": float(auc),
        "test_auc_ci": [lo, hi],
        "background_rejection": background_rejection(y_test, test_score, (0.3, 0.5)),
        "train_time_s": fit_s,
        "wall_time_s": time.perf_counter() - t0,
        "n_trainval": int(trainval.size),
        "n_test": int(test.size),
        "epochs": [],
        "history": [],
    }
    with atomic_path(out / "predictions.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, oof_score=oof, oof_label=y_tv, oof_fold=oof_fold, oof_index=trainval, test_score=test_score,
                     test_label=y_test, test_index=test, test_fold_scores=test_fold_scores)
    with atomic_path(out / "features.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, index=selected, features=feats, names=np.array(names))
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    atomic_write_json(out / "run.json", {
        "name": metrics["name"], "seed": cfg.seed, "versions": package_versions(),
        "data": {"format": reader.format, "paths": [str(p) for p in reader.paths],
                 "fingerprint": data_fingerprint(reader.paths), "n_samples": reader.n_samples,
                 "n_trainval": int(trainval.size), "n_test": int(test.size)},
        "command": " ".join(["e2evision", *sys.argv[1:]]),
    })
    metrics = jsonable(metrics)  # strict JSON: an infinite rejection (no background left) becomes null
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
