"""K-fold training into a run directory: contents, provenance, reuse of finished folds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from e2evision.config import load_config
from e2evision.datasets import EgammaHDF5
from e2evision.models import create_model
from e2evision.training import run_experiment, split_indices
from e2evision.training.module import BinaryClassifier
from e2evision.transforms.normalize import ChannelNormalizer

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.max_epochs=2", "train.folds=2", "train.progress=false", "train.batch_size=32",
        "model.kwargs.widths=[8, 16]"]


def _cfg(paths, *extra):
    return load_config(ROOT / "configs/egamma_resnet15.yaml",
                       [f"data.paths={json.dumps([str(p) for p in paths])}", *FAST, *extra])


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.r_[np.zeros(70), np.ones(30)].astype(np.float32)
    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml", ["data.test_fraction=0.2"])
    tv, te = split_indices(labels, cfg)
    assert np.intersect1d(tv, te).size == 0 and tv.size + te.size == 100
    assert labels[te].mean() == pytest.approx(0.3)
    tv2, te2 = split_indices(labels, cfg)
    np.testing.assert_array_equal(te, te2)
    sub = split_indices(labels, load_config(ROOT / "configs/egamma_resnet15.yaml", ["data.max_samples=50"]))
    assert sub[0].size + sub[1].size == 50


def test_run_directory_is_complete_and_reproducible(egamma_pair, tmp_path):
    p, e, x, y = egamma_pair
    out = tmp_path / "run"
    m = run_experiment(_cfg([p, e]), out)

    for name in ("config.yaml", "run.json", "metrics.json", "predictions.npz"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(m))
    assert len(metrics["fold_auc"]) == 2 and 0.0 <= metrics["test_auc"] <= 1.0
    lo, hi = metrics["test_auc_ci"]
    assert lo <= metrics["test_auc"] <= hi
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 7 and run["versions"]["torch"] == torch.__version__
    assert run["data"]["fingerprint"].startswith("sha256:") and run["finished_at"]
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["name"] == "resnet15"

    pred = np.load(out / "predictions.npz", allow_pickle=False)
    assert pred["oof_score"].shape == (metrics["n_trainval"],) and np.isfinite(pred["oof_score"]).all()
    assert set(np.unique(pred["oof_fold"])) == {0, 1}
    assert pred["test_fold_scores"].shape == (2, metrics["n_test"])
    np.testing.assert_allclose(pred["test_score"], pred["test_fold_scores"].mean(0))
    np.testing.assert_array_equal(pred["test_label"], y[pred["test_index"]])  # indices point at the data
    assert np.intersect1d(pred["test_index"], pred["oof_index"]).size == 0

    # The saved safetensors weights alone reproduce fold 0's test scores from raw images.
    model = create_model("resnet15", in_chans=2, img_size=32, widths=[8, 16])
    module = BinaryClassifier(model, ChannelNormalizer(2, "scale", clip=50.0), _cfg([p, e]).train)
    module.load_state_dict(load_file(out / "fold_0" / "model.safetensors"))
    module.eval()
    with torch.no_grad():
        xs, _ = EgammaHDF5([p, e]).read(pred["test_index"])
        scores = torch.sigmoid(module(torch.from_numpy(xs))).numpy()
    np.testing.assert_allclose(scores, pred["test_fold_scores"][0], rtol=1e-5, atol=1e-6)
    # The per-epoch history pairs each epoch's train loss with that epoch's validation (as
    # Lightning's own CSV log has them), so learning curves are not shifted by one epoch.
    logged: dict[int, dict[str, float]] = {}
    with open(out / "fold_0" / "logs" / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            logged.setdefault(int(row["epoch"]), {}).update({k: float(v) for k, v in row.items()
                                                            if v and k in ("train_loss", "val_auc")})
    hist0 = [h for h in metrics["history"] if h["fold"] == 0]
    assert [h["epoch"] for h in hist0] == sorted(logged)
    for h in hist0:
        assert h["train_loss"] == pytest.approx(logged[h["epoch"]]["train_loss"])
        assert h["val_auc"] == pytest.approx(logged[h["epoch"]]["val_auc"])
    norm = json.loads((out / "fold_0" / "normalizer.json").read_text())
    assert norm["mode"] == "scale" and len(norm["scale"]) == 2

    # Same seed, fresh directory: identical results (deterministic on CPU).
    m2 = run_experiment(_cfg([p, e]), tmp_path / "run2")
    assert m2["fold_auc"] == m["fold_auc"] and m2["test_auc"] == m["test_auc"]


def test_finished_folds_are_reused_and_guarded(egamma_pair, tmp_path):
    p, e, *_ = egamma_pair
    out = tmp_path / "run"
    first = run_experiment(_cfg([p, e]), out)
    stamp = (out / "fold_1" / "model.safetensors").stat().st_mtime_ns
    (out / "metrics.json").unlink()  # as if interrupted after both folds finished
    again = run_experiment(_cfg([p, e]), out)
    assert (out / "fold_1" / "model.safetensors").stat().st_mtime_ns == stamp  # not retrained
    assert again["fold_auc"] == first["fold_auc"] and again["test_auc"] == first["test_auc"]
    with pytest.raises(RuntimeError, match="different config or data split"):
        run_experiment(_cfg([p, e], "train.lr=0.01"), out)


def test_no_data_is_a_clear_error(tmp_path):
    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml")
    with pytest.raises(ValueError, match="no data: set data.paths"):
        run_experiment(cfg, tmp_path / "x")
