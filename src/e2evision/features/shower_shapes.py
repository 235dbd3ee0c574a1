"""Electron/photon shower-shape variables from ECAL crops, vectorised over a batch.

The variables CMS uses to tell photons from electrons and π⁰s, computed from the crop's energy
channel (channel 0) around the most energetic crystal (the seed), with the time channel for the
energy-weighted hit time:

``e_total``               Σ E over the crop
``e_max``                 seed crystal energy
``r9``                    E(3×3) / E(total)
``e_max_over_e3x3``       E(seed) / E(3×3)
``e3x3_over_e5x5``        E(3×3) / E(5×5)
``phi_strip_fraction``    E(η ±2, φ ±7) / E(5×5): energy spread along φ, where bremsstrahlung
                          and conversion legs bend
``sigma_ieta``, ``sigma_iphi``, ``cov_ieta_iphi``  energy-weighted second moments (in crystals) in
                          the 5×5 window, with the log-energy weights w = max(0, 4.7 + ln(E/E5x5))
``n_hits``                crystals with E > 0
``time_mean``, ``time_rms``  energy-weighted mean and spread of the hit time
"""

from __future__ import annotations

import numpy as np

NAMES = (
    "e_total",
    "e_max",
    "r9",
    "e_max_over_e3x3",
    "e3x3_over_e5x5",
    "phi_strip_fraction",
    "sigma_ieta",
    "sigma_iphi",
    "cov_ieta_iphi",
    "n_hits",
    "time_mean",
    "time_rms",
)


def _window_sum(e: np.ndarray, ci: np.ndarray, cj: np.ndarray, hi: int, hj: int) -> np.ndarray:
    """Σ E in the window [ci−hi, ci+hi] × [cj−hj, cj+hj] of each image (clipped at the borders)."""
    n, h, w = e.shape
    ii = np.arange(h)[None, :, None]
    jj = np.arange(w)[None, None, :]
    mask = (np.abs(ii - ci[:, None, None]) <= hi) & (np.abs(jj - cj[:, None, None]) <= hj)
    return (e * mask).sum(axis=(1, 2))


def shower_shape_features(crops: np.ndarray) -> np.ndarray:
    """The :data:`NAMES` variables of a batch ``(N, 2, H, W)`` (energy, time) → ``(N, 12)`` float64."""
    x = np.asarray(crops, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] < 1:
        raise ValueError(f"crops must be (N, C, H, W) with energy first, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("crops hold NaN or infinite values")
    e = np.clip(x[:, 0], 0.0, None)
    n, h, w = e.shape
    flat = e.reshape(n, -1)
    seed = np.argmax(flat, axis=1)
    ci, cj = seed // w, seed % w
    e_total = flat.sum(axis=1)
    e_max = flat[np.arange(n), seed]
    e3 = _window_sum(e, ci, cj, 1, 1)
    e5 = _window_sum(e, ci, cj, 2, 2)
    strip = _window_sum(e, ci, cj, 2, 7)

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)

    ii = np.arange(h)[None, :, None] - ci[:, None, None]
    jj = np.arange(w)[None, None, :] - cj[:, None, None]
    in5 = (np.abs(ii) <= 2) & (np.abs(jj) <= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        logw = np.where((e > 0) & in5, np.maximum(0.0, 4.7 + np.log(e / np.where(e5 > 0, e5, 1.0)[:, None, None])), 0.0)
    sw = logw.sum(axis=(1, 2))
    safe = np.where(sw > 0, sw, 1.0)
    mi, mj = (logw * ii).sum((1, 2)) / safe, (logw * jj).sum((1, 2)) / safe
    sii = np.sqrt(np.clip((logw * (ii - mi[:, None, None]) ** 2).sum((1, 2)) / safe, 0, None))
    sjj = np.sqrt(np.clip((logw * (jj - mj[:, None, None]) ** 2).sum((1, 2)) / safe, 0, None))
    cij = (logw * (ii - mi[:, None, None]) * (jj - mj[:, None, None])).sum((1, 2)) / safe
    n_hits = (e > 0).sum(axis=(1, 2)).astype(np.float64)
    if x.shape[1] > 1:
        t = x[:, 1]
        tm = ratio((e * t).sum((1, 2)), e_total)
        trms = np.sqrt(np.clip(ratio((e * (t - tm[:, None, None]) ** 2).sum((1, 2)), e_total), 0, None))
    else:
        tm = trms = np.zeros(n)
    return np.stack(
        [
            e_total,
            e_max,
            ratio(e3, e_total),
            ratio(e_max, e3),
            ratio(e3, e5),
            ratio(strip, e5),
            sii,
            sjj,
            cij,
            n_hits,
            tm,
            trms,
        ],
        axis=1,
    )
