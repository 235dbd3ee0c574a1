"""Validation plots of the jet simulators, for a physicist to compare with expectations.

Per class: jet mass and constituent multiplicity distributions, and the mean image of every
channel on a log colour scale; for top-mass, the regression target against the jet mass. Drawn
with matplotlib's Agg canvas directly (no pyplot state), so safe in batch jobs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from e2evision.utils.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["jet_validation_plots"]

_COLOURS = ("tab:blue", "tab:red", "tab:green")


def _save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a PNG)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _checked_truth(truth: Mapping[str, np.ndarray], names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``m0``, ``n_const`` and ``class_index`` of ``truth``, or a clear error if they disagree."""
    for key in ("m0", "n_const", "class_index"):
        if key not in truth:
            raise ValueError(f"truth lacks {key!r}; got {sorted(truth)}")
    m0 = np.asarray(truth["m0"], dtype=np.float64)
    n_const = np.asarray(truth["n_const"], dtype=np.float64)
    cls = np.asarray(truth["class_index"], dtype=np.int64)
    if not (m0.shape == n_const.shape == cls.shape):
        raise ValueError(
            f"truth arrays disagree in length: m0 {m0.shape}, n_const {n_const.shape}, class_index {cls.shape}"
        )
    if cls.size and (cls.min() < 0 or cls.max() >= len(names)):
        raise ValueError(f"class_index outside [0, {len(names)}) for class names {names}")
    return m0, n_const, cls


def _class_histogram(
    values: np.ndarray,
    cls: np.ndarray,
    present: list[tuple[int, str]],
    xlabel: str,
    bins: np.ndarray,
) -> Figure:
    """Normalised per-class distributions of one per-jet quantity, with N and the mean."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.95)
    ax = fig.subplots()
    for (i, cname), colour in zip(present, _COLOURS):
        v = values[cls == i]
        ax.hist(
            v,
            bins=bins,
            histtype="step",
            density=True,
            color=colour,
            lw=1.5,
            label=f"{cname} (N={v.size}, mean {v.mean():.3g})",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


def _mean_images_figure(
    dataset: str,
    mean_images: Mapping[str, np.ndarray],
    channels: Sequence[str],
    present: list[tuple[int, str]],
) -> Figure:
    """Mean images: one row per class, one column per channel, log colour per channel."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    n_cls = max(1, len(present))
    n_ch = len(channels)
    fig = Figure(figsize=(2.6 * n_ch, 2.5 * n_cls + 0.4))
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.04, top=0.9, wspace=0.35, hspace=0.35)
    axes = fig.subplots(n_cls, n_ch, squeeze=False)
    for c in range(n_ch):
        planes = [np.abs(np.asarray(mean_images[name])[c]) for _, name in present]
        positive = np.concatenate([p[p > 0] for p in planes]) if planes else np.array([])
        vmax = float(positive.max()) if positive.size else 1.0
        vmin = max(float(np.percentile(positive, 5)) if positive.size else 1e-6, vmax * 1e-6)
        for r, ((_, name), plane) in enumerate(zip(present, planes)):
            ax = axes[r, c]
            ax.imshow(
                np.where(plane > 0, plane, np.nan),
                origin="lower",
                cmap="viridis",
                norm=LogNorm(vmin, max(vmax, vmin * 10)),
                interpolation="nearest",
            )
            ax.set_title(f"{name}: {channels[c]}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{dataset}: mean images (|value|, log colour; rows eta, columns phi)", fontsize=10)
    return fig


def _target_figure(truth: Mapping[str, np.ndarray], m0: np.ndarray) -> Figure:
    """top-mass: the regression target (generated top mass) against the jet mass."""
    from matplotlib.figure import Figure

    if "top_mass" not in truth:
        raise ValueError("top-mass plots need truth['top_mass'] (the regression target)")
    target = np.asarray(truth["top_mass"], dtype=np.float64)
    fig = Figure(figsize=(5.0, 4.5))
    fig.subplots_adjust(left=0.14, right=0.96, bottom=0.12, top=0.92)
    ax = fig.subplots()
    ax.scatter(target, m0, s=4, alpha=0.5)
    good = np.isfinite(target) & np.isfinite(m0)
    r = float(np.corrcoef(target[good], m0[good])[0, 1]) if good.sum() > 2 else math.nan
    lo, hi = float(np.nanmin(target)), float(np.nanmax(target))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="m0 = m")
    ax.set_xlabel("target m: generated top mass [GeV]")
    ax.set_ylabel("jet mass m0 [GeV]")
    ax.set_title(f"Pearson r = {r:.3f} (N = {good.sum()})")
    ax.legend(fontsize=8)
    return fig


def jet_validation_plots(
    dataset: str,
    truth: Mapping[str, np.ndarray],
    mean_images: Mapping[str, np.ndarray],
    channels: Sequence[str],
    out_dir: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
) -> list[Path]:
    """Write the PNGs for one simulated dataset into ``out_dir``; returns their paths.

    ``truth`` holds per-row arrays ``m0`` (jet mass), ``n_const`` and ``class_index`` (and, for
    top-mass, ``top_mass``: the target); ``mean_images`` maps class name -> (C, H, W) mean image;
    ``class_names[i]`` names class index i (default: the keys of ``mean_images`` in order).
    """
    names = list(class_names) if class_names is not None else list(mean_images)
    m0, n_const, cls = _checked_truth(truth, names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = dataset.replace("-", "_")
    present = [(i, name) for i, name in enumerate(names) if np.any(cls == i)]
    top = float(np.percentile(m0, 99.5)) if m0.size else 1.0
    nmax = int(n_const.max()) if n_const.size else 1
    step = max(1, (nmax + 50) // 50)
    figures = [
        (
            "jet_mass",
            lambda: _class_histogram(m0, cls, present, "jet mass m0 [GeV]", np.linspace(0.0, max(top * 1.05, 1.0), 51)),
        ),
        (
            "constituents",
            lambda: _class_histogram(
                n_const, cls, present, "constituents of the leading jet", np.arange(-0.5, nmax + step + 0.5, step)
            ),
        ),
        ("mean_images", lambda: _mean_images_figure(dataset, mean_images, channels, present)),
    ]
    if dataset == "top-mass":
        figures.append(("target_vs_jet_mass", lambda: _target_figure(truth, m0)))
    return [_save_png(draw(), out / f"{prefix}_{name}.png") for name, draw in figures]
