"""Reading a simulated lensing data set back, and its validation plots."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from e2evision.simulate.lensing_config import (
    CLASSES,
    DEFAULT_LENSING_CONFIG,
    LABELS,
    LensingConfig,
)
from e2evision.simulate.lensing_render import LensSample, einstein_radius_arcsec, simulate_lens
from e2evision.utils.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["lensing_validation_plots", "load_lensing_images"]


def load_lensing_images(
    data_dir: str | os.PathLike[str],
    *,
    max_per_class: int | None = None,
    allow_pickle: bool = False,
) -> dict[str, np.ndarray]:
    """Images per class from a directory this module wrote, as (k, H, W) float64 arrays.

    For plots and quick checks, not training (use the dataset readers). Object-array axion files
    are unpickled only with ``allow_pickle=True``; without it they raise ``ValueError``.
    """
    root = Path(data_dir)
    out: dict[str, np.ndarray] = {}
    for c in CLASSES:
        files = sorted((root / c).glob("*.npy"))[:max_per_class]
        images = []
        for f in files:
            arr = np.load(f, allow_pickle=allow_pickle)
            if arr.dtype == object:
                arr = np.asarray(arr[0], dtype=np.float64)
            images.append(arr.reshape(arr.shape[-2:]))
        if images:
            out[c] = np.stack(images)
    if not out:
        raise FileNotFoundError(f"no lensing .npy files under {root}/{{{','.join(CLASSES)}}}")
    return out


def _radial_profile(image: np.ndarray, pixel: float, bin_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthal mean of ``image`` about the image centre, in bins of ``bin_width`` arcsec."""
    n = image.shape[-1]
    c = (np.arange(n) - (n - 1) / 2) * pixel
    r = np.hypot(c[None, :], c[:, None])
    idx = (r / bin_width).astype(np.int64).ravel()
    sums = np.bincount(idx, weights=image.ravel())
    cnt = np.bincount(idx)
    centres = (np.arange(len(sums)) + 0.5) * bin_width
    keep = (cnt > 0) & (centres <= c[-1])
    return centres[keep], sums[keep] / cnt[keep]


def _save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a PNG)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _examples_figure(
    images: Mapping[str, np.ndarray],
    present: list[str],
    n_examples: int,
    extent: tuple[float, float, float, float],
) -> Figure:
    """Up to ``n_examples`` stored images per class, one row per class."""
    from matplotlib.figure import Figure

    k = max(1, min(n_examples, max(len(images[c]) for c in present)))
    fig = Figure(figsize=(2.4 * k, 2.5 * len(present)))
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.02, top=0.93, wspace=0.05, hspace=0.2)
    axes = fig.subplots(len(present), k, squeeze=False)
    for row, c in zip(axes, present):
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(images[c]):
                ax.imshow(images[c][j], origin="lower", cmap="magma", vmin=0, vmax=1, extent=extent)
        row[0].set_ylabel(f"{c} (label {LABELS[c]})")
    fig.suptitle("example lenses (min-max normalised)")
    return fig


def _mean_image_figure(
    images: Mapping[str, np.ndarray], present: list[str], extent: tuple[float, float, float, float]
) -> Figure:
    """The mean image of each class, each with its own colour bar."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(present), 3.9))
    fig.subplots_adjust(left=0.06, right=0.95, bottom=0.1, top=0.9, wspace=0.3)
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, c in zip(axes, present):
        im = ax.imshow(images[c].mean(axis=0), origin="lower", cmap="magma", extent=extent)
        ax.set_title(f"{c}: mean of {len(images[c])}")
        ax.set_xlabel("x [arcsec]")
        fig.colorbar(im, ax=ax)
    return fig


def _radial_profile_figure(
    images: Mapping[str, np.ndarray], present: list[str], config: LensingConfig, theta_e: float
) -> Figure:
    """Azimuthal profile of each class's mean image, with the expected Einstein radius."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.95)
    ax = fig.subplots()
    for c in present:
        r, prof = _radial_profile(images[c].mean(axis=0), config.pixel_scale_arcsec, config.pixel_scale_arcsec)
        ax.plot(r, prof, label=c)
    ax.axvline(theta_e, color="k", ls="--", lw=1, label=f"θ_E = {theta_e:.2f}″")
    ax.set_xlabel("radius [arcsec]")
    ax.set_ylabel("azimuthal mean of the mean image")
    ax.legend()
    return fig


def _twin_panels(base: LensSample, twin: LensSample) -> list[tuple[np.ndarray, str, str, Any]]:
    """(image, title, colour map, symmetric colour limit or None) of one row of the twin plot."""
    diff = twin.image - base.image
    mdiff = twin.model - base.model
    return [
        (base.image, "no_sub twin", "magma", None),
        (twin.image, f"{twin.klass} ({twin.params['n_point_masses']} point masses)", "magma", None),
        (diff, "difference of stored images", "RdBu_r", float(np.abs(diff).max())),
        (mdiff, "noise-free difference [counts/s]", "RdBu_r", float(np.abs(mdiff).max())),
    ]


def _substructure_figure(seed: int, config: LensingConfig, twin_index: int) -> Figure:
    """A cdm and an axion lens beside their ``no_sub`` twin, and the differences they make."""
    from matplotlib.figure import Figure

    half = 0.5 * config.num_pix * config.pixel_scale_arcsec
    extent = (-half, half, -half, half)
    base = simulate_lens("no_sub", twin_index, seed, config)
    twins = [simulate_lens(c, twin_index, seed, config, paired=True) for c in ("cdm", "axion")]
    fig = Figure(figsize=(16.0, 7.4))
    fig.subplots_adjust(left=0.04, right=0.95, bottom=0.06, top=0.9, wspace=0.45, hspace=0.3)
    axes = fig.subplots(2, 4)
    for row, twin in zip(axes, twins):
        for ax, (img, title, cmap, lim) in zip(row, _twin_panels(base, twin)):
            kw = {"vmin": -lim, "vmax": lim} if lim else {}
            im = ax.imshow(img, origin="lower", cmap=cmap, extent=extent, **kw)
            ax.set_title(title, fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
        pm = twin.point_masses
        if len(pm):
            row[1].scatter(pm[:, 0], pm[:, 1], s=4, c="cyan", marker="x", lw=0.6)
            row[1].set_xlim(-half, half)
            row[1].set_ylim(-half, half)
    fig.suptitle(f"substructure vs its no_sub twin (seed {seed}, image {twin_index})")
    return fig


def lensing_validation_plots(
    images: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    config: LensingConfig = DEFAULT_LENSING_CONFIG,
    n_examples: int = 5,
    twin_index: int = 0,
) -> list[Path]:
    """PNG plots to check the data by eye; one file per view (matplotlib Agg, no pyplot state).

    ``lensing_examples.png``: example images per class; ``lensing_mean_image.png``: mean image per
    class; ``lensing_radial_profile.png``: azimuthal profile of the mean images with the expected
    Einstein radius; ``lensing_substructure_difference.png``: a cdm and an axion image next to the
    ``no_sub`` twin with the same lens, source and noise (``paired=True``, image ``twin_index`` of
    ``seed``), their difference, and the difference of the noise-free models.
    """
    present = [c for c in CLASSES if c in images and len(images[c])]
    if not present:
        raise ValueError("images holds no class with images")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    half = 0.5 * config.num_pix * config.pixel_scale_arcsec
    extent = (-half, half, -half, half)
    theta_e = einstein_radius_arcsec(config.main_halo_mass_msun, config)
    return [
        _save_png(_examples_figure(images, present, n_examples, extent), out / "lensing_examples.png"),
        _save_png(_mean_image_figure(images, present, extent), out / "lensing_mean_image.png"),
        _save_png(_radial_profile_figure(images, present, config, theta_e), out / "lensing_radial_profile.png"),
        _save_png(_substructure_figure(seed, config, twin_index), out / "lensing_substructure_difference.png"),
    ]
