"""The images of a block of jets: particles -> channels, with or without the detector response.

Without the response (``config.response is None``) this is the generator-level recipe of
``docs/simulation.md``: one crystal per photon or electron, one HCAL tower per hadron, per-particle
energy smearing, fixed E_T thresholds. With it (:mod:`e2evision.simulate.response`), pile-up is
overlaid first and the calorimeters get lateral shower spread and a per-cell readout instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass
class _Particles:
    """The block's particles (pile-up included) with what every channel reads of them."""

    part: dict[str, np.ndarray]
    jet: np.ndarray
    """Index of the jet (image) each particle belongs to."""
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    cosh: np.ndarray
    normals: np.ndarray
    """One row of standard normals per particle: ECAL, HCAL, d0, dz smearing."""


def _overlay(
    jets: Any, cfg: Any, streams: list[np.random.Generator] | None, pool: PileupPool | None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The jets' particles with pile-up overlaid (with the response): particles, jet index,
    pile-up interactions per jet."""
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
    return p, j, n_pileup


def _kinematics(p: dict[str, np.ndarray], j: np.ndarray, rng: np.random.Generator, smear: bool) -> _Particles:
    """Direction and pT of every particle, and its smearing normals.

    The normals are drawn in particle order: particles are grouped by jet, so jet i's detector
    effects do not depend on how many jets follow it.
    """
    pt = np.hypot(p["px"], p["py"])
    eta = np.arcsinh(p["pz"] / np.where(pt > 0, pt, 1.0))
    phi = np.arctan2(p["py"], p["px"])
    n = p["id"].size
    normals = rng.standard_normal((n, 4)) if smear else np.zeros((n, 4))
    return _Particles(p, j, pt, eta, phi, np.cosh(eta), normals)


def _entry(channel: int, q: _Particles, sel: np.ndarray, eta: np.ndarray, phi: np.ndarray, w: np.ndarray) -> _Entry:
    """Pixel entries of particles ``sel`` landing at (eta, phi) with weights ``w``."""
    return (channel, q.jet[sel], crystal_eta(eta), crystal_phi(phi), w)


def _track_indices(q: _Particles, cfg: Any) -> np.ndarray:
    """Charged particles that leave a track (pT cut, produced inside the tracker)."""
    v_r = np.hypot(q.part["vx"], q.part["vy"])
    return np.flatnonzero(
        (q.part["charge"] != 0) & (q.pt >= cfg.track_pt_min_gev) & (v_r < cfg.track_max_vertex_radius_mm)
    )


def _em_mask(q: _Particles) -> np.ndarray:
    aid = np.abs(q.part["id"])
    return (aid == 11) | (aid == 22)


def _ecal_entry(q: _Particles, cfg: Any, jet_phi: np.ndarray, channel: int) -> _Entry:
    """ECAL: photons and electrons, electrons bent before the calorimeter face; one crystal
    each at generator level, spread laterally with the response."""
    resp, charge, e = cfg.response, q.part["charge"], q.part["e"]
    em = np.flatnonzero(_em_mask(q))
    smear = cfg.smear and resp is None  # the response smears per cell instead
    em_e = _smear_energy(e[em], cfg.ecal_resolution, q.normals[em, 0]) if smear else e[em]
    r_ecal = calorimeter_radius_mm(q.eta[em], cfg.ecal_radius_mm, cfg.ecal_endcap_z_mm)
    em_phi, em_reach = bend_phi(q.phi[em], charge[em], q.pt[em], r_ecal, cfg.b_field_t)
    if resp is None:
        return _entry(channel, q, em[em_reach], q.eta[em][em_reach], em_phi[em_reach], (em_e / q.cosh[em])[em_reach])
    jj = q.jet[em]
    half_width = (cfg.image_size // 2 + 5) * CRYSTAL_DPHI
    near = em_reach & (np.abs(_wrap(em_phi - jet_phi[jj])) < half_width)
    sj, se, sp, sw = spread_ecal(
        jj[near], q.eta[em][near], em_phi[near], em_e[near], (em_e / q.cosh[em])[near], ecal_lateral_table(resp)
    )
    return (channel, sj, se, sp, sw)


def _hcal_hits(q: _Particles, cfg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hadrons reaching the HCAL face: (particle index, bent phi, E_T)."""
    had = np.flatnonzero(~_em_mask(q) & (np.abs(q.part["id"]) != 13))
    e = q.part["e"]
    smear = cfg.smear and cfg.response is None  # the response smears per cell instead
    had_e = _smear_energy(e[had], cfg.hcal_resolution, q.normals[had, 1]) if smear else e[had]
    r_hcal = calorimeter_radius_mm(q.eta[had], cfg.hcal_radius_mm, cfg.hcal_endcap_z_mm)
    had_phi, had_reach = bend_phi(q.phi[had], q.part["charge"][had], q.pt[had], r_hcal, cfg.b_field_t)
    return had[had_reach], had_phi[had_reach], (had_e / q.cosh[had])[had_reach]


def _tracker_entries(q: _Particles, cfg: Any, trk: np.ndarray) -> list[_Entry]:
    """The 8-channel data sets' extra channels: track d0 and dz (1, 2), pixel layers (5-7)."""
    p = q.part
    px, py, pz = p["px"], p["py"], p["pz"]
    d0, dz = impact_parameters(p["vx"][trk], p["vy"][trk], p["vz"][trk], px[trk], py[trk], pz[trk])
    if cfg.smear:
        inv_pt = 1.0 / np.maximum(q.pt[trk], 1e-3)
        a, b = cfg.d0_resolution_mm
        d0 = d0 + np.hypot(a, b * inv_pt) * q.normals[trk, 2]
        a, b = cfg.dz_resolution_mm
        dz = dz + np.hypot(a, b * inv_pt) * q.normals[trk, 3]
    entries = [_entry(1, q, trk, q.eta[trk], q.phi[trk], d0), _entry(2, q, trk, q.eta[trk], q.phi[trk], dz)]
    for layer, radius in enumerate(cfg.pixel_layer_radii_mm):
        hit, h_eta, h_phi = layer_crossings(
            p["vx"], p["vy"], p["vz"], px, py, pz, p["charge"], radius, cfg.pixel_half_length_mm, cfg.b_field_t
        )
        idx = np.flatnonzero(hit)
        entries.append(_entry(5 + layer, q, idx, h_eta[idx], h_phi[idx], np.ones(idx.size)))
    return entries


def _pixelate_entries(
    entries: list[_Entry], c_eta: np.ndarray, c_phi: np.ndarray, size: int, n_channels: int
) -> np.ndarray:
    """Sum every channel's entries into ``(m, C, S, S)`` images with one bincount."""
    return pixelate(
        np.concatenate([en[1] for en in entries]),
        np.concatenate([en[2] for en in entries]),
        np.concatenate([en[3] for en in entries]),
        np.concatenate([en[4] for en in entries]),
        c_eta,
        c_phi,
        size,
        channel=np.concatenate([np.full(en[1].size, en[0]) for en in entries]),
        n_channels=n_channels,
    )


def _cell_response(
    images: np.ndarray,
    q: _Particles,
    hcal: tuple[np.ndarray, np.ndarray, np.ndarray],
    c_eta: np.ndarray,
    c_phi: np.ndarray,
    cfg: Any,
    streams: list[np.random.Generator],
    channels: tuple[int, int],
) -> None:
    """Read the ECAL crystals out and fill the HCAL towers (laterally spread) in place."""
    resp, (ch_ecal, ch_hcal) = cfg.response, channels
    half = cfg.image_size // 2
    row_eta = (c_eta[:, None] - half + np.arange(cfg.image_size)[None, :] + 0.5) * CRYSTAL_DETA
    images[:, ch_ecal] = cell_readout(
        images[:, ch_ecal],
        np.cosh(row_eta)[:, :, None],
        streams,
        resp.ecal_stochastic,
        resp.ecal_constant,
        resp.ecal_noise_gev,
        resp.ecal_zs_sigma,
    )
    reach, had_phi, had_et = hcal
    table = hcal_lateral_table(resp, cfg.hcal_tower, cfg.hcal_radius_mm)
    deposits = spread_hcal(q.jet[reach], q.eta[reach], had_phi, had_et, table, cfg.hcal_tower)
    images[:, ch_hcal] = _hcal_towers(deposits, c_eta, c_phi, cfg, streams)


def block_images(
    jets: Any,
    cfg: Any,
    rng: np.random.Generator,
    n_channels: int,
    streams: list[np.random.Generator] | None = None,
    pool: PileupPool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixelate all jets of a block at once: ``(m, C, S, S)`` float64 and pile-up counts ``(m,)``.

    ``jets`` has ``eta``, ``phi`` (axes), ``part`` (particle columns) and ``part_jet``; ``cfg``
    is a ``JetSimConfig``. Every channel's entries (jet, channel, crystal, weight) are summed by
    one bincount. ``streams`` (one per jet) and ``pool`` are needed when ``cfg.response`` is set.
    """
    p, j, n_pileup = _overlay(jets, cfg, streams, pool)
    q = _kinematics(p, j, rng, cfg.smear)
    qg = cfg.dataset == "quark-gluon"
    ch_track, ch_ecal, ch_hcal = (0, 1, 2) if qg else (0, 3, 4)
    trk = _track_indices(q, cfg)
    entries = [_entry(ch_track, q, trk, q.eta[trk], q.phi[trk], q.pt[trk]), _ecal_entry(q, cfg, jets.phi, ch_ecal)]
    hcal = _hcal_hits(q, cfg)
    if cfg.response is None:  # towers spread evenly over their crystals
        reach, had_phi, had_et = hcal
        entries.append(
            (
                ch_hcal,
                *spread_towers(q.jet[reach], crystal_eta(q.eta[reach]), crystal_phi(had_phi), had_et, cfg.hcal_tower),
            )
        )
    if not qg:
        entries += _tracker_entries(q, cfg, trk)
    c_eta, c_phi = crystal_eta(jets.eta), crystal_phi(jets.phi)
    images = _pixelate_entries(entries, c_eta, c_phi, cfg.image_size, n_channels)
    if cfg.response is None:  # zero suppression at fixed E_T thresholds
        ecal = images[:, ch_ecal]
        ecal[ecal < cfg.ecal_threshold_gev] = 0.0
        hcal_img = images[:, ch_hcal]
        hcal_img[hcal_img < cfg.hcal_threshold_gev / cfg.hcal_tower**2] = 0.0
        return images, n_pileup
    assert streams is not None  # checked by _overlay
    _cell_response(images, q, hcal, c_eta, c_phi, cfg, streams, (ch_ecal, ch_hcal))
    return images, n_pileup


def _wrap(dphi: np.ndarray) -> np.ndarray:
    """Azimuthal differences wrapped into [-pi, pi)."""
    return np.mod(dphi + math.pi, 2.0 * math.pi) - math.pi


def _hcal_towers(
    deposits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    c_eta: np.ndarray,
    c_phi: np.ndarray,
    cfg: Any,
    streams: list[np.random.Generator],
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
    towers = cell_readout(
        towers,
        np.cosh(centre)[:, :, None],
        streams,
        resp.hcal_stochastic,
        resp.hcal_constant,
        resp.hcal_noise_gev,
        resp.hcal_zs_sigma,
    )
    offs = np.arange(size)[None, :] - half
    row = np.floor_divide(c_eta[:, None] + offs, t) - base_eta[:, None]
    col = np.mod(np.floor_divide(np.mod(c_phi[:, None] + offs, N_IPHI), t) - base_phi[:, None], n_phi_towers)
    return towers[np.arange(m)[:, None, None], row[:, :, None], col[:, None, :]] / (t * t)
