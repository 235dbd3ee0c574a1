"""Jet simulators (Pythia 8 + FastJet): public Parquet schemas, determinism, shards, physics, CLI.

Geometry helpers are checked against independent computations (circle intersections, brute-force
closest approach, two-particle mass formula). Simulator tests without physics content run with
multiparton interactions off (10x faster); the physics tests use the defaults (MPI on).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e2evision.simulate import jets as J
from e2evision.simulate.jets import (
    JetSimConfig,
    MissingSimulatorError,
    jet_config,
    jet_file_name,
    read_metadata,
    simulate_jets,
    write_jets,
)
from e2evision.simulate.pixelate import (
    CRYSTAL_DETA,
    CRYSTAL_DPHI,
    bend_phi,
    crystal_eta,
    crystal_phi,
    image_girth,
    image_mass,
    impact_parameters,
    layer_crossings,
    pixelate,
    spread_towers,
)
from e2evision.simulate.response import ResponseConfig

HAVE_SIM = all(importlib.util.find_spec(m) is not None for m in ("pythia8mc", "fastjet", "awkward"))
needs_sim = pytest.mark.skipif(not HAVE_SIM, reason="pythia8mc/fastjet/awkward not installed (extra e2evision[sim])")
NESTED_DOUBLE = "list<element: list<element: list<element: double>>>"  # what pyarrow 26 writes
_FAKE_VERSIONS = {"numpy": np.__version__, "python": "3"}


@pytest.fixture(autouse=True)
def _fast_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """package_versions() imports torch (seconds); the writer only has to store what it returns."""
    monkeypatch.setattr(J, "package_versions", lambda: dict(_FAKE_VERSIONS))


def _fast(dataset: str, **kw: object) -> JetSimConfig:
    """No multiparton interactions: ~1 ms per event, for tests of plumbing rather than physics.

    The detector response stays on (the default) with a small pile-up pool (40 events, 0.1 s).
    """
    return jet_config(dataset, mpi=False, **{"response": ResponseConfig(pileup_pool_size=40), **kw})


def _read_images(path: Path, column: str) -> np.ndarray:
    """Images back from Parquet through the list offsets (independent of the writer's code)."""
    table = pq.read_table(path, columns=[column])
    col = table.column(column).combine_chunks()
    n = len(col)
    values = col.flatten().flatten().flatten().to_numpy()
    c = len(col[0]) if n else 0
    return values.reshape(n, c, 125, 125)


# ---------------------------------------------------------------------------------------------
# pixelation and geometry (pure NumPy, independent computations)


def test_pixelate_places_particles_relative_to_the_jet_crystal() -> None:
    jet_eta, jet_phi = np.array([0.5]), np.array([1.0])
    c_eta, c_phi = crystal_eta(jet_eta), crystal_phi(jet_phi)
    # a particle in the jet's crystal, one 3 crystals up in eta, one 2 crystals down in phi
    p_eta = np.array([0.5, 0.5 + 3 * CRYSTAL_DETA, 0.5])
    p_phi = np.array([1.0, 1.0, 1.0 - 2 * CRYSTAL_DPHI])
    img = pixelate(
        np.zeros(3, int), crystal_eta(p_eta), crystal_phi(p_phi), np.array([1.0, 2.0, 4.0]), c_eta, c_phi, 125
    )
    assert img.shape == (1, 125, 125)
    assert img[0, 62, 62] == 1.0 and img[0, 65, 62] == 2.0 and img[0, 62, 60] == 4.0
    assert img.sum() == 7.0


def test_pixelate_wraps_phi_and_drops_what_falls_outside() -> None:
    c_eta, c_phi = crystal_eta(np.array([0.0])), crystal_phi(np.array([math.pi - 0.5 * CRYSTAL_DPHI]))
    assert c_phi[0] == 179
    # just across phi = +-pi: crystal 180 (= -pi) is the right-hand neighbour of crystal 179
    p = crystal_phi(np.array([-math.pi + 0.5 * CRYSTAL_DPHI, math.pi - 1.5 * CRYSTAL_DPHI]))
    assert list(p) == [180, 178]
    far = crystal_eta(np.array([0.0, 0.0, 63 * CRYSTAL_DETA + 1e-9]))
    img = pixelate(np.zeros(3, int), far, np.r_[p, c_phi], np.array([1.0, 1.0, 5.0]), c_eta, c_phi, 125)
    assert img[0, 62, 63] == 1.0 and img[0, 62, 61] == 1.0
    assert img.sum() == 2.0  # the particle 63 crystals away in eta is outside a 125-pixel image


def test_pixelate_channels_in_one_bincount_match_separate_calls() -> None:
    rng = np.random.default_rng(0)
    n = 500
    jet = rng.integers(0, 4, n)
    ieta, iphi = rng.integers(-40, 40, n), rng.integers(0, 360, n)
    w, ch = rng.random(n), rng.integers(0, 3, n)
    ce, cp = np.array([0, 5, -10, 3]), np.array([0, 100, 359, 180])
    together = pixelate(jet, ieta, iphi, w, ce, cp, 25, channel=ch, n_channels=3)
    for c in range(3):
        sel = ch == c
        np.testing.assert_array_equal(together[:, c], pixelate(jet[sel], ieta[sel], iphi[sel], w[sel], ce, cp, 25))


def test_hcal_towers_split_energy_over_aligned_5x5_blocks() -> None:
    jet, e, p, w = spread_towers(np.array([0, 1]), np.array([7, -1]), np.array([359, 12]), np.array([25.0, 5.0]), 5)
    assert len(w) == 50 and math.isclose(w.sum(), 30.0)
    first = slice(0, 25)
    assert set(e[first]) == {5, 6, 7, 8, 9} and set(p[first]) == {355, 356, 357, 358, 359}
    assert set(e[25:]) == {-5, -4, -3, -2, -1} and set(p[25:]) == {10, 11, 12, 13, 14}
    assert np.all(w[first] == 1.0) and np.all(jet[first] == 0)


def _circle_crossing_phi(q: float, pt: float, r_m: float, b: float) -> float:
    """phi (from +x) where a track leaving the origin along +x crosses radius r: geometry only.

    The helix centre sits at distance R = pT / (0.3 B) from the origin, perpendicular to the
    momentum (at -y for a positive charge in B along +z, which turns clockwise); intersect the
    circle |x - c| = R with |x| = r.
    """
    radius = pt / (0.299792458 * b)
    cx, cy = 0.0, -q * radius
    d = math.hypot(cx, cy)
    a = r_m * r_m / (2 * d)
    h = math.sqrt(r_m * r_m - a * a)
    mx, my = a * cx / d, a * cy / d
    points = [(mx + h * cy / d, my - h * cx / d), (mx - h * cy / d, my + h * cx / d)]
    x, y = max(points, key=lambda pnt: pnt[0])  # the forward crossing (first one reached)
    return math.atan2(y, x)


def test_bend_phi_matches_circle_geometry_and_curling() -> None:
    for q, pt in ((1.0, 1.0), (-1.0, 2.5), (1.0, 20.0)):
        got, reach = bend_phi(np.array([0.0]), np.array([q]), np.array([pt]), 1290.0, 3.8)
        assert reach[0]
        assert got[0] == pytest.approx(_circle_crossing_phi(q, pt, 1.29, 3.8), abs=1e-9)
    # 2R < r: a 0.5 GeV track never reaches 1.29 m in 3.8 T; neutral particles go straight
    _, reach = bend_phi(np.array([0.0, 0.3]), np.array([1.0, 0.0]), np.array([0.5, 0.5]), 1290.0, 3.8)
    assert list(reach) == [False, True]


def test_impact_parameters_match_brute_force_closest_approach() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(0, 2.0, (20, 3))
    p = rng.normal(0, 5.0, (20, 3))
    d0, dz = impact_parameters(*v.T, *p.T)
    t = np.linspace(-20, 20, 400001)
    for i in range(20):
        pt = math.hypot(p[i, 0], p[i, 1])
        x = v[i, 0] + t * p[i, 0] / pt
        y = v[i, 1] + t * p[i, 1] / pt
        k = np.argmin(x * x + y * y)
        assert abs(d0[i]) == pytest.approx(math.hypot(x[k], y[k]), abs=1e-3)
        assert dz[i] == pytest.approx(v[i, 2] + t[k] * p[i, 2] / pt, abs=1e-3)
    # sign convention: a track from (1, 0) mm along +y passes the beam line on its left (+)
    assert (
        impact_parameters(np.array([1.0]), np.zeros(1), np.zeros(1), np.zeros(1), np.ones(1), np.ones(1))[0][0] == 1.0
    )


def test_layer_crossings_geometry() -> None:
    # straight tracks from the origin (B = 0) cross at their own direction
    px, py, pz = np.array([3.0, 0.0]), np.array([4.0, 2.0]), np.array([1.0, -8.0])
    z = np.zeros(2)
    hit, eta, phi = layer_crossings(z, z, z, px, py, pz, np.array([1.0, -1.0]), 44.0, 265.0, 0.0)
    assert list(hit) == [True, True]
    np.testing.assert_allclose(eta, np.arcsinh(pz / np.hypot(px, py)))
    np.testing.assert_allclose(phi, np.arctan2(py, px))
    # produced outside the layer, neutral, or beyond the layer's length: no hit
    hit, _, _ = layer_crossings(
        np.array([50.0, 0.0, 0.0]),
        np.zeros(3),
        np.zeros(3),
        np.ones(3),
        np.zeros(3),
        np.array([0.0, 0.0, 10.0]),
        np.array([1.0, 0.0, 1.0]),
        44.0,
        265.0,
        0.0,
    )
    assert list(hit) == [False, False, False]
    # in the field, from the origin: the hit turns as the circle geometry says (to first order)
    hit, _, phi = layer_crossings(
        z[:1], z[:1], z[:1], np.array([2.0]), np.zeros(1), np.zeros(1), np.array([1.0]), 102.0, 265.0, 3.8
    )
    assert hit[0] and phi[0] == pytest.approx(_circle_crossing_phi(1.0, 2.0, 0.102, 3.8), rel=1e-3)


def test_image_mass_and_girth_against_two_particle_formulas() -> None:
    img = np.zeros((1, 125, 125))
    img[0, 62, 62] = 30.0
    img[0, 62 + 10, 62 - 20] = 20.0
    d_eta, d_phi = 10 * CRYSTAL_DETA, 20 * CRYSTAL_DPHI
    m2 = 2 * 30.0 * 20.0 * (math.cosh(d_eta) - math.cos(d_phi))
    assert image_mass(img)[0] == pytest.approx(math.sqrt(m2), rel=1e-12)
    assert image_girth(img)[0] == pytest.approx(20.0 * math.hypot(d_eta, d_phi) / 50.0, rel=1e-12)
    assert image_girth(np.zeros((1, 125, 125)))[0] == 0.0


# ---------------------------------------------------------------------------------------------
# configuration, errors, optional extra


def test_config_validation_and_json_round_trip() -> None:
    cfg = jet_config("top", smear=False, top_mass_range_gev=(100.0, 200.0))
    assert cfg.jet_radius == 0.8 and cfg.pthat_min_gev == 400.0 and cfg.jet_eta_max == pytest.approx(1.7)
    assert JetSimConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="dataset must be one of"):
        jet_config("higgs")
    with pytest.raises(ValueError, match="pthat_max_gev"):
        jet_config("quark-gluon", pthat_min_gev=100.0, pthat_max_gev=90.0)
    with pytest.raises(ValueError, match="top_mass_range_gev"):
        jet_config("top-mass", top_mass_range_gev=(60.0, 200.0))
    with pytest.raises(ValueError, match="image_size must be odd"):
        jet_config("top", image_size=124)
    with pytest.raises(ValueError, match="hcal_tower must divide 360"):
        jet_config("top", hcal_tower=7)


def test_bad_arguments_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        write_jets("quark-gluon", tmp_path, 0)
    with pytest.raises(ValueError, match=r"shard must be an integer in \[0, num_shards=2\)"):
        write_jets("top", tmp_path, 10, shard=2, num_shards=2)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        simulate_jets("top", 2, workers=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        simulate_jets("top", 2, seed=-1)
    with pytest.raises(ValueError, match="config is for dataset 'top'"):
        write_jets("top-mass", tmp_path, 2, config=jet_config("top"))
    assert list(tmp_path.iterdir()) == []  # nothing written on a bad call


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pythia8mc", None)  # makes `import pythia8mc` raise ImportError
    with pytest.raises(MissingSimulatorError, match=r"pythia8mc.*pip install 'e2evision\[sim\]'"):
        J.require_simulators()
    with pytest.raises(ImportError, match=r"e2evision\[sim\]"):
        write_jets("quark-gluon", tmp_path, 2)
    from typer.testing import CliRunner

    from e2evision.cli import app

    res = CliRunner().invoke(app, ["simulate", "top", "--n", "2", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "e2evision[sim]" in res.output
    assert not any(tmp_path.glob("*.parquet"))


def test_core_package_imports_without_pythia_and_fastjet() -> None:
    code = (
        "import sys\n"
        "for m in ('pythia8mc', 'fastjet', 'awkward'): sys.modules[m] = None\n"
        "import e2evision, e2evision.cli, e2evision.simulate.jets, e2evision.simulate.jets_plots\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from e2evision.cli import app

    runner = CliRunner()
    for args, message in (
        (["--n", "0"], "--n must be at least 1"),
        (["--n", "4", "--shard", "3", "--num-shards", "3"], "--shard must be in [0, --num-shards=3), got 3"),
        (["--n", "4", "--num-shards", "0"], "--num-shards must be >= 1"),
        (["--n", "4", "--workers", "0"], "--workers must be >= 1"),
    ):
        res = runner.invoke(app, ["simulate", "quark-gluon", "--out", str(tmp_path), *args])
        assert res.exit_code == 2, res.output
        assert message in res.output


# ---------------------------------------------------------------------------------------------
# files: schema, metadata, determinism, shards


@needs_sim
@pytest.mark.parametrize(
    ("dataset", "n", "columns", "channels", "name"),
    [
        ("quark-gluon", 5, ["X_jets", "pt", "m0", "y"], 3, "QCDToGGQQ_IMGjet_RH1all_jet0_run0_n5_sim.snappy.parquet"),
        ("top", 4, ["X_jets", "m0", "pt", "y"], 8, "BoostedTop_x1_fixed_0_sim.snappy.parquet"),
        ("top-mass", 3, ["X_jet", "m", "iphi", "pt", "ieta"], 8, "top_gun_opendata_0_sim.parquet"),
    ],
)
def test_files_have_the_exact_public_schema(
    tmp_path: Path, dataset: str, n: int, columns: list[str], channels: int, name: str
) -> None:
    res = write_jets(dataset, tmp_path, n, seed=5, config=_fast(dataset), progress=False)
    assert res.path == tmp_path / name and res.path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind
    pf = pq.ParquetFile(res.path)
    schema = pf.schema_arrow
    assert schema.names == columns
    assert str(schema.field(columns[0]).type) == NESTED_DOUBLE
    assert all(schema.field(c).type == pa.float64() for c in columns[1:])
    md = pf.metadata
    assert md.num_rows == n and md.num_row_groups == n
    assert all(md.row_group(i).num_rows == 1 for i in range(n))
    assert {md.row_group(0).column(j).compression for j in range(md.num_columns)} == {"SNAPPY"}
    images = _read_images(res.path, columns[0])
    assert images.shape == (n, channels, 125, 125)
    assert np.isfinite(images).all()
    # the in-memory simulator gives the same rows (same seed, same config)
    sample = simulate_jets(dataset, n, seed=5, config=_fast(dataset))
    np.testing.assert_array_equal(images, sample.images)
    table = pq.read_table(res.path)
    for c in columns[1:]:
        np.testing.assert_array_equal(table.column(c).to_numpy(), sample.columns[c])
    meta = read_metadata(res.path)
    assert meta["generator"] == "e2evision.simulate.jets" and meta["dataset"] == dataset
    assert meta["seed"] == 5 and meta["shard"] == 0 and meta["num_shards"] == 1
    assert (meta["row_start"], meta["row_stop"], meta["n_total"]) == (0, n, n)
    assert meta["versions"] == _FAKE_VERSIONS
    assert JetSimConfig.from_json(json.dumps(meta["config"])) == _fast(dataset)
    assert all("PartonLevel:MPI = off" in c["pythia"] for c in meta["classes"])
    if dataset == "top-mass":
        m = table.column("m").to_numpy()
        assert np.all((m >= 120.0) & (m <= 230.0))
        assert np.all(np.abs(table.column("ieta").to_numpy()) <= 1.7 / CRYSTAL_DETA + 1)
        iphi = table.column("iphi").to_numpy()
        assert np.all((iphi >= 0) & (iphi < 360) & (iphi == np.round(iphi)))
    else:
        y = table.column("y").to_numpy()
        np.testing.assert_array_equal(y, np.arange(n) % 2)  # classes alternate row by row


@needs_sim
def test_jets_in_the_file_are_the_generator_jets(tmp_path: Path) -> None:
    """With detector effects off, the calorimeter images hold exactly the constituents' E_T."""
    cfg = _fast(
        "top", smear=False, hcal_tower=1, ecal_threshold_gev=0.0, hcal_threshold_gev=0.0, b_field_t=0.0, response=None
    )
    s = simulate_jets("top", 16, seed=2, config=cfg)
    calo = s.images[:, 3] + s.images[:, 4]
    # scalar sum of E_T >= vector sum (the jet pT); equal to within the jet's spread and muons
    ratio = calo.sum(axis=(1, 2)) / s.columns["pt"]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02)
    assert np.all((ratio > 0.85) & (ratio < 1.08))
    # the image mass, from pixel positions alone, follows the jet mass (pixels are massless)
    assert np.corrcoef(image_mass(calo), s.columns["m0"])[0, 1] > 0.95
    # charged particles carry about 60 % of a jet's energy (pi0 photons and neutral hadrons the rest)
    charged_fraction = s.images[:, 0].sum(axis=(1, 2)) / calo.sum(axis=(1, 2))
    assert 0.35 < np.median(charged_fraction) < 0.75
    # pixel layers count hits: integers; prompt charged particles cross all three layers
    layers = s.images[:, 5:].sum(axis=(2, 3))
    assert np.all(s.images[:, 5:] == np.round(s.images[:, 5:])) and s.images[:, 5:].min() >= 0
    assert np.all(layers[:, 0] > 0)
    assert np.all(np.abs(layers[:, 0] - layers[:, 2]) <= 0.2 * layers[:, 0] + 3)


@needs_sim
def test_window_images_add_the_rest_of_the_event_to_the_constituents() -> None:
    bare = dict(smear=False, ecal_threshold_gev=0.0, hcal_threshold_gev=0.0, response=None)
    const = simulate_jets("quark-gluon", 6, seed=8, config=_fast("quark-gluon", **bare))
    window = simulate_jets("quark-gluon", 6, seed=8, config=_fast("quark-gluon", image_particles="window", **bare))
    np.testing.assert_array_equal(const.columns["pt"], window.columns["pt"])  # the same jets
    assert np.all(window.images >= const.images - 1e-9)  # pixel by pixel: nothing is lost
    assert window.images.sum() > const.images.sum() + 1.0  # other particles of the event appear


@needs_sim
@pytest.mark.slow
def test_same_seed_same_rows_whatever_the_workers_and_n(tmp_path: Path) -> None:
    cfg = _fast("quark-gluon", block_size=3)
    one = write_jets("quark-gluon", tmp_path / "w1", 14, seed=9, config=cfg, workers=1, progress=False)
    two = write_jets("quark-gluon", tmp_path / "w2", 14, seed=9, config=cfg, workers=2, progress=False)
    a, b = _read_images(one.path, "X_jets"), _read_images(two.path, "X_jets")
    np.testing.assert_array_equal(a, b)
    assert pq.read_table(one.path).equals(pq.read_table(two.path))
    # a shorter data set is a prefix of the longer one (rows do not depend on n)
    short = simulate_jets("quark-gluon", 7, seed=9, config=cfg)
    np.testing.assert_array_equal(short.images, a[:7])
    # another seed gives other jets
    other = simulate_jets("quark-gluon", 7, seed=10, config=cfg)
    assert not np.array_equal(other.columns["pt"], short.columns["pt"])


@needs_sim
def test_shards_are_disjoint_and_together_equal_the_whole(tmp_path: Path) -> None:
    cfg = _fast("top", block_size=2)
    n = 11  # 6 QCD + 5 top rows: blocks of 2 per class -> 3 row blocks over 3 shards
    whole = write_jets("top", tmp_path / "all", n, seed=4, config=cfg, progress=False)
    parts = [
        write_jets("top", tmp_path / "sh", n, seed=4, config=cfg, shard=i, num_shards=3, progress=False)
        for i in range(3)
    ]
    assert [p.path.name for p in parts] == [f"BoostedTop_x1_fixed_{i}_sim.snappy.parquet" for i in range(3)]
    ranges = [(p.row_start, p.row_stop) for p in parts]
    assert ranges == [(0, 4), (4, 8), (8, 11)]
    assert [read_metadata(p.path)["row_start"] for p in parts] == [0, 4, 8]
    tables = [pq.read_table(p.path) for p in parts]
    union = pa.concat_tables(tables)
    assert union.equals(pq.read_table(whole.path).replace_schema_metadata(union.schema.metadata))
    pts = [set(t.column("pt").to_pylist()) for t in tables]
    assert all(not (pts[i] & pts[j]) for i in range(3) for j in range(i + 1, 3))  # different events
    # more shards than blocks: the extra shard is a valid empty file
    empty = write_jets("top", tmp_path / "e", 2, seed=4, config=cfg, shard=0, num_shards=2, progress=False)
    assert pq.ParquetFile(empty.path).metadata.num_rows == 0


def test_file_names_are_public_style() -> None:
    assert jet_file_name("quark-gluon", 100) == "QCDToGGQQ_IMGjet_RH1all_jet0_run0_n100_sim.snappy.parquet"
    assert (
        jet_file_name("quark-gluon", 100, 1, 4) == "QCDToGGQQ_IMGjet_RH1all_jet0_run0_n100_sim_shard1of4.snappy.parquet"
    )
    assert jet_file_name("top", 100, 7, 9) == "BoostedTop_x1_fixed_7_sim.snappy.parquet"
    assert jet_file_name("top-mass", 100, 2, 3) == "top_gun_opendata_2_sim.parquet"


# ---------------------------------------------------------------------------------------------
# physics (defaults: MPI on), fixed seeds


def _welch_t(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.mean() - b.mean()) / math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))


@needs_sim
@pytest.mark.slow
def test_gluon_jets_have_more_constituents_and_are_wider() -> None:
    s = simulate_jets("quark-gluon", 300, seed=21, config=jet_config("quark-gluon", response=None))
    y = s.columns["y"]
    q, g = y == 0, y == 1
    n_const, girth = s.truth["n_const"].astype(float), s.truth["girth"]
    # the generator truth (expected about 17.5 vs 22.5 constituents, girth 0.08 vs 0.11)
    assert 14 < n_const[q].mean() < 21 and 19 < n_const[g].mean() < 26
    assert _welch_t(n_const[g], n_const[q]) > 4
    assert 0.06 < girth[q].mean() < 0.10 and 0.09 < girth[g].mean() < 0.14
    assert _welch_t(girth[g], girth[q]) > 4
    # the same from the images alone: gluon images are wider and light up more track pixels
    et = s.images[:, 1] + s.images[:, 2]
    assert _welch_t(image_girth(et)[g], image_girth(et)[q]) > 3
    hits = (s.images[:, 0] > 0).sum(axis=(1, 2)).astype(float)
    assert _welch_t(hits[g], hits[q]) > 3
    # image sum ~ jet pT within resolution, zero suppression and tracks curling in the field
    ratio = et.sum(axis=(1, 2)) / s.columns["pt"]
    assert 0.92 < np.median(ratio) < 1.03
    assert np.percentile(np.abs(ratio - np.median(ratio)), 68) < 0.2
    # jets in the pT-hat window (70-100 GeV), jet cuts respected
    assert 60 < np.median(s.columns["pt"]) < 90
    assert np.all(np.abs(s.truth["eta"]) < 2.1) and np.all(s.columns["pt"] >= 20)


@needs_sim
@pytest.mark.slow
def test_top_jet_mass_peaks_at_the_top_mass_and_qcd_below_100() -> None:
    s = simulate_jets("top", 200, seed=22, config=jet_config("top", response=None))
    y, m0 = s.columns["y"], s.columns["m0"]
    bins = np.arange(0.0, 301.0, 20.0)

    def peak(values: np.ndarray) -> float:
        counts, edges = np.histogram(values, bins=bins)
        return float(edges[np.argmax(counts)] + 10.0)

    assert 150 <= peak(m0[y == 1]) <= 200
    assert peak(m0[y == 0]) < 100
    assert np.median(m0[y == 1]) > np.median(m0[y == 0]) + 50
    # the image mass (pixel geometry only) follows the jet mass despite towers and smearing
    calo = s.images[:, 3] + s.images[:, 4]
    assert np.corrcoef(image_mass(calo), m0)[0, 1] > 0.9
    # top jets are matched to a top whose generated (Breit-Wigner, width 1.4 GeV) mass is 172.5
    mt = s.truth["top_mass"][y == 1]
    assert abs(np.median(mt) - 172.5) < 1.0 and np.mean(np.abs(mt - 172.5) < 5.0) > 0.85
    assert np.all(np.isnan(s.truth["top_mass"][y == 0]))


@needs_sim
@pytest.mark.slow
def test_top_mass_target_correlates_with_jet_mass() -> None:
    s = simulate_jets("top-mass", 100, seed=23)
    m, m0 = s.columns["m"], s.truth["m0"]
    assert np.all((m >= 120) & (m <= 230))
    assert m.max() - m.min() > 70  # the target spans the range
    r = np.corrcoef(m, m0)[0, 1]
    assert r > 0.6, r
    np.testing.assert_array_equal(s.columns["pt"], s.truth["pt"])
    np.testing.assert_array_equal(s.columns["ieta"], np.floor(s.truth["eta"] / CRYSTAL_DETA))
    np.testing.assert_array_equal(s.columns["iphi"], np.mod(np.floor(s.truth["phi"] / CRYSTAL_DPHI), 360))


# ---------------------------------------------------------------------------------------------
# CLI and plots


@needs_sim
@pytest.mark.slow
def test_cli_writes_a_file_and_plots(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from e2evision.cli import app

    runner = CliRunner()
    out, plots = tmp_path / "data", tmp_path / "plots"
    res = runner.invoke(
        app,
        [
            "simulate",
            "quark-gluon",
            "--n",
            "6",
            "--out",
            str(out),
            "--seed",
            "3",
            "--no-mpi",
            "--plots",
            str(plots),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    path = out / "QCDToGGQQ_IMGjet_RH1all_jet0_run0_n6_sim.snappy.parquet"
    assert f"wrote {path}" in res.output
    assert pq.ParquetFile(path).metadata.num_rows == 6
    res = runner.invoke(
        app, ["simulate", "top-mass", "--n", "3", "--out", str(out), "--no-mpi", "--plots", str(plots), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    response = (
        "response_ecal_occupancy",
        "response_hottest_fraction",
        "response_noise_spectrum",
        "response_pileup_density",
    )
    expected = {f"quark_gluon_{k}.png" for k in ("jet_mass", "constituents", "mean_images", *response)}
    expected |= {
        f"top_mass_{k}.png" for k in ("jet_mass", "constituents", "mean_images", "target_vs_jet_mass", *response)
    }
    assert {p.name for p in plots.iterdir()} == expected
    assert read_metadata(path)["response"]["pileup_mean"] == 20.0  # on by default
    for flags, key, want in ((["--no-response"], "enabled", False), (["--pileup", "5"], "pileup_mean", 5.0)):
        res = runner.invoke(
            app,
            [
                "simulate",
                "quark-gluon",
                "--n",
                "2",
                "--out",
                str(tmp_path / flags[0]),
                "--no-mpi",
                "--no-progress",
                *flags,
            ],
        )
        assert res.exit_code == 0, res.output
        assert read_metadata(next((tmp_path / flags[0]).glob("*.parquet")))["response"][key] == want
    res = runner.invoke(app, ["simulate", "top", "--n", "2", "--out", str(out), "--pileup", "-1"])
    assert res.exit_code == 2 and "--pileup must be >= 0" in res.output
    for p in plots.iterdir():
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
