"""Shower shapes and validation plots of the e/gamma crops."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from e2evision.utils.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["egamma_validation_plots", "shower_widths"]


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


# (label, name, colour) of each class, photon = 0 and electron = 1 as in the public files
_CLASSES = ((0.0, "photon", "tab:blue"), (1.0, "electron", "tab:red"))
_Class = tuple[float, str, str]


def _save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a PNG)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _check_images(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[_Class]]:
    """``X`` (N, H, W, C), ``y`` (N,) and the classes present in ``y``, or a clear error."""
    X = np.asarray(X)
    y = np.asarray(y).reshape(-1)
    if X.ndim != 4 or X.shape[-1] < 1:
        raise ValueError(f"X must have shape (N, H, W, C), got {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y disagree on the number of samples: {X.shape[0]} vs {y.shape[0]}")
    present = [c for c in _CLASSES if np.any(y == c[0])]
    if not present:
        raise ValueError("y contains neither photons (0) nor electrons (1)")
    return X, y, present


def _mean_energy_figure(energy: np.ndarray, y: np.ndarray, present: list[_Class]) -> Figure:
    """Mean energy image per class on one shared log colour scale."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    # Fixed margins instead of a layout engine: constrained layout triples the plotting time.
    fig = Figure(figsize=(5.2 * len(present), 4.3))
    fig.subplots_adjust(left=0.08, right=0.95, bottom=0.12, top=0.92, wspace=0.3)
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    means = [energy[y == label].mean(axis=0) for label, _, _ in present]
    positive = np.concatenate([m[m > 0] for m in means]) if means else np.array([])
    vmin = max(float(positive.min()), 1e-4) if positive.size else 1e-4
    vmax = max(float(positive.max()), vmin * 10) if positive.size else 1.0
    for ax, mean, (label, name, _) in zip(axes, means, present):
        im = ax.imshow(
            np.where(mean > 0, mean, np.nan),
            origin="lower",
            norm=LogNorm(vmin, vmax),
            cmap="viridis",
            interpolation="nearest",
        )
        ax.set_title(f"{name}: mean energy (N={int(np.sum(y == label))})")
        ax.set_xlabel("iphi (crystal)")
        ax.set_ylabel("ieta (crystal)")
        fig.colorbar(im, ax=ax, label="GeV")
    return fig


def _class_histogram(
    values: np.ndarray,
    y: np.ndarray,
    present: list[_Class],
    xlabel: str,
    bins: Sequence[float] | np.ndarray,
) -> Figure:
    """Normalised per-class distributions of one per-crop quantity, with the class means."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.96)
    ax = fig.subplots()
    for label, cname, colour in present:
        v = values[y == label]
        ax.hist(
            v, bins=bins, histtype="step", density=True, color=colour, lw=1.5, label=f"{cname} (mean {v.mean():.3f})"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    return fig


def _edges(values: np.ndarray, n_bins: int = 60) -> np.ndarray:
    """Bin edges over the central 99 % of ``values`` (outliers would squash the histogram)."""
    lo, hi = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
    if not hi > lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, n_bins + 1)


def egamma_validation_plots(X: np.ndarray, y: np.ndarray, out_dir: str | os.PathLike[str]) -> list[Path]:
    """PNG plots a physicist can check against expectations, one file per quantity.

    Mean energy image per class (log colour), and per-class distributions of total crop energy,
    phi and eta width, and number of hit crystals. Uses matplotlib's Agg canvas directly (no
    pyplot state), so it is safe in headless jobs and threads.
    """
    X, y, present = _check_images(X, y)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    energy = _energy_channel(X)
    w_eta, w_phi = shower_widths(energy)
    total = energy.sum(axis=(1, 2))
    n_hits = (energy > 0).sum(axis=(1, 2))
    paths = [_save_png(_mean_energy_figure(energy, y, present), out / "egamma_mean_energy.png")]
    width_label = "energy-weighted RMS width in {} [crystals]"
    top = int(n_hits.max()) if n_hits.size else 1
    histograms = [
        ("egamma_total_energy.png", total, "sum of crop energy [GeV]", _edges(total)),
        ("egamma_phi_width.png", w_phi, width_label.format("iphi"), _edges(w_phi)),
        ("egamma_eta_width.png", w_eta, width_label.format("ieta"), _edges(w_eta)),
        (
            "egamma_n_hits.png",
            n_hits.astype(float),
            "hit crystals (above zero suppression)",
            np.arange(-0.5, top + 1.5, max(1, (top + 60) // 60)),
        ),
    ]
    for name, values, xlabel, bins in histograms:
        paths.append(_save_png(_class_histogram(values, y, present, xlabel, bins), out / name))
    return paths
