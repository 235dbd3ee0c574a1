"""ECAL showers of the e/gamma simulator: random streams, spots, crops and readout.

One block of events is the unit of determinism: its own ``SeedSequence`` child keyed by (seed,
particle, block index) drives the tracker, the showers and the readout of that block.
"""

from __future__ import annotations

import math

import numpy as np

from e2evision.simulate.calorimeter_config import (
    DEFAULT_CALORIMETER_CONFIG,
    CalorimeterConfig,
    Particle,
)
from e2evision.simulate.calorimeter_tracker import (
    _Component,
    _material_x0,
    _transport_charged,
    _transport_photons,
)

__all__ = ["gflash_lateral", "longitudinal_means", "simulate_showers"]

_PDG_ID = {"photon": 22, "electron": 11}  # also the spawn key that separates the two RNG streams


# ------------------------------------------------------------------------------------------------
# seeding


def _root_sequence(seed: int | np.random.SeedSequence) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be a non-negative int or numpy SeedSequence, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.SeedSequence(int(seed))


def _block_rng(root: np.random.SeedSequence, particle: Particle, block: int) -> np.random.Generator:
    """One stream per (seed, particle, block): independent of how events are chunked/sharded."""
    child = np.random.SeedSequence(entropy=root.entropy, spawn_key=(*root.spawn_key, _PDG_ID[particle], int(block)))
    return np.random.Generator(np.random.PCG64(child))


def _check_particle(particle: str) -> None:
    if particle not in _PDG_ID:
        raise ValueError(f"particle must be 'electron' or 'photon', got {particle!r}")


# ------------------------------------------------------------------------------------------------
# ECAL showers


def longitudinal_means(energy: np.ndarray, cfg: CalorimeterConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grindhammer-Peters means per shower energy [GeV]: (ln y, <ln T>, <ln alpha>).

    Shared by the e/gamma showers and the jet detector response (``simulate.response``), so
    both use one parametrisation. T is the depth of the shower maximum in X0, alpha the Gamma
    shape; y = E / E_c is clipped from below at ``gp_min_log_y``.
    """
    z = cfg.z_eff
    log_y = np.maximum(np.log(energy / cfg.critical_energy_gev), cfg.gp_min_log_y)
    mean_log_t = np.log(np.maximum(log_y + cfg.gp_tmax_offset, 0.3))
    a1, a2, a3 = cfg.gp_alpha
    mean_log_a = np.log(a1 + (a2 + a3 / z) * log_y)
    return log_y, mean_log_t, mean_log_a


def gflash_lateral(
    tau: np.ndarray, log_e: np.ndarray, cfg: CalorimeterConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GFlash lateral profile at depth tau = t / T: (core radius, tail radius, core weight).

    Radii in Moliere units. Each component has the radial density 2 r R^2 / (r^2 + R^2)^2; the
    shower at that depth is ``p_core`` core + (1 - p_core) tail. ``log_e`` = ln(E / GeV).
    """
    z = cfg.z_eff
    rc1, rc2, rc3, rc4 = cfg.gflash_core_radius
    r_core = (rc1 + rc2 * log_e) + (rc3 + rc4 * z) * tau
    k1, k1z, k2, k3, k4, k4e = cfg.gflash_tail_radius
    r_tail = (k1 + k1z * z) * (np.exp(k3 * (tau - k2)) + np.exp((k4 + k4e * log_e) * (tau - k2)))
    w1, w1z, w2, w2z, w3, w3e = cfg.gflash_core_weight
    arg = ((w2 + w2z * z) - tau) / (w3 + w3e * log_e)
    p_core = (w1 + w1z * z) * np.exp(arg - np.exp(arg))
    return r_core, r_tail, p_core


def _shower_spots(
    rng: np.random.Generator,
    comp_energy: np.ndarray,
    comp_is_photon: np.ndarray,
    cfg: CalorimeterConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample energy spots of all showers at once.

    Returns (component index, spot energy, depth t [X0] from the crystal front, lateral dx, dy
    [crystals] from the shower axis). Spots deeper than the crystal are dropped (rear leakage).
    """
    n_comp = comp_energy.shape[0]
    log_y, mean_log_t, mean_log_a = longitudinal_means(comp_energy, cfg)
    sig_t = 1.0 / (cfg.gp_sigma_log_tmax[0] + cfg.gp_sigma_log_tmax[1] * log_y)
    sig_a = 1.0 / (cfg.gp_sigma_log_alpha[0] + cfg.gp_sigma_log_alpha[1] * log_y)
    rho = np.clip(cfg.gp_rho[0] + cfg.gp_rho[1] * log_y, -0.99, 0.99)
    g1 = rng.standard_normal(n_comp)
    g2 = rng.standard_normal(n_comp)
    c1, c2 = np.sqrt((1.0 + rho) / 2.0), np.sqrt((1.0 - rho) / 2.0)
    t_max = np.exp(mean_log_t + sig_t * (c1 * g1 + c2 * g2))
    alpha = np.maximum(np.exp(mean_log_a + sig_a * (c1 * g1 - c2 * g2)), 1.05)
    beta = (alpha - 1.0) / t_max
    start = np.where(comp_is_photon, rng.exponential(cfg.photon_conversion_length_x0, n_comp), 0.0)

    n_spots = np.clip(np.ceil(comp_energy / cfg.spot_energy_gev), 1, cfg.max_spots_per_shower)
    n_spots = n_spots.astype(np.int64)
    owner = np.repeat(np.arange(n_comp), n_spots)
    spot_e = np.repeat(comp_energy / n_spots, n_spots)
    t_shower = rng.standard_gamma(alpha[owner]) / beta[owner]
    depth = start[owner] + t_shower
    inside = depth < cfg.depth_x0
    owner, spot_e, t_shower, depth = owner[inside], spot_e[inside], t_shower[inside], depth[inside]

    tau = t_shower / t_max[owner]
    r_core, r_tail, p_core = gflash_lateral(tau, np.log(comp_energy)[owner], cfg)
    n = owner.shape[0]
    radius = np.where(rng.random(n) < p_core, r_core, r_tail)
    u = np.minimum(rng.random(n), 1.0 - 1e-9)
    r = radius * np.sqrt(u / (1.0 - u)) * (cfg.moliere_radius_cm / cfg.crystal_size_cm)
    ang = rng.random(n) * (2.0 * np.pi)
    return owner, spot_e, depth, r * np.cos(ang), r * np.sin(ang)


def _transport_gun(
    rng: np.random.Generator, m: int, particle: Particle, cfg: CalorimeterConfig
) -> tuple[list[_Component], dict[str, np.ndarray], np.ndarray]:
    """Draw ``m`` gun particles and carry them through the tracker to the ECAL face.

    Returns every particle reaching the ECAL as a shower "component" (see ``_Component``), the
    generator truth (``energy``, ``eta``, ``converted``, ``conversion_radius_cm``,
    ``brem_fraction``, ``charge``) and the tracker material crossed [X0].
    """
    abs_eta = rng.uniform(0.0, cfg.eta_max, m)
    eta = np.where(rng.random(m) < 0.5, -abs_eta, abs_eta)
    cosh_eta = np.cosh(eta)
    energy = cfg.pt_gev * cosh_eta
    x_total = _material_x0(abs_eta, cfg)
    events = np.arange(m)
    zeros = np.zeros(m)
    truth = {
        "energy": energy,
        "eta": eta,
        "converted": np.zeros(m, dtype=bool),
        "conversion_radius_cm": np.full(m, np.nan),
        "brem_fraction": np.zeros(m),
        "charge": np.zeros(m, dtype=np.int8),
    }
    if particle == "electron":
        if cfg.electron_charge == 0:
            charge = np.where(rng.random(m) < 0.5, -1.0, 1.0)
        else:
            charge = np.full(m, float(cfg.electron_charge))
        comps, e_out = _transport_charged(
            rng, events, energy, charge, zeros, zeros, zeros, x_total, cosh_eta, cfg, level=0
        )
        truth["brem_fraction"] = 1.0 - e_out / energy
        truth["charge"] = charge.astype(np.int8)
    else:
        comps, converted, r_conv = _transport_photons(
            rng, events, energy, zeros, zeros, zeros, x_total, cosh_eta, cfg, level=0
        )
        truth["converted"] = converted
        truth["conversion_radius_cm"] = 100.0 * r_conv
    return comps, truth, x_total


def _showering_components(
    comps: list[_Component], cfg: CalorimeterConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All components of a block as flat arrays (event, energy, phi offset in crystals, slope,
    is-photon), without those too soft to shower."""
    to_crystals = 1.0 / (cfg.ecal_radius_m * cfg.crystal_dphi_rad)  # y [m] -> phi [crystals]
    c_ev = np.concatenate([c[0] for c in comps])
    c_e = np.concatenate([c[1] for c in comps])
    c_phi = np.concatenate([c[2] for c in comps]) * to_crystals
    c_slope = np.concatenate([c[3] for c in comps])
    c_photon = np.concatenate([c[4] for c in comps])
    keep = c_e >= cfg.min_shower_energy_gev
    return c_ev[keep], c_e[keep], c_phi[keep], c_slope[keep], c_photon[keep]


def _deposit_window(
    rng: np.random.Generator,
    eta: np.ndarray,
    comps: list[_Component],
    cfg: CalorimeterConfig,
) -> np.ndarray:
    """Shower every component and sum its spots per crystal of a ``2 crop`` square window.

    The window is centred on the gun direction; crystals are tilted, so a spot's depth shifts it
    laterally. Returns the true deposited energy ``(m, grid, grid)`` [GeV].
    """
    m, crop = eta.shape[0], cfg.crop_size
    grid = 2 * crop  # working window around the gun direction; the crop is cut around the seed
    tilt = math.tan(math.radians(cfg.crystal_tilt_deg))
    c_ev, c_e, c_phi, c_slope, c_photon = _showering_components(comps, cfg)
    owner, spot_e, depth, d_eta, d_phi = _shower_spots(rng, c_e, c_photon, cfg)
    spot_ev = c_ev[owner]
    # Gun direction at a random point of crystal (crop, crop) of the working window.
    ref_eta = crop + rng.random(m)
    ref_phi = crop + rng.random(m)
    depth_cryst = depth * (cfg.radiation_length_cm / cfg.crystal_size_cm)
    pos_eta = ref_eta[spot_ev] + d_eta + depth_cryst * (tilt * np.sign(eta[spot_ev]))
    pos_phi = ref_phi[spot_ev] + c_phi[owner] + d_phi + depth_cryst * (tilt + c_slope[owner])
    i_eta = np.floor(pos_eta).astype(np.int64)
    i_phi = np.floor(pos_phi).astype(np.int64)
    ok = (i_eta >= 0) & (i_eta < grid) & (i_phi >= 0) & (i_phi < grid)
    flat = (spot_ev[ok] * grid + i_eta[ok]) * grid + i_phi[ok]
    return np.bincount(flat, weights=spot_e[ok], minlength=m * grid * grid).reshape(m, grid, grid)


def _crop_at_seed(window: np.ndarray, crop: int) -> np.ndarray:
    """Crop ``(m, crop, crop)`` around the seed crystal, as the public crops are centred on it."""
    m, grid = window.shape[0], window.shape[1]
    seed_flat = window.reshape(m, -1).argmax(axis=1)
    half = crop // 2
    seed_eta = np.clip(seed_flat // grid, half, grid - half)
    seed_phi = np.clip(seed_flat % grid, half, grid - half)
    offs = np.arange(-half, half)
    rows = (seed_eta[:, None] + offs)[:, :, None]
    cols = (seed_phi[:, None] + offs)[:, None, :]
    return window[np.arange(m)[:, None, None], rows, cols]


def _readout(rng: np.random.Generator, e_true: np.ndarray, cfg: CalorimeterConfig) -> np.ndarray:
    """Measured crops ``(m, crop, crop, 2)`` float32: energy [GeV] and hit time [ns].

    Photostatistics (a sqrt(E_i)), intercalibration, noise, zero suppression, timing.
    """
    shape = e_true.shape
    e_meas = (
        e_true
        + cfg.stochastic_term * np.sqrt(e_true) * rng.standard_normal(shape)
        + cfg.constant_term * e_true * rng.standard_normal(shape)
        + cfg.noise_gev * rng.standard_normal(shape)
    )
    # Decide hits on the float32 values that are stored, so every stored hit is >= threshold.
    threshold = np.float32(cfg.zero_suppression_sigma * cfg.noise_gev)
    hit = e_meas.astype(np.float32) >= threshold
    e_read = np.where(hit, e_meas, 0.0)
    amp = np.where(hit, e_meas, 1.0)
    sigma_t = np.hypot(cfg.time_noise_term_ns * cfg.noise_gev / amp, cfg.time_constant_term_ns)
    t_read = np.where(hit, sigma_t * rng.standard_normal(shape), 0.0)
    x = np.empty((*shape, 2), dtype=np.float32)
    x[..., 0] = e_read
    x[..., 1] = t_read
    return x


def _simulate_block(
    rng: np.random.Generator, m: int, particle: Particle, cfg: CalorimeterConfig
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Generate ``m`` events with one random stream (the unit of determinism).

    The steps draw from ``rng`` in a fixed order (gun and tracker, showers, crop position,
    readout), which is what makes a block reproducible.
    """
    comps, gun, material = _transport_gun(rng, m, particle, cfg)
    window = _deposit_window(rng, gun["eta"], comps, cfg)
    e_true = _crop_at_seed(window, cfg.crop_size)
    x = _readout(rng, e_true, cfg)
    return x, {**gun, "deposited_energy": e_true.sum(axis=(1, 2)), "material_x0": material}


def _simulate_range(
    start: int, stop: int, particle: Particle, root: np.random.SeedSequence, cfg: CalorimeterConfig
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Events [start, stop) of the stream; whole blocks are generated so any slicing agrees."""
    bs = cfg.block_size
    xs, truths = [], []
    for block in range(start // bs, (stop - 1) // bs + 1):
        x, truth = _simulate_block(_block_rng(root, particle, block), bs, particle, cfg)
        lo = max(start - block * bs, 0)
        hi = min(stop - block * bs, bs)
        xs.append(x[lo:hi])
        truths.append({k: v[lo:hi] for k, v in truth.items()})
    return np.concatenate(xs), {k: np.concatenate([t[k] for t in truths]) for k in truths[0]}


def simulate_showers(
    n: int,
    particle: Particle,
    seed: int | np.random.SeedSequence,
    config: CalorimeterConfig = DEFAULT_CALORIMETER_CONFIG,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Simulate ``n`` single-particle crops in memory.

    Returns ``X`` float32 ``(n, crop, crop, 2)`` (energy GeV, time ns; axis 1 = ieta, axis 2 =
    iphi) and a truth dict of per-event arrays: ``energy`` (generated, GeV), ``eta``,
    ``converted`` (photons), ``conversion_radius_cm`` (NaN if not converted), ``brem_fraction``
    (electrons, 0 for photons), ``charge`` (electron charge, 0 for photons),
    ``deposited_energy`` (noise-free energy inside the crop) and ``material_x0``.
    Event i is the same for any ``n > i`` with the same seed.
    """
    _check_particle(particle)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(config, CalorimeterConfig):
        raise ValueError(f"config must be a CalorimeterConfig, got {type(config).__name__}")
    return _simulate_range(0, int(n), particle, _root_sequence(seed), config)
