"""Parametric electron/photon showers in the CMS barrel ECAL, written in the public crop schema.

The real ``SinglePhotonPt50`` / ``SingleElectronPt50`` crops come from full Geant4 simulation,
which needs data files that cannot be downloaded here. This module rebuilds the physics that makes
the two classes differ, with fast parametrisations instead of particle transport:

* **Tracker** (in front of the ECAL): electrons bend in the 3.8 T field and lose energy by
  bremsstrahlung (Bethe-Heitler energy-loss law, sampled in radial slabs so that the photons leave
  tangentially at different points of the bending trajectory and land spread along phi); photons
  convert with probability ``1 - exp(-7/9 x/X0)`` into an e+e- pair whose legs bend apart and
  radiate in turn. The material ``x`` grows with |eta|, so both effects grow with |eta|.
* **ECAL** (PbWO4): every particle reaching the calorimeter showers with the Grindhammer-Peters
  Gamma-distribution longitudinal profile (fluctuating, correlated shower maximum and shape) and
  the GFlash core + tail lateral profile in Moliere units; energy is deposited as equal-energy
  spots, all vectorised over spots and events.
* **Readout**: photostatistics-like stochastic term, intercalibration constant term, Gaussian
  electronic noise, zero suppression, and a hit time whose resolution degrades as noise/amplitude.

Image convention (as the public files): ``X[i, ieta, iphi, c]`` with c = 0 energy (GeV) and
c = 1 time (ns); crystals without a hit have energy 0 and time 0, so "no hit" is told from
"hit at t = 0" by the energy channel. As in the public crops, the crop is centred on the seed
(most energetic) crystal at index (16, 16): the leading deposit's impact lies at a random point
inside that central crystal.

Determinism: events are generated in fixed blocks of ``config.block_size`` events, each block with
its own ``SeedSequence`` child keyed by (seed, particle, block index). Results are therefore
bit-identical for a given seed no matter how the work is chunked or sharded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from e2evision.utils.io import atomic_path
from e2evision.utils.provenance import package_versions

__all__ = [
    "CalorimeterConfig",
    "simulate_showers",
    "write_egamma",
    "egamma_validation_plots",
    "shower_widths",
    "egamma_file_name",
    "longitudinal_means",
    "gflash_lateral",
]

Particle = Literal["electron", "photon"]

GENERATOR_NAME = "e2evision.simulate.calorimeter"
_PDG_ID = {"photon": 22, "electron": 11}  # also the spawn key that separates the two RNG streams
_LABEL = {"photon": 0.0, "electron": 1.0}  # public convention: photon = 0, electron = 1
_FILE_STEM = {"photon": "SinglePhoton", "electron": "SingleElectron"}
_C_GEV_PER_T_M = 0.299792458  # p_T [GeV] = 0.3 * B [T] * R [m]
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class CalorimeterConfig:
    """Every number the simulation uses, recorded as JSON in each output file.

    Defaults describe the CMS barrel ECAL and tracker during Run 1 (the period of the public
    files). Changing any field changes the generated events; ``block_size`` included, because it
    fixes how random streams are assigned to events.
    """

    # --- kinematics of the particle gun -------------------------------------------------------
    pt_gev: float = 50.0
    """Transverse momentum of every generated particle (the public samples are fixed pT 50)."""
    eta_max: float = 1.44
    """|eta| is uniform in [0, eta_max): the barrel acceptance (crystals end at 1.479)."""

    # --- ECAL geometry and PbWO4 material -------------------------------------------------------
    crop_size: int = 32
    """Crop side in crystals (public crops are 32 x 32)."""
    crystal_size_cm: float = 2.2
    """Front-face size of a barrel crystal; the shower's lateral scale in crystal units."""
    crystal_dphi_rad: float = 2.0 * math.pi / 360.0
    """Angular size of one crystal in phi (and in eta): 360 crystals around the barrel."""
    radiation_length_cm: float = 0.89
    moliere_radius_cm: float = 2.0
    depth_x0: float = 25.8
    """Crystal length (23 cm) in radiation lengths; energy deposited deeper leaks out the back."""
    z_eff: float = 68.3
    """Mass-weighted effective Z of PbWO4, used by the GFlash parametrisation."""
    critical_energy_gev: float = 0.00875
    """Rossi critical energy of PbWO4, 2.66 (X0 Z/A)^1.1 MeV as in GFlash; sets y = E/Ec."""
    crystal_tilt_deg: float = 3.0
    """Crystal axes point 3 deg off the vertex (in eta and phi) to avoid cracks, which shifts the
    shower laterally with depth."""

    # --- magnetic field and tracker material ----------------------------------------------------
    b_field_t: float = 3.8
    ecal_radius_m: float = 1.29
    """Radius of the ECAL barrel front face."""
    tracker_inner_radius_m: float = 0.04
    tracker_outer_radius_m: float = 1.10
    """Tracker material is taken uniform in radius between these two radii."""
    material_x0_central: float = 0.4
    """Tracker material in front of the ECAL at eta = 0, in radiation lengths."""
    material_x0_edge: float = 1.4
    """Tracker material at |eta| = eta_max (the barrel end), in radiation lengths."""
    material_eta_power: float = 1.5
    """x(eta) = central + (edge - central) * (|eta| / eta_max) ** power."""
    n_brem_slabs: int = 8
    """Radial slabs in which brem is sampled; each emits (at most) one collinear photon bundle, so
    this sets how finely the brem photons are spread along the bending trajectory."""
    secondary_conversions: bool = True
    """Let brem photons convert in the tracker material left after their emission (their e+e-
    legs bend apart but do not radiate again). At pT = 50 GeV the electron itself bends by less
    than one crystal, so these soft, strongly bending pairs are a main source of electron phi
    spread; switch off for a brem-only picture."""
    electron_charge: int = 0
    """Charge of the electron gun: -1, +1, or 0 for a random sign per event (default, as the
    public images show brem on both sides)."""

    # --- Grindhammer-Peters longitudinal profile (homogeneous media; Geant4 GFlash tuning) -------
    gp_tmax_offset: float = -0.812
    """<ln T> = ln(ln y + offset), T the depth of the shower maximum in X0."""
    gp_alpha: tuple[float, float, float] = (0.81, 0.458, 2.26)
    """<ln alpha> = ln(a1 + (a2 + a3 / Z) ln y)."""
    gp_sigma_log_tmax: tuple[float, float] = (-1.4, 1.26)
    """sigma(ln T) = 1 / (s1 + s2 ln y): the fluctuation of the shower maximum."""
    gp_sigma_log_alpha: tuple[float, float] = (-0.58, 0.86)
    gp_rho: tuple[float, float] = (0.705, -0.023)
    """Correlation of ln T and ln alpha: rho = r1 + r2 ln y."""
    gp_min_log_y: float = 3.0
    """ln y is clipped from below (E >~ 0.18 GeV) where the fit's sigmas would diverge; soft
    brem photons simply get the shape of a 0.18 GeV shower."""
    photon_conversion_length_x0: float = 9.0 / 7.0
    """Photons start showering after an exponential depth with this mean (in X0)."""

    # --- GFlash lateral profile, radii in Moliere units, tau = t / T ----------------------------
    gflash_core_radius: tuple[float, float, float, float] = (0.0251, 0.00319, 0.1162, -0.000381)
    """R_C = z1 + z2 tau; z1 = c1 + c2 ln E, z2 = c3 + c4 Z."""
    gflash_tail_radius: tuple[float, float, float, float, float, float] = (
        0.659, -0.00309, 0.645, -2.59, 0.3585, 0.0412,
    )
    """R_T = k1 (exp(k3 (tau - k2)) + exp(k4 (tau - k2))); k1 = t1 + t2 Z, k2, k3,
    k4 = t5 + t6 ln E."""
    gflash_core_weight: tuple[float, float, float, float, float, float] = (
        2.632, -0.00094, 0.401, 0.00187, 1.313, -0.0686,
    )
    """p = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3)); p1 = c1 + c2 Z, p2 = c3 + c4 Z,
    p3 = c5 + c6 ln E."""

    # --- spot sampling --------------------------------------------------------------------------
    spot_energy_gev: float = 0.05
    """Energy per spot. GFlash uses ~4 MeV spots at 50 GeV; larger spots are faster and slightly
    exaggerate lateral fluctuations. A single spot in a tail crystal stays below the zero-
    suppression threshold, so isolated tail hits are not artificially created."""
    max_spots_per_shower: int = 4000
    min_shower_energy_gev: float = 0.001
    """Particles below this energy are dropped (their energy counts as lost)."""

    # --- readout ------------------------------------------------------------------------------
    stochastic_term: float = 0.028
    """a in sigma/E = a / sqrt(E/GeV); applied per crystal as a sqrt(E_i) so that the sum over
    crystals has exactly this resolution."""
    constant_term: float = 0.003
    """Per-crystal intercalibration spread (relative)."""
    noise_gev: float = 0.040
    """Gaussian electronic noise per crystal."""
    zero_suppression_sigma: float = 3.0
    """Crystals with measured energy below this many noise sigmas are read out as 0."""
    time_noise_term_ns: float = 35.0
    """sigma_t = N sigma_noise / A (+) C, with A the hit amplitude."""
    time_constant_term_ns: float = 0.07

    # --- bookkeeping ----------------------------------------------------------------------------
    block_size: int = 256
    """Events per independent random stream; fixes determinism under chunking and sharding."""

    def __post_init__(self) -> None:
        positive = (
            "pt_gev", "eta_max", "crystal_size_cm", "crystal_dphi_rad", "radiation_length_cm",
            "moliere_radius_cm", "depth_x0", "z_eff", "critical_energy_gev", "b_field_t",
            "ecal_radius_m", "spot_energy_gev", "noise_gev", "photon_conversion_length_x0",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"CalorimeterConfig.{name} must be a finite number > 0, got {value!r}"
                )
        non_negative = (
            "material_x0_central", "material_x0_edge", "stochastic_term", "constant_term",
            "zero_suppression_sigma", "time_noise_term_ns", "time_constant_term_ns",
            "min_shower_energy_gev", "material_eta_power",
        )
        for name in non_negative:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"CalorimeterConfig.{name} must be a finite number >= 0, got {value!r}"
                )
        for name in ("crop_size", "n_brem_slabs", "max_spots_per_shower", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CalorimeterConfig.{name} must be an integer >= 1, got {value!r}")
        if self.crop_size % 2:
            raise ValueError(f"CalorimeterConfig.crop_size must be even, got {self.crop_size}")
        if not 0.0 < self.tracker_inner_radius_m < self.tracker_outer_radius_m < self.ecal_radius_m:
            raise ValueError(
                "CalorimeterConfig needs 0 < tracker_inner_radius_m < tracker_outer_radius_m < "
                f"ecal_radius_m, got {self.tracker_inner_radius_m}, {self.tracker_outer_radius_m}, "
                f"{self.ecal_radius_m}"
            )
        if self.electron_charge not in (-1, 0, 1):
            raise ValueError(
                "CalorimeterConfig.electron_charge must be -1, 0 or +1, "
                f"got {self.electron_charge!r}"
            )
        if self.eta_max > 1.479:
            raise ValueError(
                f"CalorimeterConfig.eta_max={self.eta_max} is beyond the ECAL barrel edge (1.479)"
            )

    def to_json(self) -> str:
        """JSON of every field, stored in each file so that a data set documents its own recipe."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CalorimeterConfig:
        """Rebuild the config recorded in a file (tuples come back from JSON lists)."""
        raw = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown CalorimeterConfig fields in JSON: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


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
    child = np.random.SeedSequence(
        entropy=root.entropy, spawn_key=(*root.spawn_key, _PDG_ID[particle], int(block))
    )
    return np.random.Generator(np.random.PCG64(child))


def _check_particle(particle: str) -> None:
    if particle not in _PDG_ID:
        raise ValueError(f"particle must be 'electron' or 'photon', got {particle!r}")


# ------------------------------------------------------------------------------------------------
# tracker: bending, bremsstrahlung, conversions (small-angle transverse-plane model)
#
# Each charged track is described by its transverse offset y(r) [m] from the straight line of the
# parent direction, as a function of radius r, and its slope s = dy/dr. In a uniform field
# y'' = -q kappa with kappa = 0.3 B / pT: exact to O(angle^2), which is < 1 % for pT > 5 GeV.


def _material_x0(abs_eta: np.ndarray, cfg: CalorimeterConfig) -> np.ndarray:
    """Total tracker material crossed by a straight track at |eta|, in X0."""
    frac = np.clip(abs_eta / cfg.eta_max, 0.0, 1.0) ** cfg.material_eta_power
    return cfg.material_x0_central + (cfg.material_x0_edge - cfg.material_x0_central) * frac


# A particle that reaches the ECAL: (event, energy GeV, transverse offset y at the ECAL [m],
# incidence slope in phi relative to the radial direction, is it a photon?).
_Component = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _material_between(r_lo: np.ndarray, x_full: np.ndarray, cfg: CalorimeterConfig) -> np.ndarray:
    """Material [X0] from radius r_lo to the tracker's outer radius (uniform in radius)."""
    r_in, r_out = cfg.tracker_inner_radius_m, cfg.tracker_outer_radius_m
    return x_full * np.clip(r_out - np.maximum(r_lo, r_in), 0.0, None) / (r_out - r_in)


def _transport_charged(
    rng: np.random.Generator,
    ev: np.ndarray,
    energy: np.ndarray,
    charge: np.ndarray,
    r0: np.ndarray,
    y0: np.ndarray,
    s0: np.ndarray,
    x_full: np.ndarray,
    cosh_eta: np.ndarray,
    cfg: CalorimeterConfig,
    level: int,
) -> tuple[list[_Component], np.ndarray]:
    """Carry e+/e- from radius r0 to the ECAL, radiating brem (level 0 only) in the tracker.

    The Bethe-Heitler law makes -ln(E_out/E_in) Gamma-distributed with shape x/ln 2 for x X0 of
    material; Gamma shapes add, so sampling it slab by slab gives the right total energy loss while
    placing each slab's photons at a random radius inside it, tangent to the (ever more bent)
    trajectory. Brem photons are then transported (and may convert) by `_transport_photons`.
    Returns the ECAL components and each track's energy when it leaves the tracker.
    """
    n_tracks = energy.shape[0]
    r_in, r_out, r_ecal = cfg.tracker_inner_radius_m, cfg.tracker_outer_radius_m, cfg.ecal_radius_m
    kappa_times_e = _C_GEV_PER_T_M * cfg.b_field_t * cosh_eta  # curvature kappa = this / E [1/m]
    e = energy.astype(np.float64).copy()
    y = y0.astype(np.float64).copy()
    s = s0.astype(np.float64).copy()
    r = r0.astype(np.float64).copy()
    comps: list[_Component] = []
    if level == 0 and n_tracks:
        n_slabs = cfg.n_brem_slabs
        edges = np.linspace(r_in, r_out, n_slabs + 1)
        b_e = np.zeros((n_tracks, n_slabs))
        b_r = np.zeros((n_tracks, n_slabs))
        b_y = np.zeros((n_tracks, n_slabs))
        b_s = np.zeros((n_tracks, n_slabs))
        for j in range(n_slabs):
            lo = np.maximum(edges[j], r0)
            hi = np.maximum(edges[j + 1], r0)
            r_emit = lo + rng.random(n_tracks) * (hi - lo)
            curv = charge * kappa_times_e / e
            dr = r_emit - r
            y = y + s * dr - 0.5 * curv * dr * dr  # y'' = -q kappa (small-angle helix)
            s = s - curv * dr
            r = r_emit
            loss = rng.gamma(x_full * (hi - lo) / (r_out - r_in) / _LN2)  # -ln(E_out/E_in)
            e_after = np.maximum(e * np.exp(-loss), 1e-6)
            b_e[:, j], b_r[:, j], b_y[:, j], b_s[:, j] = e - e_after, r_emit, y, s
            e = e_after
        keep = b_e.ravel() >= cfg.min_shower_energy_gev
        rep = np.repeat(np.arange(n_tracks), n_slabs)[keep]
        comps += _transport_photons(
            rng, ev[rep], b_e.ravel()[keep], b_r.ravel()[keep], b_y.ravel()[keep],
            b_s.ravel()[keep], x_full[rep], cosh_eta[rep], cfg, level=1,
        )[0]
    curv = charge * kappa_times_e / e
    dr = r_ecal - r
    y = y + s * dr - 0.5 * curv * dr * dr
    s = s - curv * dr
    # A track with 2R < r_ecal (pT < 0.3 B r_ecal / 2, ~0.7 GeV) curls up before the ECAL.
    reaches = np.abs(curv) * r_ecal < 2.0
    comps.append((ev, np.where(reaches, e, 0.0), y, s - y / r_ecal, np.zeros(n_tracks, bool)))
    return comps, e


def _transport_photons(
    rng: np.random.Generator,
    ev: np.ndarray,
    energy: np.ndarray,
    r0: np.ndarray,
    y0: np.ndarray,
    s0: np.ndarray,
    x_full: np.ndarray,
    cosh_eta: np.ndarray,
    cfg: CalorimeterConfig,
    level: int,
) -> tuple[list[_Component], np.ndarray, np.ndarray]:
    """Fly photons straight from r0 to the ECAL, converting in the remaining tracker material.

    Conversion probability 1 - exp(-7/9 x); the pair shares the energy per Bethe-Heitler and its
    legs bend apart (opposite charges). Primary photons (level 0) give legs that radiate in turn;
    brem photons (level 1) convert only if ``secondary_conversions`` and their legs do not radiate,
    which ends the cascade. Returns components, the conversion flag and radius [m] (NaN if none).
    """
    n = energy.shape[0]
    r_ecal = cfg.ecal_radius_m
    mu = (7.0 / 9.0) * _material_between(r0, x_full, cfg)
    may_convert = level == 0 or cfg.secondary_conversions
    u_conv = rng.random(n)
    u_where = rng.random(n)
    converted = (u_conv < -np.expm1(-mu)) if may_convert else np.zeros(n, bool)
    r_start = np.maximum(r0, cfg.tracker_inner_radius_m)
    safe_mu = np.where(mu > 0, mu, 1.0)
    frac = np.where(mu > 0, -np.log1p(u_where * np.expm1(-safe_mu)) / safe_mu, 0.0)
    r_conv = np.where(converted, r_start + frac * (cfg.tracker_outer_radius_m - r_start), np.nan)

    keep = ~converted
    y_ecal = y0[keep] + s0[keep] * (r_ecal - r0[keep])
    comps: list[_Component] = [
        (ev[keep], energy[keep], y_ecal, s0[keep] - y_ecal / r_ecal, np.ones(int(keep.sum()), bool))
    ]
    idx = np.flatnonzero(converted)
    if idx.size:
        share = _bethe_heitler_share(rng, idx.size)
        legs = np.concatenate([idx, idx])
        legs_e = np.concatenate([share * energy[idx], (1.0 - share) * energy[idx]])
        legs_q = np.concatenate([np.ones(idx.size), -np.ones(idx.size)])
        rc = r_conv[legs]
        y_c = y0[legs] + s0[legs] * (rc - r0[legs])
        comps += _transport_charged(
            rng, ev[legs], legs_e, legs_q, rc, y_c, s0[legs], x_full[legs], cosh_eta[legs], cfg,
            level=level,
        )[0]
    return comps, converted, r_conv


def _bethe_heitler_share(rng: np.random.Generator, n: int) -> np.ndarray:
    """Fraction of the photon energy taken by one conversion leg, density ~ 1 - 4/3 u (1 - u).

    This is the high-energy, complete-screening Bethe-Heitler sharing: flat-ish with a mild
    preference for asymmetric pairs. Vectorised rejection sampling (acceptance 7/9).
    """
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        u = rng.random(todo.size)
        ok = rng.random(todo.size) < 1.0 - (4.0 / 3.0) * u * (1.0 - u)
        out[todo[ok]] = u[ok]
        todo = todo[~ok]
    return out


# ------------------------------------------------------------------------------------------------
# ECAL showers


def longitudinal_means(
    energy: np.ndarray, cfg: CalorimeterConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _simulate_block(
    rng: np.random.Generator, m: int, particle: Particle, cfg: CalorimeterConfig
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Generate ``m`` events with one random stream (the unit of determinism)."""
    crop = cfg.crop_size
    grid = 2 * crop  # working window around the gun direction; the crop is cut around the seed
    abs_eta = rng.uniform(0.0, cfg.eta_max, m)
    eta = np.where(rng.random(m) < 0.5, -abs_eta, abs_eta)
    cosh_eta = np.cosh(eta)
    energy = cfg.pt_gev * cosh_eta
    x_total = _material_x0(abs_eta, cfg)
    tilt = math.tan(math.radians(cfg.crystal_tilt_deg))

    # Every particle reaching the ECAL becomes a shower "component" (see _Component).
    events = np.arange(m)
    zeros = np.zeros(m)
    converted = np.zeros(m, dtype=bool)
    conv_radius = np.full(m, np.nan)
    brem_fraction = np.zeros(m)
    charge_out = np.zeros(m, dtype=np.int8)
    if particle == "electron":
        if cfg.electron_charge == 0:
            charge = np.where(rng.random(m) < 0.5, -1.0, 1.0)
        else:
            charge = np.full(m, float(cfg.electron_charge))
        comps, e_out = _transport_charged(
            rng, events, energy, charge, zeros, zeros, zeros, x_total, cosh_eta, cfg, level=0
        )
        brem_fraction = 1.0 - e_out / energy
        charge_out = charge.astype(np.int8)
    else:
        comps, converted, r_conv = _transport_photons(
            rng, events, energy, zeros, zeros, zeros, x_total, cosh_eta, cfg, level=0
        )
        conv_radius = 100.0 * r_conv

    to_crystals = 1.0 / (cfg.ecal_radius_m * cfg.crystal_dphi_rad)  # y [m] -> phi [crystals]
    c_ev = np.concatenate([c[0] for c in comps])
    c_e = np.concatenate([c[1] for c in comps])
    c_phi = np.concatenate([c[2] for c in comps]) * to_crystals
    c_slope = np.concatenate([c[3] for c in comps])
    c_photon = np.concatenate([c[4] for c in comps])
    keep = c_e >= cfg.min_shower_energy_gev
    c_ev, c_e, c_phi = c_ev[keep], c_e[keep], c_phi[keep]
    c_slope, c_photon = c_slope[keep], c_photon[keep]

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
    window = np.bincount(flat, weights=spot_e[ok], minlength=m * grid * grid).reshape(m, grid, grid)

    # Crop around the seed crystal, as the public crops are centred on the ECAL seed.
    seed_flat = window.reshape(m, -1).argmax(axis=1)
    half = crop // 2
    seed_eta = np.clip(seed_flat // grid, half, grid - half)
    seed_phi = np.clip(seed_flat % grid, half, grid - half)
    offs = np.arange(-half, half)
    rows = (seed_eta[:, None] + offs)[:, :, None]
    cols = (seed_phi[:, None] + offs)[:, None, :]
    e_true = window[events[:, None, None], rows, cols]

    # Readout: photostatistics (a sqrt(E_i)), intercalibration, noise, zero suppression, timing.
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

    x = np.empty((m, crop, crop, 2), dtype=np.float32)
    x[..., 0] = e_read
    x[..., 1] = t_read
    truth = {
        "energy": energy,
        "eta": eta,
        "converted": converted,
        "conversion_radius_cm": conv_radius,
        "brem_fraction": brem_fraction,
        "charge": charge_out,
        "deposited_energy": e_true.sum(axis=(1, 2)),
        "material_x0": x_total,
    }
    return x, truth


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
    config: CalorimeterConfig = CalorimeterConfig(),
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


# ------------------------------------------------------------------------------------------------
# files


def egamma_file_name(
    particle: Particle,
    n_events: int,
    config: CalorimeterConfig = CalorimeterConfig(),
    shard: int = 0,
    num_shards: int = 1,
) -> str:
    """Public-style name, e.g. ``SinglePhotonPt50_IMGCROPS_n1000_sim.hdf5`` (``_sim``: ours)."""
    _check_particle(particle)
    suffix = f"_shard{shard}of{num_shards}" if num_shards > 1 else ""
    return f"{_FILE_STEM[particle]}Pt{config.pt_gev:g}_IMGCROPS_n{n_events}_sim{suffix}.hdf5"


def _shard_range(n_events: int, block_size: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Block-aligned contiguous share of [0, n_events) for one shard (no block is split)."""
    n_blocks = -(-n_events // block_size)
    b0 = shard * n_blocks // num_shards
    b1 = (shard + 1) * n_blocks // num_shards
    return min(b0 * block_size, n_events), min(b1 * block_size, n_events)


def _write_one(
    path: Path,
    particle: Particle,
    n_class: int,
    start: int,
    stop: int,
    root: np.random.SeedSequence,
    seed: int,
    cfg: CalorimeterConfig,
    chunk: int,
    progress: bool,
    shard: int,
    num_shards: int,
) -> None:
    from tqdm.auto import tqdm

    k = stop - start
    crop = cfg.crop_size
    # Write steps are whole RNG blocks so that no block is generated twice.
    step = max(cfg.block_size, -(-chunk // cfg.block_size) * cfg.block_size)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        opts: dict[str, object] = {}
        if k > 0:
            opts = {"chunks": (min(256, k), crop, crop, 2), "compression": "gzip",
                    "compression_opts": 1, "shuffle": True}
        dx = f.create_dataset("X", shape=(k, crop, crop, 2), dtype=np.float32, **opts)
        f.create_dataset("y", data=np.full(k, _LABEL[particle], dtype=np.float32))
        f.attrs["generator"] = GENERATOR_NAME
        f.attrs["seed"] = int(seed)
        f.attrs["particle"] = particle
        f.attrs["label"] = _LABEL[particle]
        f.attrs["config_json"] = cfg.to_json()
        f.attrs["versions_json"] = json.dumps(package_versions(), sort_keys=True)
        f.attrs["n_events_class"] = int(n_class)
        f.attrs["shard"] = int(shard)
        f.attrs["num_shards"] = int(num_shards)
        f.attrs["event_start"] = int(start)
        f.attrs["event_stop"] = int(stop)
        f.attrs["schema"] = (
            f"X float32 (N,{crop},{crop},2) [ieta, iphi, (energy GeV, time ns)]; y float32 (N,)"
        )
        with tqdm(total=k, desc=path.name, unit="crop", disable=not progress, leave=False) as bar:
            for lo in range(start, stop, step):
                hi = min(lo + step, stop)
                x, _ = _simulate_range(lo, hi, particle, root, cfg)
                dx[lo - start : hi - start] = x
                bar.update(hi - lo)


def write_egamma(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    config: CalorimeterConfig = CalorimeterConfig(),
    progress: bool = True,
    chunk: int = 1000,
    *,
    shard: int = 0,
    num_shards: int = 1,
) -> list[Path]:
    """Write the photon file (``n // 2`` crops, y = 0) and the electron file (the rest, y = 1).

    Same schema as the public ``Single{Photon,Electron}Pt50_IMGCROPS`` files: ``X`` float32
    ``(k, 32, 32, 2)``, ``y`` float32 ``(k,)``. Each file is written atomically, block by block
    (``chunk`` events per step, rounded up to whole RNG blocks, only bounds memory: results do not
    depend on it). With ``num_shards > 1`` this call writes only shard ``shard``'s block-aligned
    part of each class; the shards together hold exactly the events of the unsharded files.
    Returns ``[photon_path, electron_path]``.
    """
    for name, value, low in (("n", n, 2), ("chunk", chunk, 1), ("num_shards", num_shards, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if (
        isinstance(shard, bool)
        or not isinstance(shard, (int, np.integer))
        or not 0 <= shard < num_shards
    ):
        raise ValueError(f"shard must be an integer in [0, num_shards={num_shards}), got {shard!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (it is stored in the files), got {seed!r}")
    if not isinstance(config, CalorimeterConfig):
        raise ValueError(f"config must be a CalorimeterConfig, got {type(config).__name__}")
    root = _root_sequence(int(seed))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for particle, n_class in (("photon", n // 2), ("electron", n - n // 2)):
        start, stop = _shard_range(n_class, config.block_size, int(shard), int(num_shards))
        path = out / egamma_file_name(particle, n_class, config, int(shard), int(num_shards))
        _write_one(path, particle, n_class, start, stop, root, int(seed), config, int(chunk),
                   progress, int(shard), int(num_shards))
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------
# shower shapes and validation plots


def _energy_channel(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"expected images (N, H, W, C) or energies (N, H, W), got shape {x.shape}")
    return np.clip(x.astype(np.float64), 0.0, None)


def shower_widths(X: np.ndarray, *, min_energy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted RMS width in eta (axis 1) and phi (axis 2), in crystals, per image.

    The linear-weighted RMS over the whole crop, so that separated brem clusters and conversion
    legs count fully (they are what distinguishes electrons). Isolated noise hits inflate it too;
    ``min_energy`` [GeV] ignores crystals below that energy, as shower-shape variables in CMS do.
    Accepts ``(N, H, W, C)`` images (channel 0 is energy) or ``(N, H, W)`` energies; empty images
    get width 0.
    """
    if not (math.isfinite(min_energy) and min_energy >= 0):
        raise ValueError(f"min_energy must be a finite number >= 0, got {min_energy!r}")
    e = _energy_channel(X)
    if min_energy > 0:
        e = np.where(e >= min_energy, e, 0.0)
    total = e.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    ieta = np.arange(e.shape[1], dtype=np.float64)
    iphi = np.arange(e.shape[2], dtype=np.float64)
    p_eta = e.sum(axis=2) / safe[:, None]
    p_phi = e.sum(axis=1) / safe[:, None]
    m_eta = p_eta @ ieta
    m_phi = p_phi @ iphi
    v_eta = p_eta @ ieta**2 - m_eta**2
    v_phi = p_phi @ iphi**2 - m_phi**2
    w_eta = np.where(total > 0, np.sqrt(np.clip(v_eta, 0.0, None)), 0.0)
    w_phi = np.where(total > 0, np.sqrt(np.clip(v_phi, 0.0, None)), 0.0)
    return w_eta, w_phi


def egamma_validation_plots(
    X: np.ndarray, y: np.ndarray, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """PNG plots a physicist can check against expectations, one file per quantity.

    Mean energy image per class (log colour), and per-class distributions of total crop energy,
    phi and eta width, and number of hit crystals. Uses matplotlib's Agg canvas directly (no
    pyplot state), so it is safe in headless jobs and threads.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    X = np.asarray(X)
    y = np.asarray(y).reshape(-1)
    if X.ndim != 4 or X.shape[-1] < 1:
        raise ValueError(f"X must have shape (N, H, W, C), got {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y disagree on the number of samples: {X.shape[0]} vs {y.shape[0]}")
    classes = [(0.0, "photon", "tab:blue"), (1.0, "electron", "tab:red")]
    present = [c for c in classes if np.any(y == c[0])]
    if not present:
        raise ValueError("y contains neither photons (0) nor electrons (1)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    energy = _energy_channel(X)
    w_eta, w_phi = shower_widths(energy)
    total = energy.sum(axis=(1, 2))
    n_hits = (energy > 0).sum(axis=(1, 2))
    paths: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        path = out / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        paths.append(path)

    # Fixed margins instead of a layout engine: constrained layout triples the plotting time.
    fig = Figure(figsize=(5.2 * len(present), 4.3))
    fig.subplots_adjust(left=0.08, right=0.95, bottom=0.12, top=0.92, wspace=0.3)
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    means = [energy[y == label].mean(axis=0) for label, _, _ in present]
    positive = np.concatenate([m[m > 0] for m in means]) if means else np.array([])
    vmin = max(float(positive.min()), 1e-4) if positive.size else 1e-4
    vmax = max(float(positive.max()), vmin * 10) if positive.size else 1.0
    for ax, mean, (label, name, _) in zip(axes, means, present):
        im = ax.imshow(np.where(mean > 0, mean, np.nan), origin="lower", norm=LogNorm(vmin, vmax),
                       cmap="viridis", interpolation="nearest")
        ax.set_title(f"{name}: mean energy (N={int(np.sum(y == label))})")
        ax.set_xlabel("iphi (crystal)")
        ax.set_ylabel("ieta (crystal)")
        fig.colorbar(im, ax=ax, label="GeV")
    save(fig, "egamma_mean_energy.png")

    def hist(
        values: np.ndarray, name: str, xlabel: str, bins: Sequence[float] | np.ndarray
    ) -> None:
        fig = Figure(figsize=(5.5, 4.0))
        fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.96)
        ax = fig.subplots()
        for label, cname, colour in present:
            v = values[y == label]
            ax.hist(v, bins=bins, histtype="step", density=True, color=colour, lw=1.5,
                    label=f"{cname} (mean {v.mean():.3f})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.legend()
        save(fig, name)

    def edges(values: np.ndarray, n_bins: int = 60) -> np.ndarray:
        lo, hi = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
        if not hi > lo:
            hi = lo + 1.0
        return np.linspace(lo, hi, n_bins + 1)

    hist(total, "egamma_total_energy.png", "sum of crop energy [GeV]", edges(total))
    width_label = "energy-weighted RMS width in {} [crystals]"
    hist(w_phi, "egamma_phi_width.png", width_label.format("iphi"), edges(w_phi))
    hist(w_eta, "egamma_eta_width.png", width_label.format("ieta"), edges(w_eta))
    top = int(n_hits.max()) if n_hits.size else 1
    hist(n_hits.astype(float), "egamma_n_hits.png", "hit crystals (above zero suppression)",
         np.arange(-0.5, top + 1.5, max(1, (top + 60) // 60)))
    return paths
