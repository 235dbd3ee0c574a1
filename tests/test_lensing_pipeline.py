"""Seed 004's lensing pipeline end to end at toy size: simulate → features → tune the learning rate →
ablation (image only / features only / both) → report, with the shipped config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from e2evision.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TOY = [
    "model.name=vit_sd_micro", "model.kwargs={patch_size: 8, embed_dim: 16, depth: 1, num_heads: 2}",
    "preprocess.lens_roi.size=40", "train.folds=2", "train.max_epochs=2", "train.batch_size=16",
    "train.progress=false", "train.early_stopping_patience=null", "train.warmup_epochs=0",
    "train.checkpoint_every_n_steps=null", "tune.n_startup_trials=2",
]


@pytest.mark.slow
def test_lensing_pipeline_end_to_end(tmp_path):
    from e2evision.features.lensing import write_features
    from e2evision.report import build_report
    from e2evision.simulate.lensing import LensingConfig, write_lensing
    from e2evision.training.ablation import run_ablation
    from e2evision.tuning import run_study

    data = tmp_path / "lenses"
    write_lensing(data, 48, seed=5, config=LensingConfig(num_pix=64, pixel_scale_arcsec=0.1), progress=False)
    table = write_features(data)
    assert table == data / "features.csv"

    cfg = load_config(ROOT / "configs" / "lensing_vit_sd_fused.yaml", [f"data.paths=[{data}]", *TOY])
    study = tmp_path / "study"
    summary = run_study(cfg, "lens_lr", 2, out_dir=study)
    assert summary["n_complete"] == 2
    best = load_config(study / "best_config.yaml")
    assert best.train.lr == pytest.approx(summary["best"]["params"]["train.lr"])
    assert best.data.scalars == cfg.data.scalars and best.preprocess.lens_roi.size == 40

    out = tmp_path / "ablation"
    result = run_ablation(best, out, n_boot=200)
    arms = {r["arm"]: r for r in result["arms"]}
    assert list(arms) == ["image", "features", "both"]
    assert arms["features"]["model"] == "scalar_mlp" and arms["both"]["model"] == "vit_sd_micro"
    assert result["task"] == "multiclass" and result["metric"] == "test_auc"
    for arm, row in arms.items():
        assert 0.0 <= row["test"] <= 1.0 and set(row["per_class"]) == {"axion", "cdm", "no_sub"}
        info = json.loads((out / arm / "run.json").read_text())
        assert info["data"]["model_scalars"] == ([] if arm == "image" else cfg.data.scalars)
    # the three arms were scored on the same test samples; the difference is the paired one
    idx = [np.load(out / arm / "predictions.npz")["test_index"] for arm in arms]
    assert all(np.array_equal(idx[0], i) for i in idx[1:])
    d = result["differences"]["both_minus_image"]
    assert d["value"] == pytest.approx(arms["both"]["test"] - arms["image"]["test"], abs=1e-9)
    assert d["low"] <= d["value"] <= d["high"] and 0 <= d["p_value"] <= 1
    assert [Path(p).name for p in result["figures"]] == ["examples.png", "features.png"]
    assert json.loads((out / "ablation.json").read_text())["arms"][2]["arm"] == "both"

    # the in-graph ROI step is not exportable yet: a clear error, and nothing is published
    from e2evision.export import ExportError, export_model

    with pytest.raises(ExportError, match=r"lens ROI step \(preprocess.lens_roi\)"):
        export_model(out / "both", "torchscript", tmp_path / "export" / "lens.pt", n_check=8)
    assert not (tmp_path / "export" / "lens.pt").exists()

    page = build_report([out, study], tmp_path / "report.html", saliency=False).read_text()
    assert "Ablation: image only / features only / both" in page
    assert "Hyper-parameter search: lens_lr" in page
    for arm in arms:
        assert f"lensing_vit_sd_fused_{arm}" in page or f"lens_lr_best_{arm}" in page
    assert page.count("data:image/png;base64") >= 5  # crops, features, history, + the runs' figures
