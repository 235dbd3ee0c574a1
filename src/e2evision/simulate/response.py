"""Detector response of the jet images: shower spread, resolution, noise, zero suppression, pile-up.

Without it every photon lands in one ECAL crystal and every hadron in one HCAL tower, with no
noise and no other interactions: cleaner pictures than any detector records. The stage, on by
default in :func:`e2evision.simulate.jets.jet_config` (``response=None`` turns it off and gives
the generator-level images bit for bit), does, in order:

* **Pile-up.** A Poisson number (mean ``pileup_mean``) of minimum-bias interactions is overlaid on
  every jet, before anything else, so their particles reach every channel (tracks, d0/dz, pixel
  layers, ECAL, HCAL). Generating ~20 Pythia events per jet would cost ~20x the jet itself, so
  each process generates a pool of ``pileup_pool_size`` non-diffractive events once (seeded
  from the run seed only, hence identical in every worker and shard) and draws from it with
  replacement; each draw gets a random rotation in phi, a random sign of eta and a vertex
  displaced along the beam by N(0, ``pileup_vertex_sigma_mm``).
* **Lateral shower spread.** Photons and electrons spread over 7 x 7 crystals with the GFlash
  core + tail profile of the e/gamma simulator
  (:func:`e2evision.simulate.calorimeter.gflash_lateral`),
  averaged over the Grindhammer-Peters depth profile at the particle's energy; hadrons over 5 x 5
  HCAL towers with a one-component profile of radius ``hcal_lateral_radius_cm``. Both are
  integrated exactly over each cell (closed form below) into tables built once per process.
* **Readout per channel.** Per ECAL crystal and per HCAL tower: stochastic term a sqrt(E),
  constant term c E, Gaussian electronic noise, zero suppression at ``*_zs_sigma`` noise sigmas
  (on energy; the images hold E_T = E / cosh eta of the cell centre).

Randomness: every jet has its own stream, ``SeedSequence(seed, spawn_key=(class, block, jet,
1))``, so a jet's pile-up and noise depend neither on the other jets of its block nor on how
many follow it: rows stay identical whatever ``--workers``, ``--shard`` or ``--n``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from e2evision.simulate.calorimeter_config import CalorimeterConfig
from e2evision.simulate.calorimeter_showers import gflash_lateral, longitudinal_means
from e2evision.simulate.pixelate import CRYSTAL_DETA, CRYSTAL_DPHI, N_IPHI

__all__ = [
    "ResponseConfig",
    "PileupPool",
    "square_fraction",
    "ecal_lateral_table",
    "hcal_lateral_table",
    "spread_ecal",
    "spread_hcal",
    "cell_readout",
    "jet_streams",
    "overlay_pileup",
    "pileup_pool",
    "response_metadata",
]

ECAL_KERNEL = 7
"""Crystals per side of the ECAL spread window (the tail beyond +-3.5 crystals is < 1 %)."""
HCAL_KERNEL = 5
"""Towers per side of the HCAL spread window."""
_POSITIONS = 11  # impact-position bins per cell side (odd: the cell centre is a bin centre)
_LOG10_E = np.arange(-1.5, 3.0001, 0.25)  # ECAL table energies: 0.03 GeV .. 1 TeV, 4 per decade


@dataclass(frozen=True)
class ResponseConfig:
    """Every number of the detector-response stage; stored in each file's metadata.

    Defaults: the ECAL readout of the e/gamma simulator (CMS barrel, Run 1), the HCAL barrel
    (HB) with ~0.2 GeV noise per tower and 0.8 GeV zero suppression, and the Run 1 mean of ~20
    pile-up interactions of the public files.
    """

    ecal_stochastic: float = 0.028
    """a in sigma/E = a / sqrt(E/GeV), applied per crystal as a sqrt(E_i)."""
    ecal_constant: float = 0.003
    ecal_noise_gev: float = 0.040
    """Gaussian electronic noise per crystal (energy)."""
    ecal_zs_sigma: float = 3.0
    """Crystals with measured energy below this many noise sigmas read 0."""
    ecal_moliere_radius_cm: float = 2.0
    ecal_crystal_size_cm: float = 2.2
    ecal_depth_points: int = 16
    """Equal-probability depths at which the depth-dependent lateral profile is averaged."""
    hcal_stochastic: float = 1.0
    hcal_constant: float = 0.05
    hcal_noise_gev: float = 0.2
    """Gaussian electronic noise per HCAL tower (energy)."""
    hcal_zs_sigma: float = 4.0
    hcal_lateral_radius_cm: float = 3.8
    """R of the hadronic lateral density R^2 / (pi (r^2 + R^2)^2): 95 % of the energy within
    4.4 R = 1 interaction length of brass (16.4 cm), at the HCAL face."""
    pileup_mean: float = 20.0
    """Poisson mean of the overlaid minimum-bias interactions per jet (0: none)."""
    pileup_pool_size: int = 400
    """Minimum-bias events generated once per process, drawn with replacement."""
    pileup_vertex_sigma_mm: float = 50.0
    """Spread of the pile-up vertices along the beam (Run 1 luminous region)."""
    pileup_process: tuple[str, ...] = ("SoftQCD:nonDiffractive = on",)
    """Pythia lines of the minimum-bias process (multiparton interactions always on)."""

    def __post_init__(self) -> None:
        for name in (
            "ecal_noise_gev",
            "ecal_moliere_radius_cm",
            "ecal_crystal_size_cm",
            "hcal_noise_gev",
            "hcal_lateral_radius_cm",
            "pileup_vertex_sigma_mm",
        ):
            _check_number(self, name, strict=True)
        for name in (
            "ecal_stochastic",
            "ecal_constant",
            "ecal_zs_sigma",
            "hcal_stochastic",
            "hcal_constant",
            "hcal_zs_sigma",
            "pileup_mean",
        ):
            _check_number(self, name, strict=False)
        for name in ("ecal_depth_points", "pileup_pool_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ResponseConfig.{name} must be an integer >= 1, got {value!r}")
        if any(not isinstance(s, str) for s in self.pileup_process):
            raise ValueError("ResponseConfig.pileup_process must be a tuple of strings")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ResponseConfig:
        """Rebuild a config recorded as JSON (lists come back as tuples)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown ResponseConfig fields: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    @property
    def ecal_threshold_gev(self) -> float:
        return self.ecal_zs_sigma * self.ecal_noise_gev

    @property
    def hcal_threshold_gev(self) -> float:
        return self.hcal_zs_sigma * self.hcal_noise_gev


def _check_number(cfg: ResponseConfig, name: str, strict: bool) -> None:
    value = getattr(cfg, name)
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value > 0 if strict else value >= 0)
    )
    if not ok:
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"ResponseConfig.{name} must be a finite number {bound}, got {value!r}")


def response_metadata(cfg: ResponseConfig | None) -> dict[str, Any]:
    """What a file records about its response: on/off, thresholds in GeV, pile-up recipe."""
    if cfg is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "ecal_noise_gev": cfg.ecal_noise_gev,
        "ecal_threshold_gev": cfg.ecal_threshold_gev,
        "hcal_noise_gev": cfg.hcal_noise_gev,
        "hcal_threshold_gev": cfg.hcal_threshold_gev,
        "threshold_on": "cell energy (images hold E_T = E / cosh eta of the cell centre)",
        "pileup_mean": cfg.pileup_mean,
        "pileup_pool_size": cfg.pileup_pool_size,
        "pileup_pool": "minimum-bias events generated once per process from the run seed and "
        "drawn with replacement, each rotated in phi, flipped in eta at random",
        "pileup_process": list(cfg.pileup_process),
    }


# ------------------------------------------------------------------------------------------------
# lateral profiles integrated over cells


def _quadrant(a: np.ndarray, b: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """P(x < a, y < b) for the 2-d density R^2 / (pi (x^2 + y^2 + R^2)^2) (closed form)."""
    ra = np.sqrt(a * a + radius * radius)
    rb = np.sqrt(b * b + radius * radius)
    return (
        0.25
        + a / (4.0 * ra)
        + b / (4.0 * rb)
        + (a / ra * np.arctan(b / ra) + b / rb * np.arctan(a / rb)) / (2.0 * math.pi)
    )


def square_fraction(x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Share of a shower with radial density 2 r R^2 / (r^2 + R^2)^2 in [x0, x1] x [y0, y1].

    The GFlash components (and the hadronic profile here) all have this form; its cumulative
    distribution over a quadrant has a closed form, so cells are integrated exactly.
    """
    return _quadrant(x1, y1, radius) - _quadrant(x0, y1, radius) - _quadrant(x1, y0, radius) + _quadrant(x0, y0, radius)


def _cell_fractions(radius: np.ndarray, kernel: int) -> np.ndarray:
    """Fractions in a ``kernel x kernel`` window for each impact-position bin: (..., P, P, K, K)."""
    pos = (np.arange(_POSITIONS) + 0.5) / _POSITIONS  # impact point inside the central cell
    edges = np.arange(kernel + 1) - kernel // 2  # cell edges relative to the central cell's origin
    x = edges[None, :] - pos[:, None]  # (P, K+1): edges relative to the impact point
    r = radius[..., None, None, None, None]
    f = _quadrant(x[:, None, :, None], x[None, :, None, :], r)  # (..., P, P, K+1, K+1)
    return f[..., 1:, 1:] - f[..., :-1, 1:] - f[..., 1:, :-1] + f[..., :-1, :-1]


@functools.lru_cache(maxsize=4)
def ecal_lateral_table(cfg: ResponseConfig) -> np.ndarray:
    """Mean share of an EM shower per crystal: (energy node, eta position, phi position, 7, 7).

    At each energy of ``_LOG10_E`` the GFlash profile is averaged over ``ecal_depth_points``
    equal-probability depths of the mean Grindhammer-Peters profile (no fluctuations: those
    come from the per-crystal stochastic term), then normalised to the 7 x 7 window.
    """
    from scipy.special import gammaincinv

    cal = CalorimeterConfig(moliere_radius_cm=cfg.ecal_moliere_radius_cm, crystal_size_cm=cfg.ecal_crystal_size_cm)
    energy = 10.0**_LOG10_E
    _, mean_log_t, mean_log_a = longitudinal_means(energy, cal)
    alpha = np.maximum(np.exp(mean_log_a), 1.05)
    prob = (np.arange(cfg.ecal_depth_points) + 0.5) / cfg.ecal_depth_points
    # t / T of a Gamma(alpha, beta = (alpha - 1) / T) depth is Gamma(alpha, 1) / (alpha - 1)
    tau = gammaincinv(alpha[:, None], prob[None, :]) / (alpha[:, None] - 1.0)
    r_core, r_tail, p_core = gflash_lateral(tau, np.log(energy)[:, None], cal)
    scale = cal.moliere_radius_cm / cal.crystal_size_cm  # Moliere units -> crystals
    p = np.clip(p_core, 0.0, 1.0)[..., None, None, None, None]
    cells = (
        p * _cell_fractions(r_core * scale, ECAL_KERNEL) + (1.0 - p) * _cell_fractions(r_tail * scale, ECAL_KERNEL)
    ).mean(axis=1)
    return cells / cells.sum(axis=(-2, -1), keepdims=True)


@functools.lru_cache(maxsize=4)
def hcal_lateral_table(cfg: ResponseConfig, tower: int, hcal_radius_mm: float) -> np.ndarray:
    """Share of a hadronic shower per tower: (eta position, phi position, 5, 5), normalised."""
    tower_cm = hcal_radius_mm / 10.0 * tower * CRYSTAL_DPHI
    cells = _cell_fractions(np.asarray(cfg.hcal_lateral_radius_cm / tower_cm), HCAL_KERNEL)
    return cells / cells.sum(axis=(-2, -1), keepdims=True)


def _position_bin(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell index and impact-position bin of continuous cell coordinates ``u``."""
    cell = np.floor(u)
    pos = np.minimum(((u - cell) * _POSITIONS).astype(np.int64), _POSITIONS - 1)
    return cell.astype(np.int64), pos


def spread_ecal(
    jet: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    energy: np.ndarray,
    et: np.ndarray,
    table: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """EM deposits at (eta, phi) -> 49 (jet, ieta, iphi, E_T share) entries each, for pixelate."""
    ieta, p_eta = _position_bin(np.asarray(eta) / CRYSTAL_DETA)
    iphi, p_phi = _position_bin(np.mod(phi, 2.0 * math.pi) / CRYSTAL_DPHI)
    node = np.clip(np.rint((np.log10(np.maximum(energy, 1e-12)) - _LOG10_E[0]) / 0.25), 0, _LOG10_E.size - 1).astype(
        np.int64
    )
    share = table[node, p_eta, p_phi]  # (n, 7, 7)
    off = np.arange(ECAL_KERNEL) - ECAL_KERNEL // 2
    n = ieta.size
    out_eta = np.broadcast_to(ieta[:, None, None] + off[None, :, None], share.shape)
    out_phi = np.broadcast_to(np.mod(iphi[:, None, None] + off[None, None, :], N_IPHI), share.shape)
    k2 = ECAL_KERNEL * ECAL_KERNEL
    return (
        np.repeat(jet, k2),
        out_eta.reshape(n * k2),
        out_phi.reshape(n * k2),
        (share * et[:, None, None]).reshape(n * k2),
    )


def spread_hcal(
    jet: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    et: np.ndarray,
    table: np.ndarray,
    tower: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hadron deposits -> 25 (jet, tower ieta, tower iphi, E_T share) entries each (tower units)."""
    teta, p_eta = _position_bin(np.asarray(eta) / (CRYSTAL_DETA * tower))
    tphi, p_phi = _position_bin(np.mod(phi, 2.0 * math.pi) / (CRYSTAL_DPHI * tower))
    share = table[p_eta, p_phi]
    off = np.arange(HCAL_KERNEL) - HCAL_KERNEL // 2
    n = teta.size
    k2 = HCAL_KERNEL * HCAL_KERNEL
    out_eta = np.broadcast_to(teta[:, None, None] + off[None, :, None], share.shape)
    out_phi = np.broadcast_to(np.mod(tphi[:, None, None] + off[None, None, :], N_IPHI // tower), share.shape)
    return (
        np.repeat(jet, k2),
        out_eta.reshape(n * k2),
        out_phi.reshape(n * k2),
        (share * et[:, None, None]).reshape(n * k2),
    )


# ------------------------------------------------------------------------------------------------
# readout


def cell_readout(
    et: np.ndarray,
    cosh_eta: np.ndarray,
    streams: list[np.random.Generator],
    stochastic: float,
    constant: float,
    noise_gev: float,
    zs_sigma: float,
) -> np.ndarray:
    """Measured E_T of cells ``(jets, H, W)`` whose centres have ``cosh_eta`` ``(jets, H, 1)``.

    Per cell, on energy E = E_T cosh eta: E + a sqrt(E) z1 + c E z2 + sigma_n z3, read as 0 below
    ``zs_sigma`` sigma_n. Jet j's normals come from ``streams[j]``: the noise plane first, then
    two per cell with energy, in C order.
    """
    energy = et * cosh_eta
    out = np.empty_like(energy)
    for j, rng in enumerate(streams):
        e = energy[j]
        meas = e + noise_gev * rng.standard_normal(e.shape)
        hit = np.flatnonzero(e > 0)
        if hit.size:
            z = rng.standard_normal((2, hit.size))
            eh = e.reshape(-1)[hit]
            meas.reshape(-1)[hit] += stochastic * np.sqrt(eh) * z[0] + constant * eh * z[1]
        out[j] = meas
    out[out < zs_sigma * noise_gev] = 0.0
    return out / cosh_eta


def jet_streams(seed: int, class_key: int, block: int, m: int) -> list[np.random.Generator]:
    """One random stream per jet of a block (pile-up draws, then readout noise)."""
    return [
        np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(class_key, int(block), j, 1)))
        )
        for j in range(m)
    ]


# ------------------------------------------------------------------------------------------------
# pile-up


@dataclass
class PileupPool:
    """Minimum-bias events as flat particle columns; event i is ``offsets[i]:offsets[i + 1]``."""

    offsets: np.ndarray
    part: dict[str, np.ndarray]
    """``id, px, py, pz, e, vx, vy, vz, charge`` of the visible final state."""

    @property
    def size(self) -> int:
        return int(self.offsets.size - 1)


_POOLS: dict[tuple[Any, ...], PileupPool] = {}


def pileup_pool(cfg: ResponseConfig, seed: int, ecm_gev: float, eta_max: float) -> PileupPool:
    """This process's pool for ``seed`` (generated at the first call, then cached).

    The Pythia seed comes from ``SeedSequence(seed, spawn_key=(999,))``, so every worker and shard
    of a run builds the same pool. Neutrinos and particles beyond ``eta_max`` are dropped.
    """
    key = (cfg.pileup_pool_size, cfg.pileup_process, seed, ecm_gev, eta_max)
    if key in _POOLS:
        return _POOLS[key]
    from e2evision.simulate.jets import require_simulators
    from e2evision.simulate.pythia_records import event_record

    pythia8mc, _, ak = require_simulators()
    pythia = pythia8mc.Pythia("", False)
    py_seed = 1 + int(
        np.random.SeedSequence(entropy=seed, spawn_key=(999,)).generate_state(1, np.uint64)[0] % 899_999_999
    )
    lines = [
        f"Beams:eCM = {ecm_gev:g}",
        "Random:setSeed = on",
        f"Random:seed = {py_seed}",
        "Print:quiet = on",
        "Next:numberCount = 0",
        *cfg.pileup_process,
    ]
    for line in lines:
        if not pythia.readString(line):
            raise ValueError(f"Pythia rejected the pile-up setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise the pile-up process: {lines}")
    rec = event_record(ak, pythia.nextBatch(cfg.pileup_pool_size))
    pt = np.hypot(rec["px"], rec["py"])
    eta = np.arcsinh(rec["pz"] / np.where(pt > 0, pt, 1.0))
    keep = (rec["status"] > 0) & (pt > 0) & (np.abs(eta) < eta_max) & ~np.isin(np.abs(rec["id"]), (12, 14, 16))
    event = np.repeat(np.arange(rec["offsets"].size - 1), np.diff(rec["offsets"]))[keep]
    part = {k: rec[k][keep] for k in ("id", "px", "py", "pz", "e", "vx", "vy", "vz")}
    uniq, inverse = np.unique(part["id"], return_inverse=True)
    part["charge"] = np.array([pythia.particleData.charge(int(u)) for u in uniq])[inverse]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(event, minlength=cfg.pileup_pool_size))])
    pool = _POOLS[key] = PileupPool(offsets.astype(np.int64), part)
    while len(_POOLS) > 2:
        del _POOLS[next(iter(_POOLS))]
    return pool


def overlay_pileup(
    part: dict[str, np.ndarray],
    part_jet: np.ndarray,
    jet_eta: np.ndarray,
    pool: PileupPool,
    streams: list[np.random.Generator],
    cfg: ResponseConfig,
    eta_window: float,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Add each jet's pile-up particles after its own; returns (particles, their jet, counts).

    Jet j draws from ``streams[j]``: the count ~ Poisson(pileup_mean), then per interaction the
    pool event, a phi rotation, an eta sign and a vertex z. Only particles within ``eta_window``
    of the jet axis in eta are kept (the rest cannot reach its image). Jets must be grouped in
    ``part_jet`` order; the output keeps each jet's particles together, its own first.
    """
    draws = []
    for rng in streams:
        k = int(rng.poisson(cfg.pileup_mean))
        draws.append(
            (
                rng.integers(0, pool.size, k),
                rng.uniform(0.0, 2.0 * math.pi, k),
                np.where(rng.random(k) < 0.5, -1.0, 1.0),
                rng.normal(0.0, cfg.pileup_vertex_sigma_mm, k),
            )
        )
    counts = np.array([d[0].size for d in draws], dtype=np.int64)
    ev = np.concatenate([d[0] for d in draws]).astype(np.int64)
    rot, sign, z0 = (np.concatenate([d[i] for d in draws]) for i in (1, 2, 3))
    ev_jet = np.repeat(np.arange(len(streams)), counts)
    sizes = pool.offsets[ev + 1] - pool.offsets[ev]
    which = np.repeat(np.arange(ev.size), sizes)  # interaction of each pile-up particle
    idx = np.repeat(pool.offsets[ev], sizes) + np.arange(which.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    p = {k: v[idx] for k, v in pool.part.items()}
    s = sign[which]
    c, sn = np.cos(rot[which]), np.sin(rot[which])
    p["px"], p["py"] = c * p["px"] - sn * p["py"], sn * p["px"] + c * p["py"]
    p["vx"], p["vy"] = c * p["vx"] - sn * p["vy"], sn * p["vx"] + c * p["vy"]
    p["pz"], p["vz"] = s * p["pz"], s * p["vz"] + z0[which]
    pjet = ev_jet[which]
    pt = np.hypot(p["px"], p["py"])
    eta = np.arcsinh(p["pz"] / np.where(pt > 0, pt, 1.0))
    near = np.abs(eta - jet_eta[pjet]) < eta_window
    pjet = pjet[near]
    merged_jet = np.concatenate([part_jet, pjet])
    order = np.argsort(merged_jet, kind="stable")
    merged = {k: np.concatenate([part[k], p[k][near]])[order] for k in part}
    return merged, merged_jet[order], counts
