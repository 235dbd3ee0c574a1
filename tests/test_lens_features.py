"""Lens physics features against hand counts on constructed images, files beside the data, and the
lensing simulator's known Einstein radius and lens centre."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from e2evision.cli import app
from e2evision.datasets import DeepLenseFolder
from e2evision.features import FEATURE_NAMES, lens_features, read_features, write_features
from e2evision.features.lensing import COLUMNS, LensFeatureParams
from e2evision.transforms import canonicalize

RAW = LensFeatureParams(smooth_sigma=0.0)  # no smoothing: pixel counts are exact


def radius_grid(h: int, w: int, cx: float, cy: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.hypot(x - cx, y - cy)


def blob(h: int, w: int, cx: float, cy: float, amp: float, sigma: float = 1.2) -> np.ndarray:
    return amp * np.exp(-0.5 * radius_grid(h, w, cx, cy) ** 2 / sigma**2)


# ------------------------------------------------------------------------------------------------
# constructed images


def test_ring_area_is_the_pixel_count_of_a_known_annulus():
    r1, r2 = radius_grid(50, 64, 30.3, 25.6), radius_grid(50, 64, 20.0, 22.5)
    x = np.stack([0.2 + ((r1 >= 8) & (r1 < 12)), 0.2 + 0.5 * ((r2 >= 5) & (r2 < 15))])
    count = np.array([np.count_nonzero((r1 >= 8) & (r1 < 12)), np.count_nonzero((r2 >= 5) & (r2 < 15))])
    f = lens_features(x, RAW)
    np.testing.assert_array_equal(f["ring_area_px"], count)
    np.testing.assert_allclose(f["ring_fraction"], count / (50 * 64))
    np.testing.assert_allclose(f["ring_area_arcsec2"], count * 0.05**2)
    coarse = lens_features(x, LensFeatureParams(smooth_sigma=0.0, pixel_scale_arcsec=0.2))
    np.testing.assert_allclose(coarse["ring_area_arcsec2"], count * 0.04)

    noisy = x + np.random.default_rng(0).normal(0.0, 0.05, x.shape)  # 3σ cut: a few false pixels
    area = lens_features(noisy, RAW)["ring_area_px"]
    assert (np.abs(area - count) <= 12).all()


def test_bright_peaks_are_counted_with_threshold_and_minimum_separation():
    h, w = 60, 80
    img = (
        blob(h, w, 10, 10, 1.0)
        + blob(h, w, 40, 15, 0.8)
        + blob(h, w, 62, 45, 0.6)
        + blob(h, w, 20, 45, 0.5)
        + blob(h, w, 70, 10, 0.2)  # under 30 % of the peak: not bright
        + blob(h, w, 44, 40, 0.7)
        + blob(h, w, 47, 41, 0.65)
    )  # 3 px apart: one peak
    x = np.stack([img, np.zeros((h, w)), img[::-1, ::-1].copy()])
    f = lens_features(x)
    assert f["n_peaks"].tolist() == [5, 0, 5]
    # Unsmoothed, the close pair (σ 1.2 px, 3.2 px apart) has two maxima; a 3×3 neighbourhood
    # keeps both, the default 11×11 one only the brighter.
    assert lens_features(x, LensFeatureParams(smooth_sigma=0.0, min_distance=1))["n_peaks"][0] == 6
    assert lens_features(x, RAW)["n_peaks"][0] == 5
    low = lens_features(x, LensFeatureParams(peak_fraction=0.1))["n_peaks"]
    assert low[0] == 6  # the faint blob counts once the threshold is under it

    flat = np.zeros((1, 30, 30))
    flat[0, 5:8, 5:8] = 1.0  # a plateau: nine equal maxima, one peak
    flat[0, 20:22, 15:19] = 0.8
    assert lens_features(flat, RAW)["n_peaks"].tolist() == [2]


def test_einstein_radius_is_the_peak_of_the_azimuthal_profile():
    h, w = 80, 90
    cx, cy, radius = 40.2, 35.7, 17.3
    ring = np.exp(-0.5 * ((radius_grid(h, w, cx, cy) - radius) / 1.2) ** 2)
    r = radius_grid(h, w, cx, cy)
    arc = ring * (np.arctan2(np.mgrid[0:h, 0:w][0] - cy, np.mgrid[0:h, 0:w][1] - cx) > 0)
    x = np.stack([0.1 + ring, 0.1 + arc])
    f = lens_features(x, centre_x=cx, centre_y=cy)
    np.testing.assert_allclose(f["einstein_radius_px"], radius, atol=0.25)
    np.testing.assert_allclose(f["einstein_radius_arcsec"], f["einstein_radius_px"] * 0.05)
    auto = lens_features(x[:1])  # the detected centre of a full ring is its centre
    assert abs(auto["einstein_radius_px"][0] - radius) < 0.25
    assert abs(auto["centre_x_px"][0] - cx) < 0.05 and abs(auto["centre_y_px"][0] - cy) < 0.05

    # Hand reference: mean of the raw ring in each 1-pixel annulus, one annulus at a time.
    raw = lens_features(x[:1], RAW, centre_x=cx, centre_y=cy)["einstein_radius_px"][0]
    means = [ring[(r >= k) & (r < k + 1)].mean() for k in range(2, 35)]
    k_best = 2 + int(np.argmax(means))
    assert k_best <= raw < k_best + 1


def test_asymmetry_of_mirrored_squares():
    def squares(a: float, b: float) -> np.ndarray:
        img = np.zeros((40, 61))
        img[10:14, 8:12] = a  # mirror of the other square through (x, y) = (30, 20)
        img[27:31, 49:53] = b
        return img

    x = np.stack([squares(1.0, 0.5), squares(0.7, 0.7), squares(1.0, 0.0)])
    f = lens_features(x, RAW, centre_x=30.0, centre_y=20.0)
    np.testing.assert_allclose(f["asymmetry"], [1 / 3, 0.0, 1.0], atol=1e-12)  # |a−b|/(a+b)
    half = np.zeros((1, 40, 61))
    half[0, 18:22, 10:14] = 1.0
    half[0, 18:22, 48:52] = 1.0  # mirror through x = 30.5 (a half-pixel centre): symmetric
    assert lens_features(half, RAW, centre_x=30.5, centre_y=19.5)["asymmetry"][0] == 0.0
    edge = np.zeros((1, 40, 61))
    edge[0, 18:22, 0:4] = 1.0  # its mirror through x = 50 falls outside the image: unmatched
    edge[0, 18:22, 58:61] = 1.0  # the mirror of this strip (x = 40..42) is dark
    assert lens_features(edge, RAW, centre_x=50.0, centre_y=19.5)["asymmetry"][0] == 1.0


def test_empty_images_give_finite_zero_features_and_errors_name_the_problem():
    f = lens_features(np.full((2, 1, 20, 30), 0.3))
    assert list(f) == list(COLUMNS)
    for name in FEATURE_NAMES:
        assert np.isfinite(f[name]).all() and (f[name] == 0).all(), name
    assert f["centre_x_px"].tolist() == [14.5, 14.5] and f["centre_y_px"].tolist() == [9.5, 9.5]
    bad = np.zeros((3, 20, 20))
    bad[2, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite pixels in sample 2"):
        lens_features(bad)
    with pytest.raises(ValueError, match=r"got shape \(20, 20\)"):
        lens_features(np.zeros((20, 20)))
    with pytest.raises(ValueError, match="both centre_x and centre_y"):
        lens_features(np.zeros((1, 20, 20)), centre_x=3.0)
    with pytest.raises(ValueError, match="peak_fraction must be in"):
        LensFeatureParams(peak_fraction=1.5)
    with pytest.raises(ValueError, match="min_distance must be an integer"):
        LensFeatureParams(min_distance=0)
    with pytest.raises(ValueError, match="pixel_scale_arcsec"):
        LensFeatureParams(pixel_scale_arcsec=float("nan"))


# ------------------------------------------------------------------------------------------------
# whole folders


@pytest.fixture
def lens_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    for k, name in enumerate(["axion", "cdm", "no_sub"]):
        (tmp_path / name).mkdir()
        for i in range(2):
            r = radius_grid(40, 40, 19.0 + k, 20.0 - i)
            img = np.exp(-0.5 * ((r - 8.0 - k) / 1.2) ** 2) + rng.normal(0, 0.02, r.shape)
            np.save(tmp_path / name / f"img{i}.npy", img[None])
    return tmp_path


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_features_are_stored_beside_the_images_keyed_by_file(lens_folder: Path, suffix: str):
    meta = {"image": {"pixel_scale_arcsec": 0.1}}
    (lens_folder / "metadata.json").write_text(json.dumps(meta))
    out = write_features(lens_folder, lens_folder / f"features{suffix}", batch_size=4)
    table = read_features(out)
    keys = [f"{c}/img{i}.npy" for c in ("axion", "cdm", "no_sub") for i in (0, 1)]
    assert table["file"].tolist() == keys
    assert table["class"].tolist() == ["axion"] * 2 + ["cdm"] * 2 + ["no_sub"] * 2
    assert table["label"].tolist() == [0, 0, 1, 1, 2, 2]
    with DeepLenseFolder(lens_folder) as ds:
        images, _ = ds.read(range(6))
        assert ds.n_samples == 6  # the table does not disturb the reader
    direct = lens_features(images, LensFeatureParams(pixel_scale_arcsec=0.1))
    for name in COLUMNS:
        np.testing.assert_array_equal(table[name], direct[name], err_msg=name)
    np.testing.assert_allclose(table["einstein_radius_px"], [8, 8, 9, 9, 10, 10], atol=0.4)
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["pixel_scale_source"] == "metadata.json"
    assert sidecar["params"]["pixel_scale_arcsec"] == 0.1 and sidecar["n_samples"] == 6
    assert not [p for p in lens_folder.iterdir() if p.name.startswith(".")]  # no temporary files


def test_cli_features_writes_the_default_table(lens_folder: Path):
    result = CliRunner().invoke(app, ["features", str(lens_folder), "--pixel-scale", "0.08"])
    assert result.exit_code == 0, result.output
    table = read_features(lens_folder / "features.csv")
    assert table["index"].tolist() == list(range(6))
    np.testing.assert_allclose(table["einstein_radius_arcsec"], table["einstein_radius_px"] * 0.08)
    assert "einstein_radius_arcsec" in result.output and "from given" in result.output
    bad = CliRunner().invoke(app, ["features", str(lens_folder / "missing")])
    assert bad.exit_code == 2 and "not found" in bad.output


# ------------------------------------------------------------------------------------------------
# the simulator


requires_sim = pytest.mark.skipif(
    importlib.util.find_spec("lenstronomy") is None or importlib.util.find_spec("astropy") is None,
    reason="needs the optional simulation extra: pip install 'e2evision[sim]'",
)


@requires_sim
@pytest.mark.slow
def test_simulated_lenses_einstein_radius_and_lens_centre():
    from e2evision.simulate.lensing import LensingConfig, simulate_lens

    config = LensingConfig()
    samples = [simulate_lens(c, i, seed=21, config=config) for c in ("no_sub", "cdm", "axion") for i in range(3)]
    x = np.stack([s.image for s in samples])
    pix = config.pixel_scale_arcsec
    theta = np.array([s.params["theta_E_arcsec"] for s in samples])
    src_x = np.array([s.params["source_x_arcsec"] for s in samples]) / pix
    src_y = np.array([s.params["source_y_arcsec"] for s in samples]) / pix
    middle = (config.num_pix - 1) / 2  # the lens sits at the image centre

    f = lens_features(x, LensFeatureParams(pixel_scale_arcsec=pix))
    for name in COLUMNS:
        assert np.isfinite(f[name]).all(), name
    err = f["einstein_radius_arcsec"] - theta
    assert np.abs(err[:3]).max() < 0.1  # no_sub: the ring sits at θ_E = 1.66″ (33 px)
    assert np.abs(err).max() < 0.2  # substructure mass inside the ring enlarges cdm/axion rings
    assert (f["ring_fraction"] > 0.03).all() and (f["n_peaks"] >= 1).all()
    assert ((f["asymmetry"] > 0) & (f["asymmetry"] < 1)).all()

    # For an isothermal lens the ring is the circle of radius θ_E about the source position, so
    # the ROI centre is the lens centre shifted by the source offset (up to 0.35″ = 7 px each way).
    cx, cy = f["centre_x_px"], f["centre_y_px"]
    assert np.hypot(cx - middle - src_x, cy - middle - src_y).max() < 2.0
    assert (np.hypot(cx - middle, cy - middle) < np.hypot(src_x, src_y) + 2.0).all()

    crops, frame = canonicalize(x, 96)
    assert crops.shape == (9, 96, 96) and np.isfinite(crops).all()
    np.testing.assert_allclose(frame.radius, theta / pix, atol=4.0)
