"""The parametric e/gamma calorimeter simulator: public schema, determinism, physics sanity."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from e2evision.simulate import calorimeter as calo
from e2evision.simulate.calorimeter import (
    CalorimeterConfig,
    egamma_validation_plots,
    shower_widths,
    simulate_showers,
    write_egamma,
)

N_PHYSICS = 400  # per class; a few tenths of a second each


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties (no sklearn needed)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


_FAKE_VERSIONS = {"numpy": np.__version__, "python": "3"}


@pytest.fixture(autouse=True)
def _fast_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """package_versions() imports torch (seconds); the writer only has to store what it returns."""
    monkeypatch.setattr(calo, "package_versions", lambda: dict(_FAKE_VERSIONS))


@pytest.fixture(scope="module")
def showers() -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    return {p: simulate_showers(N_PHYSICS, p, seed=3) for p in ("photon", "electron")}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("egamma")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse stub is not active yet
        mp.setattr(calo, "package_versions", lambda: dict(_FAKE_VERSIONS))
        return write_egamma(out, n=300, seed=7, progress=False, chunk=100)


# ---------------------------------------------------------------------------------------------
# files


def test_files_have_public_schema(written: list[Path]) -> None:
    photon, electron = written
    assert photon.name == "SinglePhotonPt50_IMGCROPS_n150_sim.hdf5"
    assert electron.name == "SingleElectronPt50_IMGCROPS_n150_sim.hdf5"
    for path, label, particle in ((photon, 0.0, "photon"), (electron, 1.0, "electron")):
        with h5py.File(path, "r") as f:
            assert set(f.keys()) == {"X", "y"}
            assert f["X"].dtype == np.float32 and f["y"].dtype == np.float32
            assert f["X"].shape == (150, 32, 32, 2) and f["y"].shape == (150,)
            assert f["X"].chunks is not None
            assert np.all(f["y"][:] == label)
            attrs = dict(f.attrs)
            assert attrs["generator"] == "e2evision.simulate.calorimeter"
            assert int(attrs["seed"]) == 7
            assert attrs["particle"] == particle
            cfg = CalorimeterConfig.from_json(attrs["config_json"])
            assert cfg == CalorimeterConfig()
            assert json.loads(attrs["versions_json"]) == _FAKE_VERSIONS
            x = f["X"][:]
        assert np.isfinite(x).all()
        assert (x[..., 0] > 0).any(axis=(1, 2)).all()  # every crop has a shower


def test_same_seed_identical_regardless_of_chunk(written: list[Path], tmp_path: Path) -> None:
    again = write_egamma(tmp_path / "a", n=300, seed=7, progress=False, chunk=5000)
    other = write_egamma(tmp_path / "b", n=300, seed=8, progress=False, chunk=100)
    for p_ref, p_same, p_other in zip(written, again, other):
        with h5py.File(p_ref) as a, h5py.File(p_same) as b, h5py.File(p_other) as c:
            assert np.array_equal(a["X"][:], b["X"][:])
            assert not np.array_equal(a["X"][:], c["X"][:])
    with h5py.File(written[0]) as a:  # in-memory API agrees with the files, event by event
        x_mem, _ = simulate_showers(150, "photon", seed=7)
        assert np.array_equal(a["X"][:], x_mem)


def test_event_prefix_is_stable_and_classes_use_independent_streams() -> None:
    cfg = CalorimeterConfig(block_size=32)
    x_small, t_small = simulate_showers(40, "photon", seed=1, config=cfg)
    x_big, t_big = simulate_showers(100, "photon", seed=1, config=cfg)
    assert np.array_equal(x_small, x_big[:40])
    assert np.array_equal(t_small["energy"], t_big["energy"][:40])
    x_e, _ = simulate_showers(40, "electron", seed=1, config=cfg)
    assert not np.array_equal(x_small, x_e)
    x_ss, _ = simulate_showers(40, "photon", seed=np.random.SeedSequence(1), config=cfg)
    assert np.array_equal(x_small, x_ss)


def test_shards_together_equal_the_unsharded_files(tmp_path: Path) -> None:
    cfg = CalorimeterConfig(block_size=16)
    full = write_egamma(tmp_path / "full", n=100, seed=2, config=cfg, progress=False)
    parts = [
        write_egamma(tmp_path / "parts", n=100, seed=2, config=cfg, progress=False, shard=i, num_shards=3)
        for i in range(3)
    ]
    for cls in range(2):
        with h5py.File(full[cls]) as f:
            ref = f["X"][:]
        pieces = []
        for shard_paths in parts:
            with h5py.File(shard_paths[cls]) as f:
                assert int(f.attrs["num_shards"]) == 3
                pieces.append(f["X"][:])
        assert np.array_equal(np.concatenate(pieces), ref)


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = calo._simulate_range
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash mid-write")
        return real(*args, **kwargs)

    monkeypatch.setattr(calo, "_simulate_range", flaky)
    cfg = CalorimeterConfig(block_size=32)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="mid-write"):
        write_egamma(out, n=200, seed=0, config=cfg, progress=False, chunk=32)
    assert calls["n"] == 2
    assert list(out.iterdir()) == []  # neither the final file nor a temporary one


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 1}, "n must be"),
        ({"n": 10, "chunk": 0}, "chunk must be"),
        ({"n": 10, "seed": -1}, "seed must be"),
        ({"n": 10, "shard": 2, "num_shards": 2}, "shard must be"),
    ],
)
def test_write_rejects_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_egamma(tmp_path, progress=False, **kwargs)


def test_simulate_and_config_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="particle"):
        simulate_showers(4, "muon", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be"):
        simulate_showers(0, "photon", seed=0)
    with pytest.raises(ValueError, match="noise_gev"):
        CalorimeterConfig(noise_gev=-0.1)
    with pytest.raises(ValueError, match="tracker"):
        CalorimeterConfig(tracker_outer_radius_m=2.0)
    cfg = CalorimeterConfig(spot_energy_gev=0.1, material_x0_edge=1.8)
    assert CalorimeterConfig.from_json(cfg.to_json()) == cfg


# ---------------------------------------------------------------------------------------------
# physics


def test_readout_conventions(showers: dict) -> None:
    cfg = CalorimeterConfig()
    threshold = np.float32(cfg.zero_suppression_sigma * cfg.noise_gev)
    for x, truth in showers.values():
        assert x.dtype == np.float32 and x.shape == (N_PHYSICS, 32, 32, 2)
        assert np.isfinite(x).all()
        energy, time = x[..., 0], x[..., 1]
        assert energy.min() >= 0.0
        assert (energy[energy != 0] >= threshold).all()  # zero suppression
        assert (time[energy == 0] == 0).all()  # no hit: time exactly 0
        # The seed (most energetic) crystal sits at the crop centre.
        seed = energy.reshape(len(x), -1).argmax(axis=1)
        assert np.mean(seed == 16 * 32 + 16) > 0.95
        # Timing: precise for big hits, poor near threshold.
        assert np.std(time[energy > 5.0]) < 0.5
        assert np.std(time[(energy > 0) & (energy < 0.2)]) > 3.0
        assert (np.abs(truth["eta"]) < cfg.eta_max).all()
        np.testing.assert_allclose(truth["energy"], cfg.pt_gev * np.cosh(truth["eta"]))


def test_energy_containment(showers: dict) -> None:
    ratios = {}
    for particle, (x, truth) in showers.items():
        ratios[particle] = x[..., 0].sum(axis=(1, 2)) / truth["energy"]
        assert 0.7 < ratios[particle].mean() < 1.02
    x, truth = showers["photon"]
    unconverted = ratios["photon"][~truth["converted"]]
    assert len(unconverted) > 100
    assert 0.85 < unconverted.mean() < 1.0
    assert unconverted.std() < 0.03


def test_truth_bookkeeping(showers: dict) -> None:
    _, t_pho = showers["photon"]
    _, t_ele = showers["electron"]
    assert np.all(t_pho["brem_fraction"] == 0)
    assert 0.2 < t_pho["converted"].mean() < 0.7
    conv_r = t_pho["conversion_radius_cm"]
    assert np.isnan(conv_r[~t_pho["converted"]]).all()
    assert ((conv_r[t_pho["converted"]] > 0) & (conv_r[t_pho["converted"]] < 111)).all()
    f = t_ele["brem_fraction"]
    assert ((f >= 0) & (f <= 1)).all() and 0.2 < f.mean() < 0.8
    assert not t_ele["converted"].any()
    # More material at high |eta| means more brem and more conversions.
    high = np.abs(t_ele["eta"]) > 0.72
    assert f[high].mean() > f[~high].mean()
    high = np.abs(t_pho["eta"]) > 0.72
    assert t_pho["converted"][high].mean() > t_pho["converted"][~high].mean()


def test_electrons_wider_in_phi_not_in_eta(showers: dict) -> None:
    w_eta_g, w_phi_g = shower_widths(showers["photon"][0])
    w_eta_e, w_phi_e = shower_widths(showers["electron"][0])
    assert w_phi_e.mean() > 1.1 * w_phi_g.mean()
    assert abs(w_eta_e.mean() - w_eta_g.mean()) < 0.1 * w_eta_g.mean()
    # Unconverted photons are the most compact objects.
    unconv = ~showers["photon"][1]["converted"]
    assert w_phi_g[unconv].mean() < w_phi_g[~unconv].mean()
    assert w_phi_g[unconv].mean() < w_phi_e.mean()


def test_cut_discriminant_separates_but_not_trivially(showers: dict) -> None:
    x = np.concatenate([showers["photon"][0], showers["electron"][0]])
    labels = np.r_[np.zeros(N_PHYSICS), np.ones(N_PHYSICS)]
    _, w_phi = shower_widths(x, min_energy=0.3)
    auc = _auc(w_phi, labels)
    assert 0.6 < auc < 0.99
    _, w_phi_all = shower_widths(x)
    assert 0.55 < _auc(w_phi_all, labels) < 0.99


def test_shower_widths_on_known_images() -> None:
    img = np.zeros((3, 32, 32), np.float32)
    img[0, 16, 16] = 1.0  # point: zero width
    img[1, 16, [14, 18]] = 2.0  # two equal hits 4 apart in phi: RMS 2
    w_eta, w_phi = shower_widths(img)  # third image is empty
    np.testing.assert_allclose(w_eta, [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(w_phi, [0, 2, 0], atol=1e-12)
    img[1, 10, 14] = 0.1
    _, w_phi = shower_widths(img, min_energy=0.5)
    np.testing.assert_allclose(w_phi[1], 2.0)


def test_validation_plots(showers: dict, tmp_path: Path) -> None:
    x = np.concatenate([showers["photon"][0][:100], showers["electron"][0][:100]])
    y = np.r_[np.zeros(100), np.ones(100)].astype(np.float32)
    paths = egamma_validation_plots(x, y, tmp_path / "plots")
    assert len(paths) == 5
    for p in paths:
        assert p.suffix == ".png" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(q.name for q in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)
    with pytest.raises(ValueError, match="disagree"):
        egamma_validation_plots(x, y[:10], tmp_path)
