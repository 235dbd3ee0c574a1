"""The physics baseline on DeepLense lensing images: lens features, three classes, the runner's split."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from e2evision.baselines import gbdt, physics_baseline
from e2evision.config import load_config
from e2evision.features.lensing import FEATURE_NAMES, LensFeatureParams, lens_features

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["axion", "cdm", "no_sub"]
N = 60  # 20 lenses per class
PIXEL = 0.1  # 64 px × 0.1″: the 1.7″ Einstein ring fits in the small image

requires_sim = pytest.mark.skipif(
    importlib.util.find_spec("lenstronomy") is None or importlib.util.find_spec("astropy") is None,
    reason="needs the optional simulation extra: pip install 'e2evision[sim]'",
)


@pytest.fixture(scope="module")
def lenses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from e2evision.simulate.lensing import LensingConfig, write_lensing

    out = tmp_path_factory.mktemp("lenses")
    write_lensing(out, N, seed=3, config=LensingConfig(num_pix=64, pixel_scale_arcsec=PIXEL), progress=False)
    return out


def _config(data: Path, *extra: str):
    return load_config(
        ROOT / "configs/lensing_resnet15.yaml",
        [f"data.paths={json.dumps([str(data)])}", "train.folds=2", "name=lens", *extra],
    )


def _multiclass_keys() -> set[str]:
    """The keys the image runs write for a multi-class task (from the runner's own metrics function)."""
    from e2evision.metrics import task_metrics

    rng = np.random.default_rng(0)
    y = np.tile(np.arange(3), 8).astype(np.float64)
    s = rng.dirichlet(np.ones(3), y.size)
    return set(task_metrics("multiclass", y, s, np.arange(y.size) % 2, y, s, seed=0, class_names=CLASSES, n_boot=20))


@requires_sim
@pytest.mark.slow
def test_lensing_baseline_writes_the_multiclass_metrics_of_image_runs(lenses, tmp_path):
    from e2evision.datasets import open_dataset
    from e2evision.metrics import one_vs_rest_auc
    from e2evision.report import build_report
    from e2evision.rundir import REQUIRED_METRICS

    run = tmp_path / "baseline"
    m = physics_baseline(_config(lenses), run)
    assert m["task"] == "multiclass" and m["class_names"] == CLASSES
    assert _multiclass_keys() <= set(m)
    assert set(REQUIRED_METRICS["multiclass"]) <= set(m)
    assert m["features"] == list(FEATURE_NAMES)
    assert m["feature_params"]["pixel_scale_arcsec"] == PIXEL  # from the simulator's metadata.json
    assert set(m["test_ovr_auc"]) == set(CLASSES) and len(m["fold_auc"]) == 2
    cm = np.asarray(m["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == m["n_test"] == N // 5
    assert 0.0 <= m["test_auc_ci"][0] <= m["test_auc"] <= m["test_auc_ci"][1] <= 1.0

    with np.load(run / "predictions.npz", allow_pickle=False) as p:
        score, label = p["test_score"], p["test_label"]
        assert score.shape == (m["n_test"], 3) and p["test_fold_scores"].shape == (2, m["n_test"], 3)
        np.testing.assert_allclose(score.sum(axis=1), 1.0)
        assert p["oof_score"].shape == (m["n_trainval"], 3) and np.isfinite(p["oof_score"]).all()
        assert list(p["class_names"]) == CLASSES
        assert m["test_auc"] == pytest.approx(one_vs_rest_auc(label, score)["macro"])
        assert m["test_accuracy"] == pytest.approx(np.mean(score.argmax(axis=1) == label))

    # the stored features are lens_features of those very images, at the data's pixel scale
    reader = open_dataset([lenses])
    with np.load(run / "features.npz", allow_pickle=False) as f:
        rows = f["index"][:5]
        expected = lens_features(reader.read(rows)[0], LensFeatureParams(pixel_scale_arcsec=PIXEL))
        np.testing.assert_allclose(f["features"][:5], np.column_stack([expected[n] for n in FEATURE_NAMES]))

    page = build_report([run], tmp_path / "r.html", saliency=False).read_text()
    assert "gbdt(expert features)" in page and "Test macro AUC" in page


@requires_sim
@pytest.mark.slow
def test_lensing_baseline_split_equals_run_experiments(lenses, tmp_path):
    from e2evision.report import build_report
    from e2evision.training.runner import run_experiment

    cfg = _config(
        lenses,
        "train.max_epochs=1",
        "train.batch_size=16",
        "preprocess.resize=[16, 16]",
        "train.progress=false",
        "train.checkpoint_every_n_steps=null",
        "train.early_stopping_patience=null",
    )
    run_experiment(cfg, tmp_path / "image")
    physics_baseline(cfg, tmp_path / "baseline")
    with (
        np.load(tmp_path / "image" / "predictions.npz", allow_pickle=False) as a,
        np.load(tmp_path / "baseline" / "predictions.npz", allow_pickle=False) as b,
    ):
        for key in ("test_index", "test_label", "oof_index", "oof_label", "oof_fold"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a["test_score"].shape == b["test_score"].shape == (N // 5, 3)
    # same data, same task: the report puts both runs in one table
    page = build_report([tmp_path / "image", tmp_path / "baseline"], tmp_path / "r.html", saliency=False).read_text()
    assert "2 run(s) on 1 dataset(s)" in page


@requires_sim
def test_axion_mass_scalar_is_not_a_lens_feature(lenses):
    """The pickled axion files' mass is non-zero for the axion class only: it would give away the label."""
    from e2evision.datasets import open_dataset

    reader = open_dataset([lenses], "deeplense", allow_pickle=True)
    assert reader.scalar_names == ["axion_mass"]
    assert gbdt.feature_names(reader) == list(FEATURE_NAMES)
    feats, names = gbdt.feature_table(reader, np.arange(4))
    assert feats.shape == (4, len(FEATURE_NAMES)) and names == list(FEATURE_NAMES)


def _stub_reader(fmt: str, task: str) -> SimpleNamespace:
    return SimpleNamespace(
        format=fmt,
        task=task,
        class_names=["a", "b"],
        scalar_names=[],
        labels=lambda: np.array([0.0, 1.0] * 10),
        paths=[],
    )


def test_a_format_without_features_is_an_error_that_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gbdt, "open_dataset", lambda *a, **k: _stub_reader("mystery", "binary"))
    out = tmp_path / "baseline"
    with pytest.raises(ValueError, match=r"no expert features are defined for the 'mystery' format") as err:
        physics_baseline(_config(tmp_path), out)
    assert "deeplense" in str(err.value)  # says which formats do have features
    assert not out.exists()  # nothing written


def test_a_task_it_cannot_fit_is_an_error_that_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gbdt, "open_dataset", lambda *a, **k: _stub_reader("top-mass", "ranking"))
    with pytest.raises(ValueError, match=r"binary, multiclass, regression tasks; the top-mass data is a ranking task"):
        physics_baseline(_config(tmp_path), tmp_path / "baseline")
    assert not (tmp_path / "baseline").exists()


def test_top_mass_regression_baseline(tmp_path):
    """Regression: absolute-error boosting on jet observables + pt/ieta/iphi, the runner's split and keys."""
    from schema_files import sparse_jets, write_jet_parquet

    from e2evision.config import load_config
    from e2evision.datasets import open_dataset
    from e2evision.datasets.split import split_indices
    from e2evision.report import build_report

    rng = np.random.default_rng(3)
    n = 150
    pt = rng.uniform(300, 700, n)
    columns = {
        "X_jet": sparse_jets(n, 8, rng, size=16, hits=20),
        "m": 120 + 0.1 * pt + rng.normal(0, 1, n),
        "iphi": rng.uniform(0, 360, n),
        "pt": pt,
        "ieta": rng.uniform(-100, 100, n),
    }
    data = write_jet_parquet(tmp_path / "top_gun_opendata_0.parquet", columns, row_group_size=50)
    cfg = load_config(
        data={
            "name": "topmass",
            "seed": 4,
            "model": {"name": "resnet15"},
            "data": {"format": "top-mass", "paths": [str(data)], "kwargs": {"image_size": [16, 16]}},
            "train": {"folds": 3},
        }
    )
    m = physics_baseline(cfg, tmp_path / "baseline")
    assert m["task"] == "regression" and len(m["fold_mae"]) == 3 and {"pt", "ieta", "iphi"} <= set(m["features"])
    with np.load(tmp_path / "baseline" / "predictions.npz") as npz:
        y = open_dataset(data, "top-mass", image_size=(16, 16)).labels()
        tv, te = split_indices(y, cfg, "regression")
        np.testing.assert_array_equal(npz["test_index"], te)
        np.testing.assert_array_equal(npz["oof_index"], tv)
        mae = float(np.mean(np.abs(npz["test_score"] - npz["test_label"])))
    assert m["test_mae"] == pytest.approx(mae)
    median = float(np.mean(np.abs(y[te] - np.median(y[tv]))))
    assert m["test_mae"] < 0.4 * median, (m["test_mae"], median)  # the target follows pt
    page = build_report([tmp_path / "baseline"], tmp_path / "r.html", saliency=False).read_text()
    assert "gbdt(expert features)" in page


def test_class_probabilities_cover_classes_missing_from_a_fold():
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.linspace(0, 1, 40)[:, None]
    y = np.where(x[:, 0] < 0.5, 0, 2)  # class 1 absent from this training fold
    model = HistGradientBoostingClassifier(max_iter=5, min_samples_leaf=2).fit(x, y)
    p = gbdt._class_probabilities(model, x, 3)
    assert p.shape == (40, 3) and np.all(p[:, 1] == 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    binary = HistGradientBoostingClassifier(max_iter=5, min_samples_leaf=2).fit(x, (y > 0).astype(int))
    assert gbdt._class_probabilities(binary, x, 2).shape == (40,)
