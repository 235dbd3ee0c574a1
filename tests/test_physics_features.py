"""Expert features on constructed images (values worked out by hand) and the GBDT baseline run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from e2evision.features import jet_images, shower_shapes
from e2evision.features.jet_images import PIXEL, jet_features


def _jet(pixels: list[tuple[int, int, float]], size: int = 125, channels: int = 3) -> np.ndarray:
    x = np.zeros((1, channels, size, size))
    for i, (r, c, pt) in enumerate(pixels):
        x[0, i % channels, r, c] += pt
    return x


def test_two_prong_jet_mass_girth_and_nsubjettiness():
    c = 62  # the centre pixel of 125
    x = _jet([(c, c - 10, 30.0), (c, c + 10, 10.0)])
    f = dict(zip(jet_images.NAMES, jet_features(x)[0]))
    dphi = 20 * PIXEL
    assert f["pt"] == pytest.approx(40.0)
    assert f["mass"] == pytest.approx(np.sqrt(2 * 30 * 10 * (1 - np.cos(dphi))), rel=1e-9)  # Δη = 0
    # centroid sits at φ = (30·(−10) + 10·10)/40 = −5 pixels; distances 5 and 15 pixels
    assert f["girth"] == pytest.approx((30 * 5 * PIXEL + 10 * 15 * PIXEL) / 40, rel=1e-9)
    assert f["multiplicity"] == 2 and f["ptd"] == pytest.approx(np.sqrt(900 + 100) / 40)
    assert f["tau1"] == pytest.approx((30 * 5 + 10 * 15) * PIXEL / (40 * 0.4), rel=1e-6)
    assert f["tau2"] == pytest.approx(0.0, abs=1e-12) and f["tau21"] == pytest.approx(0.0, abs=1e-12)
    assert f["width_minor"] == pytest.approx(0.0, abs=1e-9)
    assert f["width_major"] == pytest.approx(np.sqrt((30 * 25 + 10 * 225) / 40) * PIXEL, rel=1e-9)


def test_three_prongs_have_small_tau32_and_bad_input_fails():
    c = 62
    three = _jet([(c, c - 12, 20.0), (c + 12, c + 6, 20.0), (c - 12, c + 6, 20.0)])
    f = dict(zip(jet_images.NAMES, jet_features(three)[0]))
    assert f["tau3"] == pytest.approx(0.0, abs=1e-12) and f["tau2"] > 0 and f["tau32"] == pytest.approx(0.0, abs=1e-12)
    assert f["tau21"] > 0.3
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        jet_features(np.zeros((3, 125, 125)))
    bad = three.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jet_features(bad)


def test_shower_shapes_of_constructed_crops():
    x = np.zeros((3, 2, 32, 32))
    x[0, 0, 16, 16] = 50.0  # one crystal
    x[1, 0, 15:18, 15:18] = 2.0  # a uniform 3×3 block
    x[1, 0, 16, 16] = 3.0
    x[2, 0, 16, 16] = 40.0  # seed plus a brem-like deposit 5 crystals along φ
    x[2, 0, 16, 21] = 10.0
    x[2, 1, 16, 16], x[2, 1, 16, 21] = 1.0, 3.0  # hit times (ns)
    f = {n: v for n, v in zip(shower_shapes.NAMES, shower_shapes.shower_shape_features(x).T)}
    assert f["r9"][0] == 1.0 and f["e_max_over_e3x3"][0] == 1.0 and f["sigma_ieta"][0] == 0.0
    assert f["e_total"][1] == pytest.approx(19.0) and f["e_max_over_e3x3"][1] == pytest.approx(3 / 19)
    assert f["e3x3_over_e5x5"][1] == pytest.approx(1.0) and f["n_hits"][1] == 9
    # the off-seed deposit is outside the 5×5 window but inside the φ strip
    assert f["r9"][2] == pytest.approx(40 / 50) and f["phi_strip_fraction"][2] == pytest.approx(50 / 40)
    assert f["time_mean"][2] == pytest.approx((40 * 1 + 10 * 3) / 50)
    assert f["time_rms"][2] == pytest.approx(np.sqrt((40 * (1 - 1.4) ** 2 + 10 * (3 - 1.4) ** 2) / 50))
    # log-weighted σ: symmetric 3×3 with a central peak has equal widths in η and φ and no correlation
    assert f["sigma_ieta"][1] == pytest.approx(f["sigma_iphi"][1]) and f["cov_ieta_iphi"][1] == pytest.approx(0.0)


@pytest.mark.slow
def test_baseline_run_shares_the_runners_split_and_reports(tmp_path, egamma_pair):
    from e2evision.baselines import physics_baseline
    from e2evision.config import load_config
    from e2evision.datasets import open_dataset
    from e2evision.datasets.split import split_indices
    from e2evision.report import build_report

    p, e, _, _ = egamma_pair
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(
        root / "configs/egamma_resnet15.yaml", [f"data.paths={json.dumps([str(p), str(e)])}", "train.folds=3"]
    )
    m = physics_baseline(cfg, tmp_path / "baseline")
    with np.load(tmp_path / "baseline" / "predictions.npz") as npz:
        tv, te = split_indices(open_dataset([p, e]).labels(), cfg)
        np.testing.assert_array_equal(npz["test_index"], te)
        np.testing.assert_array_equal(npz["oof_index"], tv)
    # the fixture's photons are narrow in φ and electrons wide: the shower shapes separate them
    assert m["test_auc"] > 0.9 and len(m["fold_auc"]) == 3 and "sigma_iphi" in m["features"]
    page = build_report([tmp_path / "baseline"], tmp_path / "r.html")
    assert "gbdt(expert features)" in page.read_text()
