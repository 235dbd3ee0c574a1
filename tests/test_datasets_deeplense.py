"""DeepLense folders: layouts, label order, the pickle opt-in for axion files, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from e2evision.cli import app
from e2evision.datasets import DatasetError, DeepLenseFolder, detect_format, open_dataset


def _write_model_i(root: Path, n: int = 3, axion_objects: bool = True, size: int = 150, seed: int = 0):
    """``root/{axion,cdm,no_sub}/*.npy`` as the Model I set: axion files as [image, mass] object arrays."""
    rng = np.random.default_rng(seed)
    images = {}
    for cls in ("axion", "cdm", "no_sub"):
        (root / cls).mkdir(parents=True)
        images[cls] = rng.random((n, size, size))
        for i, img in enumerate(images[cls]):
            if cls == "axion" and axion_objects:
                obj = np.empty(2, dtype=object)
                obj[0], obj[1] = img, 10.0 ** -(23 + i)
                np.save(root / cls / f"{cls}_sim_{i}.npy", obj, allow_pickle=True)
            else:
                np.save(root / cls / f"{cls}_sim_{i}.npy", img)
    return images


def test_common_test_set_layout_channels_first(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "dataset" / "train"
    written = {}
    for cls in ("no", "sphere", "vort"):
        (root / cls).mkdir(parents=True)
        written[cls] = rng.random((2, 1, 150, 150))
        for i, img in enumerate(written[cls]):
            np.save(root / cls / f"{i}.npy", img)
    assert detect_format(root) == "deeplense"
    ds = open_dataset(root)
    assert ds.class_names == ["no", "sphere", "vort"] and ds.task == "multiclass"
    assert ds.image_shape == (1, 150, 150) and ds.n_samples == 6
    x, y = ds.read([5, 0])
    np.testing.assert_array_equal(y, [2, 0])
    np.testing.assert_array_equal(x[0], written["vort"][1].astype(np.float32))
    np.testing.assert_array_equal(x[1], written["no"][0].astype(np.float32))
    assert ds.label_counts() == {"0": 2, "1": 2, "2": 2}


def test_axion_object_arrays_need_the_explicit_opt_in(tmp_path):
    images = _write_model_i(tmp_path / "Model_I", n=2)
    with pytest.raises(DatasetError, match=r"axion_sim_0\.npy: it holds a pickled object array .* allow_pickle=True"):
        DeepLenseFolder(tmp_path / "Model_I")  # opening reads the first file, an axion one
    ds = DeepLenseFolder(tmp_path / "Model_I", classes=["cdm", "no_sub", "axion"])
    with pytest.raises(DatasetError, match=r"axion_sim_1\.npy: it holds a pickled object array"):
        ds.read([5])
    ds = DeepLenseFolder(tmp_path / "Model_I", allow_pickle=True)
    x, y = ds.read([1, 2, 5])
    np.testing.assert_array_equal(y, [0, 1, 2])
    np.testing.assert_array_equal(x[0, 0], images["axion"][1].astype(np.float32))
    np.testing.assert_array_equal(ds.read_scalars([0, 1, 2])[:, 0], np.float32([1e-23, 1e-24, 0.0]))
    assert ds.scalar_names == ["axion_mass"]


def test_class_order_shapes_and_bad_files(tmp_path):
    _write_model_i(tmp_path / "m", n=2, axion_objects=False, size=64)
    ds = DeepLenseFolder(tmp_path / "m", classes=["no_sub", "cdm", "axion"])
    assert ds.image_shape == (1, 64, 64)
    assert ds.labels().tolist() == [0, 0, 1, 1, 2, 2] and ds.files[0].parent.name == "no_sub"
    with pytest.raises(DatasetError, match=r"m/sphere: class folder missing"):
        DeepLenseFolder(tmp_path / "m", classes=["sphere", "cdm"])
    bad = tmp_path / "m" / "cdm" / "cdm_sim_1.npy"
    np.save(bad, np.full((64, 64), np.nan))
    with pytest.raises(DatasetError, match=r"cdm_sim_1\.npy: field 'image' has NaN values"):
        DeepLenseFolder(tmp_path / "m").read([3])
    np.save(bad, np.zeros((32, 32)))
    with pytest.raises(DatasetError, match=r"cdm_sim_1\.npy: image shape \(32, 32\), expected \(64, 64\)"):
        DeepLenseFolder(tmp_path / "m").read([3])
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"cdm_sim_1\.npy: cannot read as \.npy"):
        DeepLenseFolder(tmp_path / "m").read([3])
    with pytest.raises(DatasetError, match="not a directory"):
        DeepLenseFolder(bad)


def test_inspect_json_on_a_deeplense_folder(tmp_path):
    _write_model_i(tmp_path / "Model_I", n=2)
    runner = CliRunner()
    res = runner.invoke(app, ["inspect", str(tmp_path / "Model_I"), "--json"])
    assert res.exit_code == 2 and "allow_pickle" in res.output
    res = runner.invoke(app, ["inspect", str(tmp_path / "Model_I"), "--json", "--allow-pickle"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["format"] == "deeplense" and info["n_samples"] == 6 and info["image_shape"] == [1, 150, 150]
    assert info["labels"] == {"0": 2, "1": 2, "2": 2} and info["class_names"] == ["axion", "cdm", "no_sub"]
    assert {"channels", "channel_stats", "paths"} <= set(info)
    assert 0.45 < info["channel_stats"]["intensity"]["mean"] < 0.55  # uniform [0, 1) pixels
