"""Tracker in front of the ECAL: bending, bremsstrahlung and photon conversions.

Small-angle transverse-plane model. Each charged track is described by its transverse offset
y(r) [m] from the straight line of the parent direction, as a function of radius r, and its slope
s = dy/dr. In a uniform field y'' = -q kappa with kappa = 0.3 B / pT: exact to O(angle^2), which
is < 1 % for pT > 5 GeV.
"""

from __future__ import annotations

import math

import numpy as np

from e2evision.simulate.calorimeter_config import CalorimeterConfig

_C_GEV_PER_T_M = 0.299792458  # p_T [GeV] = 0.3 * B [T] * R [m]
_LN2 = math.log(2.0)


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
            rng,
            ev[rep],
            b_e.ravel()[keep],
            b_r.ravel()[keep],
            b_y.ravel()[keep],
            b_s.ravel()[keep],
            x_full[rep],
            cosh_eta[rep],
            cfg,
            level=1,
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
            rng,
            ev[legs],
            legs_e,
            legs_q,
            rc,
            y_c,
            s0[legs],
            x_full[legs],
            cosh_eta[legs],
            cfg,
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
