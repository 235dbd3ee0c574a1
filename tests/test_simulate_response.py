"""Jet detector response: every effect against an independent computation, determinism, shards.

The cell integrals are checked with scipy quadrature, the readout with the Gaussian tail and the
resolution formula, the pile-up overlay with a synthetic pool (no Pythia); the Pythia tests use a
small pile-up pool and no multiparton interactions in the hard events, except the acceptance test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import integrate, stats

from e2evision.simulate import jets as J
from e2evision.simulate.calorimeter import CalorimeterConfig, gflash_lateral, longitudinal_means
from e2evision.simulate.jet_images import block_images
from e2evision.simulate.jets import (
    JetSimConfig,
    jet_config,
    read_metadata,
    simulate_jets,
    write_jets,
)
from e2evision.simulate.pixelate import CRYSTAL_DETA, CRYSTAL_DPHI
from e2evision.simulate.response import (
    PileupPool,
    ResponseConfig,
    cell_readout,
    jet_streams,
    overlay_pileup,
    square_fraction,
)
from e2evision.simulate.response_plots import response_statistics

HAVE_SIM = all(importlib.util.find_spec(m) is not None for m in ("pythia8mc", "fastjet", "awkward"))
needs_sim = pytest.mark.skipif(not HAVE_SIM, reason="pythia8mc/fastjet/awkward not installed (extra e2evision[sim])")
QUIET = ResponseConfig(
    ecal_stochastic=0.0,
    ecal_constant=0.0,
    ecal_noise_gev=1e-12,
    ecal_zs_sigma=0.0,
    hcal_stochastic=0.0,
    hcal_constant=0.0,
    hcal_noise_gev=1e-12,
    hcal_zs_sigma=0.0,
    pileup_mean=0.0,
)
"""Lateral spread only: no resolution, (negligible) noise, no pile-up."""


@pytest.fixture(autouse=True)
def _fast_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J, "package_versions", lambda: {"numpy": np.__version__})


def _density(radius: float):  # noqa: ANN202 - scipy integrand
    return lambda y, x: radius * radius / (math.pi * (x * x + y * y + radius * radius) ** 2)


def _box(radius: float, x0: float, x1: float, y0: float, y1: float) -> float:
    return integrate.dblquad(_density(radius), x0, x1, y0, y1, epsabs=1e-8)[0]


def _one_particle(pid: int, energy: float, eta: float, phi: float) -> SimpleNamespace:
    """A 'block' of one jet holding one neutral particle, the jet axis on the particle."""
    pt = energy / math.cosh(eta)
    part = {
        "id": np.array([pid]),
        "px": np.array([pt * math.cos(phi)]),
        "py": np.array([pt * math.sin(phi)]),
        "pz": np.array([pt * math.sinh(eta)]),
        "e": np.array([energy]),
        "vx": np.zeros(1),
        "vy": np.zeros(1),
        "vz": np.zeros(1),
        "charge": np.zeros(1),
    }
    return SimpleNamespace(eta=np.array([eta]), phi=np.array([phi]), part=part, part_jet=np.zeros(1, np.int64))


# ---------------------------------------------------------------------------------------------
# lateral spread


def test_closed_form_cell_integral_matches_numerical_integration() -> None:
    cases = ((0.3, (-0.5, 0.5, -0.5, 0.5)), (1.7, (0.2, 1.4, -2.0, -0.3)), (0.05, (0.4, 3.0, 0.0, 9.0)))
    for radius, box in cases:
        got = square_fraction(*(np.array(v) for v in box), np.array(radius))
        assert float(got) == pytest.approx(_box(radius, *box), abs=1e-7)
    # the whole plane holds everything, a half plane half
    big = np.array(1e9)
    radius = np.array(0.7)
    assert float(square_fraction(-big, big, -big, big, radius)) == pytest.approx(1.0, abs=1e-8)
    assert float(square_fraction(0.0, big, -big, big, radius)) == pytest.approx(0.5, abs=1e-8)


def _central_fraction_scipy(energy: float) -> float:
    """Central-crystal share of a photon hitting a crystal centre, by quadrature.

    GFlash lateral x Grindhammer-Peters depth profile: the depth t / T of a Gamma(alpha,
    (alpha - 1) / T) profile is Gamma(alpha, 1) / (alpha - 1); at each depth the core and tail
    components are integrated over the crystal and over the 7 x 7 window (the share is relative
    to the window, as the simulator keeps the energy in it).
    """
    cal = CalorimeterConfig()
    _, _, mean_log_a = longitudinal_means(np.array([energy]), cal)
    alpha = max(math.exp(float(mean_log_a[0])), 1.05)
    scale = cal.moliere_radius_cm / cal.crystal_size_cm

    def share(x: float, half: float) -> float:
        tau, log_e = np.array(x / (alpha - 1.0)), np.array(math.log(energy))
        rc, rt, p = (float(v) for v in gflash_lateral(tau, log_e, cal))
        p = min(max(p, 0.0), 1.0)
        cell = (-half, half, -half, half)
        return p * _box(rc * scale, *cell) + (1 - p) * _box(rt * scale, *cell)

    top = stats.gamma.ppf(1 - 1e-6, alpha)
    central, window = (
        integrate.quad(lambda x, h=h: stats.gamma.pdf(x, alpha) * share(x, h), 0, top, limit=60, epsabs=1e-6)[0]
        for h in (0.5, 3.5)
    )
    return central / window


def test_single_photon_central_crystal_fraction_matches_the_integrated_profile() -> None:
    cfg = jet_config("quark-gluon", response=QUIET)
    eta, phi = (20 + 0.5) * CRYSTAL_DETA, (100 + 0.5) * CRYSTAL_DPHI  # centre of crystal (20, 100)
    images, n_pu = block_images(
        _one_particle(22, 10.0, eta, phi), cfg, np.random.default_rng(0), 3, jet_streams(1, 1, 0, 1)
    )
    ecal = images[0, 1]
    total = ecal[ecal > 1e-6].sum()
    assert total == pytest.approx(10.0 / math.cosh(eta), rel=1e-9)  # E_T kept, all in the image
    expected = _central_fraction_scipy(10.0)
    assert 0.7 < expected < 0.9  # ~80 % in the central crystal, as for CMS barrel showers
    assert ecal[62, 62] / total == pytest.approx(expected, abs=0.005)
    # symmetric neighbours share equally; the shower spreads over more than the 3 x 3 core
    assert ecal[61, 62] == pytest.approx(ecal[63, 62], rel=1e-9)
    assert (ecal > 1e-6).sum() > 9 and n_pu.tolist() == [0]
    # off-centre impact: the crystal on the impact side gets more than the opposite one
    images, _ = block_images(
        _one_particle(22, 10.0, eta + 0.4 * CRYSTAL_DETA, phi),
        cfg,
        np.random.default_rng(0),
        3,
        jet_streams(1, 1, 0, 1),
    )
    assert images[0, 1, 63, 62] > 3 * images[0, 1, 61, 62]


def test_hadron_spreads_over_hcal_towers_as_the_integrated_profile_says() -> None:
    resp = dataclasses.replace(QUIET, hcal_lateral_radius_cm=6.0)
    cfg = jet_config("quark-gluon", response=resp, b_field_t=0.0)
    t = cfg.hcal_tower
    eta, phi = (4 * t + 2.5) * CRYSTAL_DETA, (20 * t + 2.5) * CRYSTAL_DPHI  # tower (4, 20)
    images, _ = block_images(
        _one_particle(130, 50.0, eta, phi), cfg, np.random.default_rng(0), 3, jet_streams(1, 1, 0, 1)
    )
    hcal = images[0, 2]
    radius = 6.0 / (cfg.hcal_radius_mm / 10.0 * t * CRYSTAL_DPHI)  # in tower units
    expected = _box(radius, -0.5, 0.5, -0.5, 0.5) / _box(radius, -2.5, 2.5, -2.5, 2.5)
    tower = hcal[62 - 2 : 62 + 3, 62 - 2 : 62 + 3]  # the jet crystal is the centre of its tower here
    assert np.allclose(tower, tower[0, 0])  # a tower's E_T is spread evenly over its crystals
    total = hcal[hcal > 1e-6].sum()
    assert total == pytest.approx(50.0 / math.cosh(eta), rel=1e-9)
    assert tower.sum() / total == pytest.approx(expected, abs=1e-6)
    assert images[0, 1].max() < 1e-6  # a neutral hadron leaves nothing in the ECAL


# ---------------------------------------------------------------------------------------------
# readout


def test_noise_occupancy_and_spectrum_follow_the_gaussian_tail() -> None:
    m, k, sigma = 12, 3.0, 0.04
    cosh = np.broadcast_to(np.linspace(1.0, 3.0, 125)[None, :, None], (m, 125, 1))
    out = cell_readout(np.zeros((m, 125, 125)), cosh, jet_streams(3, 1, 0, m), 0.028, 0.003, sigma, k)
    energy = out * cosh
    hit = energy[energy > 0]
    n_cells = m * 125 * 125
    p = stats.norm.sf(k)
    assert abs(hit.size - n_cells * p) < 4 * math.sqrt(n_cells * p * (1 - p))
    assert hit.min() >= k * sigma  # zero suppression acts on the energy, not on E_T
    # mean of a Gaussian above its threshold: sigma phi(k) / Q(k)
    assert hit.mean() == pytest.approx(sigma * stats.norm.pdf(k) / p, rel=0.03)


def test_cell_resolution_is_stochastic_constant_and_noise_in_quadrature() -> None:
    m, e = 3000, 50.0
    cells = np.zeros((m, 2, 2))
    cells[:, 0, 0] = e
    a, c, sigma = 0.028, 0.01, 0.04
    out = cell_readout(cells, np.ones((m, 2, 1)), jet_streams(4, 1, 0, m), a, c, sigma, 3.0)
    expected = math.sqrt(a * a * e + c * c * e * e + sigma * sigma)
    assert out[:, 0, 0].mean() == pytest.approx(e, abs=4 * expected / math.sqrt(m))
    assert out[:, 0, 0].std() == pytest.approx(expected, rel=0.05)


# ---------------------------------------------------------------------------------------------
# pile-up (synthetic pool: no Pythia needed)


def _pool(n_events: int = 60, seed: int = 0) -> PileupPool:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(20, 120, n_events)
    n = int(sizes.sum())
    pt = rng.exponential(0.6, n) + 0.1
    eta = rng.uniform(-2.5, 2.5, n)
    phi = rng.uniform(-math.pi, math.pi, n)
    part = {
        "id": rng.choice([211, -211, 22, 130], n),
        "px": pt * np.cos(phi),
        "py": pt * np.sin(phi),
        "pz": pt * np.sinh(eta),
        "e": pt * np.cosh(eta),
        "vx": np.zeros(n),
        "vy": np.zeros(n),
        "vz": rng.normal(0, 1.0, n),
    }
    part["charge"] = np.where(np.abs(part["id"]) == 211, np.sign(part["id"]), 0).astype(float)
    return PileupPool(np.concatenate([[0], np.cumsum(sizes)]), part)


def test_pileup_count_and_particles_match_poisson_and_the_pool() -> None:
    pool, mu, m = _pool(), 20.0, 400
    resp = ResponseConfig(pileup_mean=mu)
    jet_eta = np.linspace(-1.5, 1.5, m)
    empty = {k: v[:0] for k, v in pool.part.items()}
    window = 1.2
    merged, pjet, counts = overlay_pileup(
        empty, np.zeros(0, np.int64), jet_eta, pool, jet_streams(5, 1, 0, m), resp, window
    )
    assert abs(counts.mean() - mu) < 4 * math.sqrt(mu / m)  # Poisson mean
    assert counts.var(ddof=1) == pytest.approx(mu, rel=0.3)  # and variance
    # particles kept per jet: mu x the pool's mean count within the eta window (eta or -eta)
    pt = np.hypot(pool.part["px"], pool.part["py"])
    eta = np.arcsinh(pool.part["pz"] / pt)
    in_window = 0.5 * (
        (np.abs(eta[None, :] - jet_eta[:, None]) < window).astype(float)
        + (np.abs(-eta[None, :] - jet_eta[:, None]) < window)
    )
    expected = mu * in_window.sum(axis=1) / pool.size  # per jet
    got = np.bincount(pjet, minlength=m)
    assert got.sum() == pytest.approx(expected.sum(), rel=0.05)
    assert np.all(np.diff(pjet) >= 0)  # each jet's particles together, in jet order
    # rotations and flips keep pT and |pz|; the vertex moves along the beam only
    assert np.sort(np.hypot(merged["px"], merged["py"]))[-1] <= pt.max() + 1e-12
    assert np.all(merged["vx"] == 0) and merged["vz"].std() > 20.0
    # no pile-up: nothing added
    _, _, none = overlay_pileup(
        empty,
        np.zeros(0, np.int64),
        jet_eta[:5],
        pool,
        jet_streams(5, 1, 0, 5),
        ResponseConfig(pileup_mean=0.0),
        window,
    )
    assert none.tolist() == [0] * 5


def test_pileup_reaches_the_track_channel_with_the_expected_energy() -> None:
    pool, mu, m = _pool(seed=1), 10.0, 150
    resp = dataclasses.replace(QUIET, pileup_mean=mu)
    cfg = jet_config("quark-gluon", response=resp, b_field_t=0.0)
    jets = SimpleNamespace(
        eta=np.zeros(m), phi=np.zeros(m), part_jet=np.zeros(0, np.int64), part={k: v[:0] for k, v in pool.part.items()}
    )
    images, counts = block_images(jets, cfg, np.random.default_rng(0), 3, jet_streams(6, 1, 0, m), pool)
    # expected charged pT in a 125 x 125 image at eta = 0: per pool particle, the eta acceptance
    # (either sign of eta) times the phi acceptance of a uniformly rotated event, 125 of 360
    pt = np.hypot(pool.part["px"], pool.part["py"])
    eta = np.arcsinh(pool.part["pz"] / pt)
    lo, hi = -62 * CRYSTAL_DETA, 63 * CRYSTAL_DETA
    accept = 0.5 * (((eta >= lo) & (eta < hi)).astype(float) + ((-eta >= lo) & (-eta < hi)))
    charged = pool.part["charge"] != 0
    per_event = (pt * accept * charged).sum() / pool.size * 125 / 360
    got = images[:, 0].sum(axis=(1, 2))
    assert got.mean() == pytest.approx(per_event * counts.mean(), rel=0.08)
    assert np.corrcoef(got, counts)[0, 1] > 0.5  # more interactions, more pile-up energy


# ---------------------------------------------------------------------------------------------
# configuration, metadata, files


def test_response_config_validates_and_round_trips_through_json() -> None:
    resp = ResponseConfig(pileup_mean=35.0, pileup_process=("SoftQCD:inelastic = on",))
    cfg = jet_config("top", response=resp)
    back = JetSimConfig.from_json(cfg.to_json())
    assert back == cfg and back.response.pileup_process == ("SoftQCD:inelastic = on",)
    assert JetSimConfig.from_json(jet_config("top", response=None).to_json()).response is None
    assert jet_config("top").response == ResponseConfig()  # on by default
    with pytest.raises(ValueError, match="pileup_mean must be a finite number >= 0"):
        ResponseConfig(pileup_mean=-1.0)
    with pytest.raises(ValueError, match="ecal_noise_gev must be a finite number > 0"):
        ResponseConfig(ecal_noise_gev=0.0)
    with pytest.raises(ValueError, match="pileup_pool_size must be an integer >= 1"):
        ResponseConfig(pileup_pool_size=0)
    with pytest.raises(ValueError, match="response must be a ResponseConfig or None"):
        jet_config("top", response={"pileup_mean": 3})


def _digest(images: np.ndarray, columns: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    for key in sorted(columns):
        h.update(np.ascontiguousarray(columns[key]).tobytes())
    return h.hexdigest()


# Rows written before the response existed (commit c388276, pythia8mc 8.317.2, seed 5, MPI off,
# blocks of 2): the response off must reproduce them bit for bit.
_BEFORE = {
    ("quark-gluon", 5): "146b0111395610feaeb9a7d6f96ee38e403c5c55bf2660daadcd1bc70f0dee46",
    ("top", 4): "e9d512bfe752f4232259cc19a8616f6d9f2daa6565c260c7045ebb23d702e76f",
}


@needs_sim
@pytest.mark.skipif(
    HAVE_SIM and importlib.metadata.version("pythia8mc") != "8.317.2",
    reason="the reference rows were generated with pythia8mc 8.317.2",
)
@pytest.mark.parametrize(("dataset", "n"), list(_BEFORE))
def test_response_off_reproduces_the_rows_written_before_it(dataset: str, n: int) -> None:
    cfg = jet_config(dataset, mpi=False, block_size=2, response=None)
    s = simulate_jets(dataset, n, seed=5, config=cfg)
    assert _digest(s.images, s.columns) == _BEFORE[(dataset, n)]
    assert s.truth["n_pileup"].tolist() == [0] * n


def _small(dataset: str = "quark-gluon", **kw: object) -> JetSimConfig:
    resp = ResponseConfig(pileup_pool_size=40)
    return jet_config(dataset, mpi=False, block_size=3, response=resp, **kw)


@needs_sim
def test_response_is_deterministic_prefix_stable_and_shard_exact(tmp_path: Path) -> None:
    cfg = _small()
    a = simulate_jets("quark-gluon", 8, seed=9, config=cfg)
    b = simulate_jets("quark-gluon", 8, seed=9, config=cfg)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.truth["n_pileup"], b.truth["n_pileup"])
    assert a.truth["n_pileup"].min() > 0
    short = simulate_jets("quark-gluon", 5, seed=9, config=cfg)  # a partial last block
    np.testing.assert_array_equal(short.images, a.images[:5])
    other = simulate_jets("quark-gluon", 8, seed=10, config=cfg)
    assert not np.array_equal(other.images[:, 1], a.images[:, 1])
    whole = write_jets("quark-gluon", tmp_path / "all", 8, seed=9, config=cfg, progress=False)
    parts = [
        write_jets("quark-gluon", tmp_path / "sh", 8, seed=9, config=cfg, shard=i, num_shards=2, progress=False)
        for i in range(2)
    ]
    union = pa.concat_tables([pq.read_table(p.path) for p in parts])
    assert union.equals(pq.read_table(whole.path).replace_schema_metadata(union.schema.metadata))
    table = pq.read_table(whole.path)
    np.testing.assert_array_equal(table.column("pt").to_numpy(), a.columns["pt"])


@needs_sim
@pytest.mark.slow
def test_same_rows_with_one_and_two_workers() -> None:
    cfg = _small("top")
    one = simulate_jets("top", 8, seed=3, config=cfg, workers=1)
    two = simulate_jets("top", 8, seed=3, config=cfg, workers=2)
    np.testing.assert_array_equal(one.images, two.images)


@needs_sim
def test_response_changes_only_the_detector_not_the_jets() -> None:
    on = simulate_jets("top", 4, seed=6, config=_small("top"))
    off = simulate_jets("top", 4, seed=6, config=dataclasses.replace(_small("top"), response=None))
    for key in ("pt", "m0", "y"):
        np.testing.assert_array_equal(on.columns[key], off.columns[key])
    # pile-up adds tracks and pixel-layer hits; the calorimeters gain occupancy
    assert np.all(on.images[:, 0].sum(axis=(1, 2)) > off.images[:, 0].sum(axis=(1, 2)))
    assert np.all(on.images[:, 5:].sum(axis=(1, 2, 3)) > off.images[:, 5:].sum(axis=(1, 2, 3)))
    assert np.all((on.images[:, 3] > 0).sum(axis=(1, 2)) > (off.images[:, 3] > 0).sum(axis=(1, 2)))


@needs_sim
@pytest.mark.slow
def test_acceptance_quark_gluon_defaults(tmp_path: Path) -> None:
    """Issue 22: 100 quark/gluon jets with the defaults have >= 25 non-zero ECAL pixels per jet."""
    res = write_jets("quark-gluon", tmp_path, 100, seed=1, progress=False)
    s = simulate_jets("quark-gluon", 100, seed=1)
    st = response_statistics(s.images, s.truth["eta"], s.channels, 0.4)
    assert st["ecal_nonzero"].mean() >= 25
    assert st["hottest_fraction"].mean() < 0.3  # showers spread: no single crystal dominates
    assert s.truth["n_pileup"].mean() == pytest.approx(20.0, abs=4 * math.sqrt(20.0 / 100))
    meta = read_metadata(res.path)
    r = meta["response"]
    assert r["enabled"] is True and r["pileup_mean"] == 20.0
    assert r["ecal_noise_gev"] == 0.04 and r["ecal_threshold_gev"] == pytest.approx(0.12)
    assert r["hcal_noise_gev"] == 0.2 and r["hcal_threshold_gev"] == pytest.approx(0.8)
    recorded = json.loads(json.dumps(dataclasses.asdict(ResponseConfig())))
    assert meta["config"]["response"] == recorded
