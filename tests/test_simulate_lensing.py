"""The strong-lensing simulator: DeepLense layout, determinism, sharding, physics sanity, CLI."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e2evision.simulate import lensing, lensing_render
from e2evision.simulate.lensing import (
    CLASSES,
    LensingConfig,
    MissingExtraError,
    einstein_radius_arcsec,
    lensing_file_name,
    lensing_validation_plots,
    load_lensing_images,
    simulate_lens,
    vortex_half_length_arcsec,
    write_lensing,
)

# Tests that render need the optional extra; the missing-extra tests run without it.
requires_sim = pytest.mark.skipif(
    importlib.util.find_spec("lenstronomy") is None or importlib.util.find_spec("astropy") is None,
    reason="needs the optional simulation extra: pip install 'e2evision[sim]'",
)
_FAKE_VERSIONS = {"numpy": np.__version__, "python": "3"}
N = 10  # 4 axion, 3 cdm, 3 no_sub
SEED = 5
# Circular lens, circular source on the optical axis: a perfect Einstein ring, analytic checks.
CIRCULAR = LensingConfig(
    lens_ellipticity=0.0, shear_gamma=0.0, source_e1=0.0, source_e2=0.0, source_center_range_arcsec=0.0
)


@pytest.fixture(autouse=True)
def _fast_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """package_versions() imports torch (seconds); the writer only has to store what it returns."""
    monkeypatch.setattr(lensing, "package_versions", lambda extra=(): dict(_FAKE_VERSIONS))


def _write(out: Path, **kwargs: object) -> Path:
    with pytest.MonkeyPatch.context() as mp:  # module-scope fixtures run before the autouse stub
        mp.setattr(lensing, "package_versions", lambda extra=(): dict(_FAKE_VERSIONS))
        kwargs.setdefault("seed", SEED)
        return write_lensing(out, N, progress=False, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lensing")
    _write(out)
    return out


def _npy_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


def _ring_radius(image: np.ndarray, pixel: float = 0.05, bin_width: float = 0.01) -> float:
    """Radius [arcsec] of the brightest annulus about the centre (written apart from the module)."""
    n = image.shape[0]
    c = (np.arange(n) - (n - 1) / 2) * pixel
    r = np.hypot(c[None, :], c[:, None]).ravel()
    idx = (r / bin_width).astype(int)
    prof = np.bincount(idx, weights=image.ravel()) / np.maximum(np.bincount(idx), 1)
    return (int(np.argmax(prof)) + 0.5) * bin_width


def _theta_e_independent(mass_msun: float) -> float:
    """theta_E [arcsec] from first principles: flat LCDM (H0 70, Om 0.3) integrated directly."""
    h0, om = 70.0, 0.3
    c_km_s, g = 299_792.458, 4.300917270e-9  # G in Mpc (km/s)^2 / Msun

    def chi(z: float) -> float:  # comoving distance [Mpc], flat LCDM, trapezoid on a fine grid
        zz = np.linspace(0.0, z, 20001)
        inv_e = 1.0 / np.sqrt(om * (1 + zz) ** 3 + (1 - om))
        return c_km_s / h0 * float(np.sum((inv_e[1:] + inv_e[:-1]) / 2 * np.diff(zz)))

    d_l, d_s = chi(0.5) / 1.5, chi(1.0) / 2.0
    d_ls = (chi(1.0) - chi(0.5)) / 2.0
    theta = math.sqrt(4 * g * mass_msun / c_km_s**2 * d_ls / (d_l * d_s))
    return math.degrees(theta) * 3600


# ------------------------------------------------------------------------------------------------
# optional extra


def test_core_imports_without_lenstronomy_and_error_names_the_extra(tmp_path: Path) -> None:
    code = r"""
import sys
sys.modules["lenstronomy"] = None  # makes "import lenstronomy" raise ImportError
sys.modules["astropy"] = None
import e2evision, e2evision.cli, e2evision.simulate.lensing as L
assert not any(m.startswith(("lenstronomy", "astropy")) and sys.modules[m] is not None
               for m in sys.modules), "lenstronomy/astropy imported eagerly"
try:
    L.simulate_lens("no_sub", 0, 0)
except L.MissingExtraError as err:
    print("API:", err)
from typer.testing import CliRunner
args = ["simulate", "lensing", "--n", "3", "--out", "x_unused"]
res = CliRunner().invoke(e2evision.cli.app, args)
print("CLI:", res.exit_code, res.output)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "API:" in res.stdout and "pip install 'e2evision[sim]'" in res.stdout
    cli_line = res.stdout[res.stdout.index("CLI:") :]
    assert cli_line.startswith("CLI: 2") and "pip install 'e2evision[sim]'" in cli_line
    assert not (tmp_path / "x_unused").exists()


def test_missing_extra_raises_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lenstronomy", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'e2evision\[sim\]'"):
        write_lensing(tmp_path / "out", 3, progress=False)
    assert not (tmp_path / "out").exists()
    assert issubclass(MissingExtraError, ImportError)


# ------------------------------------------------------------------------------------------------
# files on disk


@requires_sim
def test_layout_shape_dtype_and_range(written: Path) -> None:
    expected = {"axion": 4, "cdm": 3, "no_sub": 3}
    for klass, count in expected.items():
        files = sorted((written / klass).glob("*.npy"))
        assert [f.name for f in files] == [f"{klass}_sim_{i:06d}.npy" for i in range(count)]
        for f in files:
            image = np.load(f, allow_pickle=False)  # plain arrays: no pickle needed
            assert image.shape == (150, 150) and image.dtype == np.float64
            assert image.min() == 0.0 and image.max() == 1.0
            assert np.isfinite(image).all()
    assert sorted(p.name for p in written.iterdir()) == ["axion", "cdm", "metadata.json", "no_sub"]


@requires_sim
def test_metadata_table_sidecar_and_config(written: Path) -> None:
    meta = json.loads((written / "metadata.json").read_text())
    assert meta["generator"] == "e2evision.simulate.lensing"
    assert (meta["seed"], meta["shard"], meta["num_shards"], meta["n_total"]) == (SEED, 0, 1, N)
    assert meta["versions"] == _FAKE_VERSIONS
    assert LensingConfig.from_json(json.dumps(meta["config"])) == LensingConfig()
    assert meta["image"]["shape"] == [150, 150] and meta["image"]["dtype"] == "float64"
    assert meta["derived"]["theta_E_arcsec"] == pytest.approx(_theta_e_independent(1e12), rel=1e-4)
    assert {c: meta["classes"][c]["label"] for c in CLASSES} == {"axion": 0, "cdm": 1, "no_sub": 2}
    for klass in CLASSES:
        table = meta["classes"][klass]["table"]
        files = sorted(p.name for p in (written / klass).glob("*.npy"))
        assert table["file"] == files
        assert len(set(map(len, table.values()))) == 1  # a rectangular table
        theta_e = meta["derived"]["theta_E_arcsec"]
        assert all(t == pytest.approx(theta_e) for t in table["theta_E_arcsec"])
        assert all(1e3 <= t <= 10**3.5 for t in table["exposure_time_s"])
        assert all(
            abs(x) <= 0.35 and abs(y) <= 0.35 for x, y in zip(table["source_x_arcsec"], table["source_y_arcsec"])
        )
    assert meta["classes"]["no_sub"]["table"]["n_point_masses"] == [0, 0, 0]
    assert meta["classes"]["axion"]["table"]["n_point_masses"] == [100] * 4
    masses = meta["classes"]["axion"]["table"]["axion_mass_ev"]
    assert all(1e-24 <= m <= 1e-22 for m in masses)
    with open(written / "axion" / "axion_mass.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == meta["classes"]["axion"]["table"]["file"]
    assert [float(r["axion_mass_ev"]) for r in rows] == masses  # repr round-trips exactly
    # The table is what simulate_lens draws for the same image.
    sample = simulate_lens("cdm", 2, SEED)
    row = {k: v[2] for k, v in meta["classes"]["cdm"]["table"].items()}
    assert row["n_point_masses"] == len(sample.point_masses)
    assert row["substructure_mass_msun"] == pytest.approx(sample.point_masses[:, 2].sum())


@requires_sim
def test_axion_object_arrays_need_pickle(written: Path, tmp_path: Path) -> None:
    _write(tmp_path, axion_object_arrays=True)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["axion_object_arrays"] is True
    masses = meta["classes"]["axion"]["table"]["axion_mass_ev"]
    for i, f in enumerate(sorted((tmp_path / "axion").glob("*.npy"))):
        with pytest.raises(ValueError, match="allow_pickle"):
            np.load(f, allow_pickle=False)
        obj = np.load(f, allow_pickle=True)
        assert obj.dtype == object and obj.shape == (2,)
        assert obj[1] == masses[i]
        # Same image as the default (plain) form of the same seed.
        np.testing.assert_array_equal(obj[0], np.load(written / "axion" / f.name))
    for klass in ("cdm", "no_sub"):  # only axion files change form
        assert _npy_files(tmp_path / klass) == _npy_files(written / klass)
    with pytest.raises(ValueError):
        load_lensing_images(tmp_path)
    loaded = load_lensing_images(tmp_path, allow_pickle=True)
    assert loaded["axion"].shape == (4, 150, 150) and loaded["axion"].dtype == np.float64


# ------------------------------------------------------------------------------------------------
# determinism and sharding


@requires_sim
def test_same_seed_same_files_other_seed_differs(written: Path, tmp_path: Path) -> None:
    _write(tmp_path / "again")
    assert _npy_files(tmp_path / "again") == _npy_files(written)
    a, b = simulate_lens("axion", 1, SEED), simulate_lens("axion", 1, SEED)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.params == b.params
    other = simulate_lens("axion", 1, SEED + 1)
    assert not np.array_equal(a.image, other.image)
    assert simulate_lens("axion", 2, SEED).params["axion_mass_ev"] != a.params["axion_mass_ev"]
    # Written image i is simulate_lens(class, i, seed).image.
    np.testing.assert_array_equal(np.load(written / "axion" / lensing_file_name("axion", 1, 4)), a.image)


@requires_sim
def test_shards_are_disjoint_and_union_equals_unsharded(written: Path, tmp_path: Path) -> None:
    shard_dir = tmp_path / "sharded"
    seen: dict[str, set[str]] = {c: set() for c in CLASSES}
    for k in range(3):
        meta_path = _write(shard_dir, shard=k, num_shards=3)
        assert meta_path.name == f"metadata_shard{k}of3.json"
        meta = json.loads(meta_path.read_text())
        for klass in CLASSES:
            files = set(meta["classes"][klass]["table"]["file"])
            assert not files & seen[klass], "shards overlap"
            seen[klass] |= files
    assert _npy_files(shard_dir) == _npy_files(written)  # same names, same bytes
    assert {c: sorted(s) for c, s in seen.items()} == {
        c: sorted(p.name for p in (written / c).glob("*.npy")) for c in CLASSES
    }
    with open(shard_dir / "axion" / "axion_mass_shard1of3.csv") as fh:
        assert fh.readline().strip() == "file,axion_mass_ev"


@requires_sim
@pytest.mark.slow
def test_workers_do_not_change_the_files(written: Path, tmp_path: Path) -> None:
    meta_path = _write(tmp_path, workers=2)
    assert _npy_files(tmp_path) == _npy_files(written)
    meta = json.loads(meta_path.read_text())
    ref = json.loads((written / "metadata.json").read_text())
    assert meta["classes"] == ref["classes"]


# ------------------------------------------------------------------------------------------------
# substructure vs its no_sub twin


@requires_sim
@pytest.mark.parametrize("klass", ["cdm", "axion"])
def test_paired_twin_shares_lens_source_noise_and_substructure_shows(klass: str) -> None:
    main_keys = (
        "theta_E_arcsec",
        "lens_e1",
        "lens_e2",
        "shear_gamma1",
        "shear_gamma2",
        "source_x_arcsec",
        "source_y_arcsec",
        "exposure_time_s",
    )
    for i in range(4):
        base = simulate_lens("no_sub", i, SEED)
        twin = simulate_lens(klass, i, SEED, paired=True)  # type: ignore[arg-type]
        unpaired = simulate_lens(klass, i, SEED)  # type: ignore[arg-type]
        assert {k: twin.params[k] for k in main_keys} == {k: base.params[k] for k in main_keys}
        assert unpaired.params["source_x_arcsec"] != base.params["source_x_arcsec"]
        # Same substructure draw whether paired or not: pairing only swaps the main-lens stream.
        np.testing.assert_array_equal(twin.point_masses, unpaired.point_masses)
        # Same noise realisation: away from the arcs the background noise dominates, and the
        # twins' residuals coincide (independent draws would be uncorrelated).
        faint = (base.model < 1e-3) & (twin.model < 1e-3)
        assert faint.sum() > 5000
        res_base, res_twin = (base.noisy - base.model)[faint], (twin.noisy - twin.model)[faint]
        res_other = (unpaired.noisy - unpaired.model)[faint]
        assert np.corrcoef(res_base, res_twin)[0, 1] > 0.95
        assert abs(np.corrcoef(res_base, res_other)[0, 1]) < 0.1
        # The substructure changes the noise-free image far beyond the noise: chi^2 of the model
        # difference under the per-pixel noise variance (Poisson + background).
        t = base.params["exposure_time_s"]
        var = base.model / t + 0.01**2
        chi2 = float(np.sum((twin.model - base.model) ** 2 / var))
        assert chi2 > 100.0, f"{klass} image {i}: substructure invisible (chi2 {chi2:.1f})"
        assert not np.array_equal(twin.image, base.image)


@requires_sim
def test_paired_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="paired"):
        simulate_lens("no_sub", 0, 0, paired=True)
    with pytest.raises(ValueError, match="class must be one of"):
        simulate_lens("sphere", 0, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        simulate_lens("cdm", -1, 0)
    with pytest.raises(ValueError, match="seed"):
        simulate_lens("cdm", 0, -3)


# ------------------------------------------------------------------------------------------------
# physics


@requires_sim
def test_einstein_radius_matches_lenstronomy_lenscosmo() -> None:
    from astropy.cosmology import FlatLambdaCDM
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo

    theta = einstein_radius_arcsec(1e12)
    assert theta == pytest.approx(_theta_e_independent(1e12), rel=1e-4)
    assert 1.5 < theta < 1.8  # a galaxy-scale ring, 1.66" at z_l 0.5, z_s 1
    cosmo = LensCosmo(0.5, 1.0, FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05))
    for mass in (1e6, 3e8, 1e12):  # subhalo, vortex element, main halo
        assert cosmo.mass_in_theta_E(einstein_radius_arcsec(mass)) == pytest.approx(mass, rel=1e-3)
    # vortex half-length hbar / (m_a v) at the lens distance, computed here from SI constants
    hbar, ev, kpc = 1.054571817e-34, 1.602176634e-19, 3.0856775814913673e19
    m_kg = 1e-22 * ev / 299_792_458.0**2
    length_kpc = hbar / (m_kg * 100e3) / kpc
    kpc_per_arcsec = cosmo.dd * 1e3 * math.pi / 180 / 3600
    assert vortex_half_length_arcsec(1e-22) == pytest.approx(length_kpc / kpc_per_arcsec, rel=1e-3)
    assert vortex_half_length_arcsec(1e-24) == pytest.approx(100 * vortex_half_length_arcsec(1e-22))


@requires_sim
def test_ring_radius_is_the_einstein_radius() -> None:
    sample = simulate_lens("no_sub", 0, SEED, CIRCULAR)
    assert _ring_radius(sample.model) == pytest.approx(einstein_radius_arcsec(1e12), abs=0.01)
    lighter = dataclasses.replace(CIRCULAR, main_halo_mass_msun=0.25e12)
    ring = _ring_radius(simulate_lens("no_sub", 0, SEED, lighter).model)
    assert ring == pytest.approx(einstein_radius_arcsec(1e12) / 2, abs=0.01)  # theta_E ~ sqrt(M)
    # Default lens: ellipticity 0.1 and shear 0.05 distort the ring by a few per cent.
    centred = LensingConfig(source_center_range_arcsec=0.0)
    for i in range(3):
        ring = _ring_radius(simulate_lens("no_sub", i, SEED, centred).model)
        assert ring == pytest.approx(einstein_radius_arcsec(1e12), abs=0.1)


@requires_sim
def test_flux_positive_and_magnification_of_a_ring() -> None:
    # A circular exponential (n = 1) source of scale length h centred behind a singular isothermal
    # lens is magnified by 2 theta_E / h in total (each radius beta maps to theta_E +- beta).
    lensed = simulate_lens("no_sub", 0, SEED, CIRCULAR)
    unlensed = simulate_lens("no_sub", 0, SEED, dataclasses.replace(CIRCULAR, main_halo_mass_msun=1.0))
    b1 = 1.678346990016661  # Sersic b_n for n = 1: gammaincinv(2, 0.5)
    h = CIRCULAR.source_r_sersic_arcsec / b1
    assert unlensed.model.sum() == pytest.approx(2 * math.pi * h**2 * 20.0 * math.exp(b1), rel=0.01)
    mu = lensed.model.sum() / unlensed.model.sum()
    assert mu == pytest.approx(2 * einstein_radius_arcsec(1e12) / h, rel=0.02)
    for klass in CLASSES:
        s = simulate_lens(klass, 0, SEED)
        assert s.model.min() >= 0 and s.model.sum() > 0 and s.noisy.sum() > 0


@requires_sim
@pytest.mark.parametrize("fwhm", [0.087, 0.15])
def test_psf_fwhm_as_set(fwhm: float) -> None:
    # A source much smaller than a pixel, centred on the corner of four pixels, with no lensing:
    # the image is the PSF convolved with four equal pixels (variance 0.025^2 per axis).
    cfg = LensingConfig(
        main_halo_mass_msun=1.0,
        source_r_sersic_arcsec=0.003,
        source_e1=0.0,
        source_e2=0.0,
        source_center_range_arcsec=0.0,
        supersampling_factor=3,
        psf_fwhm_arcsec=fwhm,
    )
    img = simulate_lens("no_sub", 0, 0, cfg).model
    c = (np.arange(150) - 74.5) * 0.05
    w = img / img.sum()
    for marginal in (w.sum(axis=0), w.sum(axis=1)):
        mean = float(marginal @ c)
        var = float(marginal @ c**2) - mean**2
        assert abs(mean) < 1e-6
        measured = 2 * math.sqrt(2 * math.log(2)) * math.sqrt(var - 0.025**2)
        assert measured == pytest.approx(fwhm, rel=0.03)


@requires_sim
def test_noise_is_poisson_plus_background() -> None:
    chi2, n_pix = 0.0, 0
    for i in range(3):
        s = simulate_lens("no_sub", i, SEED)
        t = s.params["exposure_time_s"]
        chi2 += float(np.sum((s.noisy - s.model) ** 2 / (s.model / t + 0.01**2)))
        n_pix += s.model.size
    assert chi2 / n_pix == pytest.approx(1.0, abs=0.02)  # 67,500 pixels: sd of the ratio ~0.006
    peak = simulate_lens("no_sub", 0, SEED)
    snr = peak.model.max() / math.sqrt(peak.model.max() / peak.params["exposure_time_s"] + 1e-4)
    assert 10 < snr < 40  # the public Model I quotes SNR ~ 25


@requires_sim
def test_substructure_draws_follow_the_recipe() -> None:
    cfg = LensingConfig()
    rng = np.random.default_rng(0)
    counts, masses, radii = [], [], []
    for _ in range(400):
        pm, info = lensing_render._draw_substructure(rng, "cdm", cfg)
        counts.append(len(pm))
        masses.append(pm[:, 2])
        radii.append(np.hypot(pm[:, 0], pm[:, 1]))
        assert info["substructure_mass_msun"] == pytest.approx(pm[:, 2].sum())
    m, r = np.concatenate(masses), np.concatenate(radii)
    assert np.mean(counts) == pytest.approx(25, abs=0.75)  # Poisson(25): mean = variance
    assert np.var(counts) == pytest.approx(25, rel=0.2)
    assert m.min() >= 1e6 and m.max() <= 1e10 and r.min() >= 0.25 and r.max() <= 2.0
    # Maximum-likelihood slope of a truncated power law, solved on a grid: recovers -0.9.
    grid = np.linspace(-1.5, -0.5, 2001)
    grid = grid[np.abs(grid + 1) > 1e-9]  # slope -1 is the log-uniform limit (0/0 below)
    a = grid + 1
    log_norm = np.log(a / (1e10**a - 1e6**a))
    loglik = len(m) * log_norm + grid * np.log(m).sum()
    assert grid[np.argmax(loglik)] == pytest.approx(-0.9, abs=0.04)

    for _ in range(20):
        pm, info = lensing_render._draw_substructure(rng, "axion", cfg)
        assert len(pm) == 100 and pm[:, 2].sum() == pytest.approx(3e10)
        assert 1e-24 <= info["axion_mass_ev"] <= 1e-22
        # a straight line through the lens centre, of half-length hbar / (m_a v)
        ang = info["vortex_angle_rad"]
        across = -pm[:, 0] * math.sin(ang) + pm[:, 1] * math.cos(ang)
        along = pm[:, 0] * math.cos(ang) + pm[:, 1] * math.sin(ang)
        assert np.abs(across).max() < 1e-12
        assert along.max() == pytest.approx(vortex_half_length_arcsec(info["axion_mass_ev"]))
        assert along.min() == pytest.approx(-along.max())
    pm, info = lensing_render._draw_substructure(rng, "no_sub", cfg)
    assert pm.shape == (0, 3) and info["n_point_masses"] == 0


def test_log_uniform_option() -> None:
    m = lensing_render._sample_power_law(np.random.default_rng(1), 20000, 1e6, 1e10, -1.0)
    hist, _ = np.histogram(np.log10(m), bins=4, range=(6, 10))
    assert np.all(np.abs(hist / 5000 - 1) < 0.05)


# ------------------------------------------------------------------------------------------------
# arguments, plots, CLI


@requires_sim
def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be"):
        write_lensing(tmp_path, 2, progress=False)
    with pytest.raises(ValueError, match="shard must be"):
        write_lensing(tmp_path, 6, shard=2, num_shards=2, progress=False)
    with pytest.raises(ValueError, match="workers"):
        write_lensing(tmp_path, 6, workers=0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        write_lensing(tmp_path, 6, seed=-1, progress=False)
    with pytest.raises(ValueError, match="z_source > z_lens"):
        LensingConfig(z_source=0.4)
    with pytest.raises(ValueError, match="psf_fwhm_arcsec"):
        LensingConfig(psf_fwhm_arcsec=0.0)
    with pytest.raises(ValueError, match="subhalo_mass_range_msun"):
        LensingConfig(subhalo_mass_range_msun=(1e10, 1e6))
    assert list(tmp_path.iterdir()) == []


@requires_sim
@pytest.mark.slow
def test_validation_plots(written: Path, tmp_path: Path) -> None:
    images = load_lensing_images(written)
    assert {c: v.shape for c, v in images.items()} == {
        "axion": (4, 150, 150),
        "cdm": (3, 150, 150),
        "no_sub": (3, 150, 150),
    }
    paths = lensing_validation_plots(images, tmp_path, seed=SEED, n_examples=3)
    assert sorted(p.name for p in paths) == [
        "lensing_examples.png",
        "lensing_mean_image.png",
        "lensing_radial_profile.png",
        "lensing_substructure_difference.png",
    ]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@requires_sim
def test_cli_simulate_lensing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from e2evision.cli import app

    runner = CliRunner()
    out = tmp_path / "data"
    res = runner.invoke(
        app,
        [
            "simulate",
            "lensing",
            "--n",
            "6",
            "--out",
            str(out),
            "--seed",
            "3",
            "--shard",
            "1",
            "--num-shards",
            "2",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "metadata_shard1of2.json" in res.output
    assert sorted(p.name for p in (out / "cdm").glob("*.npy")) == ["cdm_sim_000001.npy"]
    np.testing.assert_array_equal(np.load(out / "cdm" / "cdm_sim_000001.npy"), simulate_lens("cdm", 1, 3).image)
    for args, message in (
        (["--n", "2"], "--n must be at least 3"),
        (["--n", "6", "--shard", "2", "--num-shards", "2"], "--shard must be in"),
        (["--n", "6", "--workers", "0"], "--workers must be >= 1"),
        (["--n", "6", "--seed", "-1"], "--seed must be >= 0"),
        (["--n", "6", "--num-shards", "0"], "--num-shards must be >= 1"),
    ):
        res = runner.invoke(app, ["simulate", "lensing", "--out", str(tmp_path / "bad"), *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
    assert not (tmp_path / "bad").exists()


@requires_sim
@pytest.mark.slow
def test_cli_plots_and_object_arrays(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from e2evision.cli import app

    res = CliRunner().invoke(
        app,
        [
            "simulate",
            "lensing",
            "--n",
            "3",
            "--out",
            str(tmp_path / "d"),
            "--plots",
            str(tmp_path / "p"),
            "--axion-object-arrays",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    axion = np.load(tmp_path / "d" / "axion" / "axion_sim_000000.npy", allow_pickle=True)
    assert axion.shape == (2,)
    assert len(list((tmp_path / "p").glob("*.png"))) == 4
