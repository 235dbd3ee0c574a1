"""The images of a block of jets: particles -> channels, with or without the detector response.

Without the response (``config.response is None``) this is the generator-level recipe of
``docs/simulation.md``: one crystal per photon or electron, one HCAL tower per hadron, per-particle
energy smearing, fixed E_T thresholds. With it (:mod:`e2evision.simulate.response`), pile-up is
overlaid first and the calorimeters get lateral shower spread and a per-cell readout instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from e2evision.simulate.pixelate import (
    CRYSTAL_DETA,
    CRYSTAL_DPHI,
    N_IPHI,
    bend_phi,
    calorimeter_radius_mm,
    crystal_eta,
    crystal_phi,
    impact_parameters,
    layer_crossings,
    pixelate,
    spread_towers,
)
from e2evision.simulate.response import (
    PileupPool,
    cell_readout,
    ecal_lateral_table,
    hcal_lateral_table,
    overlay_pileup,
    spread_ecal,
    spread_hcal,
)

__all__ = ["block_images"]

_Entry = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _smear_energy(e: np.ndarray, resolution: tuple[float, float], normal: np.ndarray) -> np.ndarray:
    """E (1 + sigma/E * z) clipped at 0, with sigma/E = a / sqrt(E) (+) c."""
    a, c = resolution
    sigma = np.sqrt(a * a / np.maximum(e, 1e-9) + c * c)
    return np.clip(e * (1.0 + sigma * normal), 0.0, None)


def block_images(
    jets: Any, cfg: Any, rng: np.random.Generator, n_channels: int,
    streams: list[np.random.Generator] | None = None, pool: PileupPool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixelate all jets of a block at once: ``(m, C, S, S)`` float64 and pile-up counts ``(m,)``.

    ``jets`` has ``eta``, ``phi`` (axes), ``part`` (particle columns) and ``part_jet``; ``cfg``
    is a ``JetSimConfig``. Every channel's entries (jet, channel, crystal, weight) are summed by
    one bincount. ``streams`` (one per jet) and ``pool`` are needed when ``cfg.response`` is set.
    """
    resp = cfg.response
    m = len(jets.eta)
    p, j = jets.part, jets.part_jet
    n_pileup = np.zeros(m, dtype=np.int64)
    if resp is not None:
        if streams is None or len(streams) != m:
            raise ValueError("the detector response needs one random stream per jet")
        if resp.pileup_mean > 0:
            if pool is None:
                raise ValueError("pile-up needs a minimum-bias pool")
            window = (cfg.image_size // 2 + 8) * CRYSTAL_DETA
            p, j, n_pileup = overlay_pileup(p, j, jets.eta, pool, streams, resp, window)
    pid, charge = p["id"], p["charge"]
    px, py, pz, e = p["px"], p["py"], p["pz"], p["e"]
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.where(pt > 0, pt, 1.0))
    phi = np.arctan2(py, px)
    cosh = np.cosh(eta)
    aid = np.abs(pid)
    is_em = (aid == 11) | (aid == 22)
    is_had = ~is_em & (aid != 13)
    charged = charge != 0
    v_r = np.hypot(p["vx"], p["vy"])
    # One row of normals per particle (ECAL, HCAL, d0, dz), drawn in particle order: particles
    # are grouped by jet, so jet i's detector effects do not depend on how many jets follow it.
    normals = rng.standard_normal((pid.size, 4)) if cfg.smear else np.zeros((pid.size, 4))
    calo_smear = cfg.smear and resp is None  # the response smears per cell instead
    qg = cfg.dataset == "quark-gluon"
    ch_track, ch_ecal, ch_hcal = (0, 1, 2) if qg else (0, 3, 4)
    entries: list[_Entry] = []

    def add(
        channel: int, sel: np.ndarray, eta_: np.ndarray, phi_: np.ndarray, w: np.ndarray
    ) -> None:
        entries.append((channel, j[sel], crystal_eta(eta_), crystal_phi(phi_), w))

    # Tracks: charged particles at their direction at production.
    trk = np.flatnonzero(charged & (pt >= cfg.track_pt_min_gev)
                         & (v_r < cfg.track_max_vertex_radius_mm))
    add(ch_track, trk, eta[trk], phi[trk], pt[trk])

    # ECAL: photons and electrons; electrons bend before the calorimeter face.
    em = np.flatnonzero(is_em)
    em_e = _smear_energy(e[em], cfg.ecal_resolution, normals[em, 0]) if calo_smear else e[em]
    r_ecal = calorimeter_radius_mm(eta[em], cfg.ecal_radius_mm, cfg.ecal_endcap_z_mm)
    em_phi, em_reach = bend_phi(phi[em], charge[em], pt[em], r_ecal, cfg.b_field_t)
    if resp is None:
        add(ch_ecal, em[em_reach], eta[em][em_reach], em_phi[em_reach], (em_e / cosh[em])[em_reach])
    else:
        jj = j[em]
        half_width = (cfg.image_size // 2 + 5) * CRYSTAL_DPHI
        near = em_reach & (np.abs(_wrap(em_phi - jets.phi[jj])) < half_width)
        sj, se, sp, sw = spread_ecal(jj[near], eta[em][near], em_phi[near], em_e[near],
                                     (em_e / cosh[em])[near], ecal_lateral_table(resp))
        entries.append((ch_ecal, sj, se, sp, sw))

    # HCAL: hadrons, bent to the HCAL face, summed in towers spread over their crystals.
    had = np.flatnonzero(is_had)
    had_e = _smear_energy(e[had], cfg.hcal_resolution, normals[had, 1]) if calo_smear else e[had]
    r_hcal = calorimeter_radius_mm(eta[had], cfg.hcal_radius_mm, cfg.hcal_endcap_z_mm)
    had_phi, had_reach = bend_phi(phi[had], charge[had], pt[had], r_hcal, cfg.b_field_t)
    reach = had[had_reach]
    had_et = (had_e / cosh[had])[had_reach]
    if resp is None:
        tj, te, tp, tw = spread_towers(j[reach], crystal_eta(eta[reach]),
                                       crystal_phi(had_phi[had_reach]), had_et, cfg.hcal_tower)
        entries.append((ch_hcal, tj, te, tp, tw))

    if not qg:
        d0, dz = impact_parameters(p["vx"][trk], p["vy"][trk], p["vz"][trk], px[trk], py[trk],
                                   pz[trk])
        if cfg.smear:
            inv_pt = 1.0 / np.maximum(pt[trk], 1e-3)
            a, b = cfg.d0_resolution_mm
            d0 = d0 + np.hypot(a, b * inv_pt) * normals[trk, 2]
            a, b = cfg.dz_resolution_mm
            dz = dz + np.hypot(a, b * inv_pt) * normals[trk, 3]
        add(1, trk, eta[trk], phi[trk], d0)
        add(2, trk, eta[trk], phi[trk], dz)
        for layer, radius in enumerate(cfg.pixel_layer_radii_mm):
            hit, h_eta, h_phi = layer_crossings(p["vx"], p["vy"], p["vz"], px, py, pz, charge,
                                                radius, cfg.pixel_half_length_mm, cfg.b_field_t)
            idx = np.flatnonzero(hit)
            add(5 + layer, idx, h_eta[idx], h_phi[idx], np.ones(idx.size))

    c_eta, c_phi = crystal_eta(jets.eta), crystal_phi(jets.phi)
    images = pixelate(
        np.concatenate([en[1] for en in entries]),
        np.concatenate([en[2] for en in entries]),
        np.concatenate([en[3] for en in entries]),
        np.concatenate([en[4] for en in entries]),
        c_eta, c_phi, cfg.image_size,
        channel=np.concatenate([np.full(en[1].size, en[0]) for en in entries]),
        n_channels=n_channels,
    )
    if resp is None:
        ecal = images[:, ch_ecal]
        ecal[ecal < cfg.ecal_threshold_gev] = 0.0
        hcal = images[:, ch_hcal]
        hcal[hcal < cfg.hcal_threshold_gev / cfg.hcal_tower**2] = 0.0
        return images, n_pileup

    half = cfg.image_size // 2
    row_eta = (c_eta[:, None] - half + np.arange(cfg.image_size)[None, :] + 0.5) * CRYSTAL_DETA
    images[:, ch_ecal] = cell_readout(images[:, ch_ecal], np.cosh(row_eta)[:, :, None], streams,
                                      resp.ecal_stochastic, resp.ecal_constant,
                                      resp.ecal_noise_gev, resp.ecal_zs_sigma)
    table = hcal_lateral_table(resp, cfg.hcal_tower, cfg.hcal_radius_mm)
    deposits = spread_hcal(j[reach], eta[reach], had_phi[had_reach], had_et, table, cfg.hcal_tower)
    images[:, ch_hcal] = _hcal_towers(deposits, c_eta, c_phi, cfg, streams)
    return images, n_pileup


def _wrap(dphi: np.ndarray) -> np.ndarray:
    return np.mod(dphi + math.pi, 2.0 * math.pi) - math.pi


def _hcal_towers(
    deposits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], c_eta: np.ndarray,
    c_phi: np.ndarray, cfg: Any, streams: list[np.random.Generator],
) -> np.ndarray:
    """Sum deposits per tower around each image, read the towers out, spread them over pixels.

    Towers sit on the absolute grid (tower ``floor(ieta / T)``); a tower's measured E_T is split
    evenly over its T x T crystals, as without the response. Returns ``(m, S, S)``.
    """
    resp, t, size = cfg.response, cfg.hcal_tower, cfg.image_size
    m, half = c_eta.size, size // 2
    n_phi_towers = N_IPHI // t
    n_t = size // t + 2  # towers per side covering the image whatever its alignment
    base_eta = np.floor_divide(c_eta - half, t)
    base_phi = np.floor_divide(np.mod(c_phi - half, N_IPHI), t)
    jet, t_eta, t_phi, w = deposits
    k_eta = t_eta - base_eta[jet]
    k_phi = np.mod(t_phi - base_phi[jet], n_phi_towers)
    ok = (k_eta >= 0) & (k_eta < n_t) & (k_phi < n_t)
    flat = (jet[ok] * n_t + k_eta[ok]) * n_t + k_phi[ok]
    towers = np.bincount(flat, weights=w[ok], minlength=m * n_t * n_t).astype(np.float64)
    towers = towers.reshape(m, n_t, n_t)
    centre = (base_eta[:, None] + np.arange(n_t)[None, :] + 0.5) * (t * CRYSTAL_DETA)
    towers = cell_readout(towers, np.cosh(centre)[:, :, None], streams, resp.hcal_stochastic,
                          resp.hcal_constant, resp.hcal_noise_gev, resp.hcal_zs_sigma)
    offs = np.arange(size)[None, :] - half
    row = np.floor_divide(c_eta[:, None] + offs, t) - base_eta[:, None]
    col = np.mod(np.floor_divide(np.mod(c_phi[:, None] + offs, N_IPHI), t) - base_phi[:, None],
                 n_phi_towers)
    return towers[np.arange(m)[:, None, None], row[:, :, None], col[:, None, :]] / (t * t)
