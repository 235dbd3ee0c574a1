"""Scalar inputs (pt, m0, lens features) fed into the model's head beside the image.

The data are built so that only a scalar carries the label (the images are noise), so a model
that really receives its scalars learns the task and one that does not stays at chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from e2evision.config import load_config
from e2evision.datasets import DatasetError, DeepLenseFolder, open_dataset
from e2evision.datasets.feature_table import WithFeatureTable, open_with_features, scalar_columns
from e2evision.rundir import load_fold_module
from e2evision.training import run_experiment
from e2evision.training.data import SampleSource, make_loader
from e2evision.training.module import split_batch

SIZE = 16


def write_qg_hdf5(path: Path, n: int = 160, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """Quark/gluon HDF5 schema at 16 × 16: noise images; the label is ``pt > median``."""
    rng = np.random.default_rng(seed)
    x = rng.exponential(1.0, (n, SIZE, SIZE, 3)).astype(np.float32)
    pt = rng.uniform(70, 130, n).astype(np.float32)
    m0 = rng.normal(20, 5, n).astype(np.float32)
    y = (pt > np.median(pt)).astype(np.float32)
    with h5py.File(path, "w") as h5:
        for key, value in {"X_jets": x, "pt": pt, "m0": m0, "y": y}.items():
            h5.create_dataset(key, data=value)
    return path, pt, m0


def qg_config(path: Path, *overrides: str):
    data = {
        "name": "qg_scalars",
        "seed": 3,
        "data": {
            "format": "quark-gluon-hdf5",
            "paths": [str(path)],
            "kwargs": {"image_size": [SIZE, SIZE]},
            "test_fraction": 0.25,
        },
        "model": {"name": "simple_cnn"},
        "train": {
            "folds": 2,
            "max_epochs": 12,
            "batch_size": 16,
            "lr": 0.02,
            "progress": False,
            "early_stopping_patience": None,
            "warmup_epochs": 0,
            "weight_decay": 0.0,
        },
    }
    return load_config(data=data, overrides=list(overrides))


def test_batches_carry_the_selected_scalars_in_memory_and_streamed(tmp_path):
    path, pt, m0 = write_qg_hdf5(tmp_path / "qg.h5", n=40)
    reader = open_dataset(path, "quark-gluon-hdf5", image_size=(SIZE, SIZE))
    cols = scalar_columns(reader, ["m0", "pt"])  # the reader's order is (pt, m0): order as asked
    idx = np.array([3, 7, 11, 20, 21, 39])
    got = {}
    for limit in (4.0, 0.0):  # in RAM, then streamed from the file
        source = SampleSource(reader, idx, limit, scalar_columns=cols)
        assert source.in_memory == (limit > 0)
        batches = list(make_loader(source.subset(np.arange(idx.size)), 4, shuffle=False, seed=0))
        parts = [split_batch(b) for b in batches]
        s = torch.cat([p[1] for p in parts]).numpy()
        np.testing.assert_array_equal(s, np.stack([m0[idx], pt[idx]], axis=1))
        got[limit] = (torch.cat([p[0] for p in parts]), torch.cat([p[2] for p in parts]))
    torch.testing.assert_close(got[4.0][0], got[0.0][0], rtol=0, atol=0)
    torch.testing.assert_close(got[4.0][1], got[0.0][1], rtol=0, atol=0)
    with pytest.raises(DatasetError, match=r"no scalar named 'eta'.*\['pt', 'm0'\]"):
        scalar_columns(reader, ["eta"])


@pytest.mark.slow
def test_a_model_with_scalars_learns_what_only_the_scalars_tell(tmp_path):
    path, pt, _ = write_qg_hdf5(tmp_path / "qg.h5")
    fused = run_experiment(qg_config(path, "data.scalars=[pt, m0]"), tmp_path / "fused")
    image_only = run_experiment(qg_config(path), tmp_path / "image")
    features_only = run_experiment(qg_config(path, "data.scalars=[pt, m0]", "model.name=scalar_mlp"), tmp_path / "mlp")
    # the fused CNN also fits its noise images on 60 training samples; it still learns the scalar
    assert fused["test_auc"] > 0.8, fused["test_auc"]
    assert features_only["test_auc"] > 0.9, features_only["test_auc"]
    assert image_only["test_auc"] < 0.7, image_only["test_auc"]

    run = tmp_path / "fused"
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["model_scalars"] == ["pt", "m0"]
    # the scalar normaliser was fitted on fold 0's training rows only (mean/std computed here)
    fold = json.loads((run / "fold_0" / "fold.json").read_text())
    with np.load(run / "predictions.npz") as npz:
        trainval, test_index, test_scores = npz["oof_index"], npz["test_index"], npz["test_fold_scores"][0]
    reader = open_dataset(path, "quark-gluon-hdf5", image_size=(SIZE, SIZE))
    s_all = reader.read_scalars(np.arange(reader.n_samples))
    s_train = s_all[trainval[np.asarray(fold["train_rows"])]]
    norm = json.loads((run / "fold_0" / "normalizer.json").read_text())["scalars"]
    np.testing.assert_allclose(norm["centre"], s_train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(norm["scale"], s_train.std(axis=0), rtol=1e-4)
    state = load_file(run / "fold_0" / "model.safetensors")
    np.testing.assert_allclose(state["scalar_normalizer.centre"].numpy(), norm["centre"], rtol=1e-6)
    # the saved fold reproduces its test scores from raw images and raw scalars
    module = load_fold_module(run, 0)
    x, _ = reader.read(test_index)
    with torch.no_grad():
        again = module.scores(torch.from_numpy(x), torch.from_numpy(s_all[test_index])).numpy()
    np.testing.assert_allclose(again, test_scores, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="takes 2 scalar inputs per sample, got none"):
        module.scores(torch.from_numpy(x))

    # export: the graph takes normalised scalars; preprocess.json says how (the fold's own statistics),
    # and the export checks itself against the training module on raw test images and scalars
    from e2evision.export import export_model, read_contract

    result = export_model(run, "onnx", tmp_path / "export" / "fused.onnx", n_check=16)
    assert result.stored_max_abs_diff is not None and result.stored_max_abs_diff < 1e-5
    spec = {s["name"]: s for s in read_contract(result.preprocess_path)["inputs"]}["scalars"]
    chosen = json.loads((run / f"fold_{result.fold}" / "normalizer.json").read_text())["scalars"]
    assert spec["names"] == ["pt", "m0"] and spec["shape"] == [-1, 2]
    np.testing.assert_allclose(spec["preprocess"]["centre"], chosen["centre"], rtol=1e-6)
    np.testing.assert_allclose(spec["preprocess"]["scale"], chosen["scale"], rtol=1e-6)


def test_scalar_config_errors(tmp_path):
    path, _, _ = write_qg_hdf5(tmp_path / "qg.h5", n=40)
    with pytest.raises(ValueError, match="listed twice"):
        qg_config(path, "data.scalars=[pt, pt]")
    with pytest.raises(DatasetError, match="no scalar named 'ieta'"):
        run_experiment(qg_config(path, "data.scalars=[ieta]"), tmp_path / "bad")
    with pytest.raises(ValueError, match="scalar_mlp reads only scalar inputs"):
        run_experiment(qg_config(path, "model.name=scalar_mlp"), tmp_path / "bad2")


# ----------------------------------------------------------------------------- features tables
def lens_folder(root: Path, per_class: int = 4, size: int = 20) -> Path:
    rng = np.random.default_rng(1)
    for name in ("axion", "cdm", "no_sub"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            np.save(root / name / f"{name}_{i}.npy", rng.random((size, size)).astype(np.float32))
    return root


def write_table(path: Path, rows: list[tuple[str, int, float, float]]) -> Path:
    lines = ["file,index,label,ring_area,n_peaks"] + [f"{f},{i},{lab},{a!r},{p}" for f, i, lab, a, p in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_features_join_by_file_whatever_the_row_order(tmp_path):
    root = lens_folder(tmp_path / "lenses")
    reader = DeepLenseFolder(root)
    keys = [f"{p.parent.name}/{p.name}" for p in reader.files]
    labels = reader.labels()
    rows = [(k, i, float(labels[i]), 10.0 * i + 0.5, i % 3) for i, k in enumerate(keys)]
    table = write_table(root / "features.csv", rows[::-1])  # reversed: the join is by key
    joined = open_with_features(root, "deeplense", "auto")
    assert isinstance(joined, WithFeatureTable)
    assert joined.scalar_names == ["ring_area", "n_peaks"]
    got = joined.read_scalars([0, 5, 11])
    np.testing.assert_allclose(got, [[0.5, 0], [50.5, 2], [110.5, 2]])
    x, y = joined.read([5])
    np.testing.assert_array_equal(x, reader.read([5])[0])

    write_table(table, rows[1:])
    with pytest.raises(DatasetError, match=r"features.csv.*no row for axion/axion_0.npy"):
        WithFeatureTable(reader, table)
    bad_label = list(rows)
    bad_label[2] = (rows[2][0], 2, 2.0, 1.0, 1)
    write_table(table, bad_label)
    with pytest.raises(DatasetError, match="label of sample 2 disagrees"):
        WithFeatureTable(reader, table)
    nan = list(rows)
    nan[4] = (rows[4][0], 4, rows[4][2], float("nan"), 1)
    write_table(table, nan)
    with pytest.raises(DatasetError, match="column 'ring_area' is not finite for sample 4"):
        WithFeatureTable(reader, table)
    with pytest.raises(DatasetError, match="features table not found"):
        WithFeatureTable(reader, tmp_path / "nope.csv")


def test_ablation_needs_scalar_inputs(tmp_path):
    from typer.testing import CliRunner

    from e2evision.cli import app

    path, _, _ = write_qg_hdf5(tmp_path / "qg.h5", n=40)
    cfg = tmp_path / "image_only.yaml"
    cfg.write_text(qg_config(path).to_yaml())
    result = CliRunner().invoke(app, ["ablation", str(cfg), "--out", str(tmp_path / "abl")])
    assert result.exit_code == 2
    assert "an ablation needs scalar inputs (data.scalars) beside the image" in result.output
    assert not (tmp_path / "abl" / "image").exists()
