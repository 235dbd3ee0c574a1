"""``e2evision predict`` and the fold-ensemble export, on runs from the real training loop.

Scores are checked against what the runner stored (``predictions.npz``) and against per-fold
modules rebuilt independently (``load_fold_module``); tables are read back with pyarrow and uproot.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from e2evision.cli import app
from e2evision.config import load_config
from e2evision.export import ExportError, choose_fold, export_model
from e2evision.export.ensemble import export_ensemble
from e2evision.inference import PredictError, predict
from e2evision.inference.predict import check_data
from e2evision.inference.scorers import ModelContract
from e2evision.rundir import load_fold_module
from e2evision.training import run_experiment

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "train.folds=2",
    "train.max_epochs=1",
    "train.progress=false",
    "train.batch_size=32",
    "augment.flip_eta=false",
    "augment.flip_phi=false",
    "model.kwargs.widths=[4, 8]",
    "model.kwargs.blocks_per_stage=1",
]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A binary e/γ run and a regression top-mass run with scalar inputs (2 folds, 1 epoch)."""
    from test_training import write_top_mass

    from e2evision.simulate.calorimeter import write_egamma

    base = tmp_path_factory.mktemp("predict_runs")
    files = write_egamma(base / "egamma", 120, seed=3, progress=False)
    cfg = load_config(
        ROOT / "configs/egamma_resnet15.yaml",
        [
            f"data.paths={json.dumps([str(f) for f in files])}",
            *TINY,
            "preprocess.clip=3.0",
            "preprocess.zero_suppression=0.05",
            "preprocess.channel_scale=[2.0, 0.5]",
        ],
    )
    run_experiment(cfg, base / "binary")
    (base / "topmass").mkdir()
    data = write_top_mass(base / "topmass" / "top_gun_opendata_0.parquet", n=100)
    cfg = load_config(
        ROOT / "configs/top_mass_resnet15.yaml",
        [
            f"data.paths={json.dumps([str(data)])}",
            *TINY,
            "data.kwargs={image_size: [16, 16]}",
            "data.scalars=[pt, ieta]",
            "preprocess.target_shift=mean",
            "preprocess.target_scale=std",
        ],
    )
    run_experiment(cfg, base / "regression")
    return {"binary": base / "binary", "regression": base / "regression", "egamma": base / "egamma", "topmass": data}


@pytest.fixture(scope="session")
def lens_run(tmp_path_factory) -> tuple[Path, Path]:
    """A three-class run on DeepLense-layout folders (one .npy file per image)."""
    from test_training import TINY as TRAINING_TINY
    from test_training import write_lensing

    base = tmp_path_factory.mktemp("predict_lens")
    data = write_lensing(base / "lens", per_class=16)
    cfg = load_config(
        ROOT / "configs/lensing_resnet15.yaml",
        [f"data.paths={json.dumps([str(data)])}", *TRAINING_TINY, "train.max_epochs=1"],
    )
    run_experiment(cfg, base / "run")
    return base / "run", data


def _npz(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "predictions.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _by_index(table: dict[str, np.ndarray], column: str, index: np.ndarray) -> np.ndarray:
    pos = {int(i): p for p, i in enumerate(table["index"])}
    return np.asarray(table[column])[[pos[int(i)] for i in index]]


def _read(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in pq.read_table(path).to_pydict().items()}


def test_run_ensemble_reproduces_the_test_scores_and_names_each_row(runs, tmp_path):
    run, pred = runs["binary"], _npz(runs["binary"])
    s = predict(run, [runs["egamma"]], tmp_path / "p.parquet", batch_size=50)
    t = _read(s.path)
    assert s.rows == 120 and list(t) == ["source", "row", "index", "label", "score"]
    got = _by_index(t, "score", pred["test_index"])
    assert np.abs(got - pred["test_score"]).max() <= 1e-6
    # source and row: the image at that row of that file (read with h5py) has that label
    for i in (0, 59, 60, 119):
        with h5py.File(t["source"][i], "r") as h5:
            assert h5["y"][int(t["row"][i])] == t["label"][i]
    assert sorted(set(t["source"])) == sorted(str(p) for p in sorted(runs["egamma"].glob("*.hdf5")))
    np.testing.assert_array_equal(_by_index(t, "label", pred["test_index"]), pred["test_label"].astype(int))
    # one fold: that fold's stored test scores
    one = _read(predict(run, [runs["egamma"]], tmp_path / "f1.parquet", fold=1).path)
    got1 = _by_index(one, "score", pred["test_index"])
    assert np.abs(got1 - pred["test_fold_scores"][1]).max() <= 1e-6


def test_reads_at_most_one_batch_at_a_time(runs, tmp_path, monkeypatch):
    from e2evision.datasets.egamma import EgammaHDF5

    sizes: list[int] = []
    original = EgammaHDF5.read

    def spy(self, indices):
        sizes.append(len(indices))
        return original(self, indices)

    monkeypatch.setattr(EgammaHDF5, "read", spy)
    predict(runs["binary"], [runs["egamma"]], tmp_path / "p.parquet", batch_size=16)
    assert max(sizes) == 16 and sum(sizes) == 120


def test_regression_in_target_units_with_scalars_as_csv(runs, tmp_path):
    import pyarrow.csv as pcsv

    run, pred = runs["regression"], _npz(runs["regression"])
    s = predict(run, [runs["topmass"]], tmp_path / "p.csv", fmt="csv")
    t = {k: np.asarray(v) for k, v in pcsv.read_csv(s.path).to_pydict().items()}
    assert list(t) == ["source", "row", "index", "label", "value"]
    assert np.abs(_by_index(t, "value", pred["test_index"]) - pred["test_score"]).max() <= 1e-6
    # in GeV, not in scaled units
    assert abs(np.mean(t["value"]) - np.mean(t["label"])) < np.std(t["label"])


def test_fold_ensemble_export_is_the_mean_of_the_folds_and_predict_reproduces_it(runs, tmp_path):
    import onnxruntime as ort

    from e2evision.datasets import open_dataset

    run, pred = runs["binary"], _npz(runs["binary"])
    r = export_ensemble(run, "onnx", tmp_path / "onnx" / "model.onnx", n_check=24)
    assert r.max_abs_diff["prob"] <= 1e-5 and r.stored_max_abs_diff <= 1e-5
    contract = json.loads((tmp_path / "onnx" / "preprocess.json").read_text())
    assert contract["source"]["folds"] == [0, 1]
    assert [o["name"] for o in contract["outputs"]] == ["prob"]
    assert contract["inputs"][0]["preprocess"]["mode"] == "none"
    # independently: per-fold training modules on raw test images, averaged
    with open_dataset(load_config(run / "config.yaml").data.paths) as ds:  # the run's order
        x, _ = ds.read(pred["test_index"])
    with torch.no_grad():
        folds = [load_fold_module(run, k).scores(torch.from_numpy(x)).numpy() for k in (0, 1)]
    session = ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"])
    (prob,) = session.run(["prob"], {"image": x})
    np.testing.assert_allclose(prob[:, 0], np.mean(folds, axis=0), rtol=0, atol=1e-5)
    t = _read(predict(r.path, [runs["egamma"]], tmp_path / "p.parquet").path)
    assert np.abs(_by_index(t, "score", pred["test_index"]) - pred["test_score"]).max() <= 1e-5


def test_regression_ensemble_torchscript_and_root_output(runs, tmp_path):
    import uproot

    run, pred = runs["regression"], _npz(runs["regression"])
    r = export_ensemble(run, "torchscript", tmp_path / "ts" / "model.pt", n_check=20)
    assert r.max_abs_diff["value"] <= 1e-3 and r.stored_max_abs_diff is not None
    out = predict(r.path, [runs["topmass"]], tmp_path / "p.root", fmt="root").path
    with uproot.open(out) as f:
        a = f["predictions"].arrays(library="np")
        files = str(f["source_files"]).split("\n")
    assert set(a) == {"source_id", "row", "index", "label", "value"}
    assert files == [str(runs["topmass"])]
    np.testing.assert_allclose(_by_index(a, "value", pred["test_index"]), pred["test_score"], rtol=1e-6, atol=1e-4)


def test_default_fold_follows_the_monitored_metric_for_regression(runs):
    m = json.loads((runs["regression"] / "metrics.json").read_text())
    k, reason = choose_fold(runs["regression"])
    assert m["monitor"] == "val_mae" and k == int(np.argmin(m["fold_mae"]))
    assert "best validation MAE" in reason


def test_a_stacked_ensemble_export_says_why_not(runs, tmp_path):
    from e2evision.baselines import physics_baseline
    from e2evision.ensemble import build_ensemble

    cfg = load_config(runs["binary"] / "config.yaml")
    physics_baseline(cfg, tmp_path / "baseline")
    build_ensemble([runs["binary"], tmp_path / "baseline"], tmp_path / "stack", method="stack")
    for call in (
        lambda: export_model(tmp_path / "stack", "onnx", tmp_path / "m.onnx"),
        lambda: export_ensemble(tmp_path / "stack", "onnx", tmp_path / "m.onnx"),
    ):
        with pytest.raises(ExportError, match="'stack' ensemble of finished runs cannot be"):
            call()
    with pytest.raises(PredictError, match="ensemble.json: an ensemble of finished runs has no"):
        predict(tmp_path / "stack", [runs["egamma"]], tmp_path / "p.parquet")


def test_data_that_does_not_fit_the_model_is_a_one_line_error(runs, tmp_path):
    shape = r"images are \(8, 16, 16\) \(C, H, W\), the model takes \(2, 32, 32\)"
    with pytest.raises(PredictError, match=shape):
        predict(runs["binary"], [runs["topmass"]], tmp_path / "p.parquet", data_format="auto", image_size=[16, 16])
    # the run's own reader (egamma HDF5) on a Parquet file
    with pytest.raises(PredictError, match="top_gun_opendata_0.parquet: cannot open as HDF5"):
        predict(runs["binary"], [runs["topmass"]], tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()

    class Stub:
        paths, image_shape, channel_names = [Path("new.h5")], (2, 32, 32), ["energy", "time"]
        scalar_names, task, class_names = ["pt"], "regression", []

    base = dict(source="run.json", image_shape=(2, 32, 32), channel_names=["energy", "time"], class_names=[])
    scalars = r"new.h5: the model takes scalar inputs \[.eta.\].*no \[.eta.\]"
    with pytest.raises(PredictError, match=scalars):
        check_data(Stub(), ModelContract(**base, scalar_names=["eta"], task="regression"))
    with pytest.raises(PredictError, match="new.h5: the data is a regression dataset, the model a"):
        check_data(Stub(), ModelContract(**base, scalar_names=[], task="binary"))
    swapped = {**base, "channel_names": ["time", "energy"]}
    order = r"channels are \[.energy., .time.\], the model takes \[.time., .energy.\]"
    with pytest.raises(PredictError, match=order):
        check_data(Stub(), ModelContract(**swapped, scalar_names=[], task="regression"))
    assert check_data(Stub(), ModelContract(**base, scalar_names=["pt"], task="regression")) == [0]


def test_cli_predict(runs, tmp_path):
    out = tmp_path / "p.parquet"
    res = CliRunner().invoke(
        app,
        [
            "predict",
            str(runs["binary"]),
            "--data",
            str(runs["egamma"]),
            "--out",
            str(out),
            "--batch-size",
            "7",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "scored 120 samples with the mean of folds [0, 1]" in res.output
    pred = _npz(runs["binary"])
    got = _by_index(_read(out), "score", pred["test_index"])
    assert np.abs(got - pred["test_score"]).max() <= 1e-6
    bad = CliRunner().invoke(
        app,
        [
            "predict",
            str(runs["binary"]),
            "--data",
            str(runs["topmass"]),
            "--out",
            str(tmp_path / "q.parquet"),
            "--data-format",
            "auto",
            "--option",
            "image_size=[16, 16]",
        ],
    )
    assert bad.exit_code == 2 and "error:" in bad.output
    assert "the model takes (2, 32, 32)" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_multiclass_scores_per_class_and_one_file_per_row(lens_run, tmp_path):
    run, data = lens_run
    pred = _npz(run)
    t = _read(predict(run, [data], tmp_path / "p.parquet").path)
    classes = ["axion", "cdm", "no_sub"]
    assert list(t) == ["source", "row", "index", "label", *[f"score_{c}" for c in classes]]
    scores = np.stack([_by_index(t, f"score_{c}", pred["test_index"]) for c in classes], axis=1)
    assert np.abs(scores - pred["test_score"]).max() <= 1e-6
    # each row's source is its own .npy file, inside the folder of its class
    assert (t["row"] == 0).all() and len(set(t["source"])) == t["index"].size
    assert all(Path(s).parent.name == classes[int(y)] for s, y in zip(t["source"], t["label"]))
    x = np.load(t["source"][5])
    assert x.shape == (16, 16)


def test_cli_export_ensemble(runs, tmp_path):
    run = runs["binary"]
    out = tmp_path / "ts" / "model.pt"
    res = CliRunner().invoke(
        app,
        ["export", str(runs["binary"]), "--ensemble", "--format", "torchscript", "--out", str(out), "--n-check", "8"],
    )
    assert res.exit_code == 0, res.output
    assert "chose the fold ensemble: mean of folds [0, 1]" in res.output and out.is_file()
    pred = _npz(runs["binary"])
    module = torch.jit.load(str(out))
    from e2evision.datasets import open_dataset

    with open_dataset(load_config(run / "config.yaml").data.paths) as ds:  # the run's order
        x, _ = ds.read(pred["test_index"][:8])
    with torch.no_grad():
        (prob,) = module(torch.from_numpy(x))
    np.testing.assert_allclose(prob.numpy()[:, 0], pred["test_score"][:8], rtol=0, atol=1e-5)
    both = CliRunner().invoke(
        app,
        [
            "export",
            str(runs["binary"]),
            "--ensemble",
            "--fold",
            "0",
            "--format",
            "torchscript",
            "--out",
            str(tmp_path / "m.pt"),
        ],
    )
    assert both.exit_code == 2 and "--ensemble exports every fold; drop --fold" in both.output
