"""Galaxy-galaxy strong lenses with dark-matter substructure, written like DeepLense Model I.

The public DeepLense "Model I" images (classes ``axion``, ``cdm``, ``no_sub``) were made with
lenstronomy; this module renders the same kind of scene with lenstronomy and writes one ``.npy``
per image in the public folder layout:

* **Main lens**: a singular isothermal ellipsoid (SIE) whose Einstein radius is that of a
  ``1e12`` Msun halo at z = 0.5 for a source at z = 1 (angular-diameter distances from an astropy
  ``FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05)``), ellipticity |e| = 0.1, plus external shear 0.05.
* **Source**: an elliptical Sersic profile (R = 0.25", n = 1) centred uniformly within +-0.35".
* **Substructure**: ``cdm`` adds Poisson(25) point-mass subhalos with a power-law mass function
  between 1e6 and 1e10 Msun at 0.25"-2" from the lens centre; ``axion`` adds a vortex, 3e10 Msun
  split into 100 point masses on a line through the lens centre whose half-length is the axion's
  de Broglie scale hbar / (m_a v), with m_a = 10^U(-24, -22) eV; ``no_sub`` adds nothing.
* **Instrument**: 150 x 150 pixels of 0.05", Gaussian PSF (FWHM 0.087"), exposure 10^U(3, 3.5) s,
  Poisson noise on the source counts and Gaussian background noise (rms 0.01 counts/s); each image
  is then min-max normalised to [0, 1] as in the public sets.

Determinism: every image has its own random streams, ``SeedSequence(seed, spawn_key=(class,
index, stream))`` with separate streams for the main lens + source (0), the substructure (1) and
the noise (2). Image ``i`` of a class is therefore the same however the work is split over shards
or processes, and ``simulate_lens(..., paired=True)`` draws the main lens, source and noise of a
``cdm``/``axion`` image from the ``no_sub`` streams of the same index: the two images differ only
by the substructure.

lenstronomy and astropy are the optional ``sim`` extra; they are imported only when an image is
rendered, so ``import e2evision.simulate.lensing`` works without them.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from e2evision.utils.extras import MissingExtraError as _MissingExtraError

from e2evision.utils.io import atomic_path, atomic_write_json, atomic_write_text
from e2evision.utils.provenance import package_versions

__all__ = [
    "CLASSES",
    "LABELS",
    "LensClass",
    "LensingConfig",
    "LensSample",
    "MissingExtraError",
    "einstein_radius_arcsec",
    "lensing_file_name",
    "load_lensing_images",
    "lensing_validation_plots",
    "simulate_lens",
    "vortex_half_length_arcsec",
    "write_lensing",
]

LensClass = Literal["axion", "cdm", "no_sub"]
CLASSES: tuple[LensClass, ...] = ("axion", "cdm", "no_sub")
LABELS: dict[str, int] = {"axion": 0, "cdm": 1, "no_sub": 2}
"""Public Model I labels; the label is also the class component of every RNG spawn key."""

GENERATOR_NAME = "e2evision.simulate.lensing"
METADATA_NAME = "metadata.json"
_STREAM_MAIN, _STREAM_SUB, _STREAM_NOISE = 0, 1, 2
_HBAR_C_EV_M = 1.973269804e-7  # hbar c [eV m]
_C_KM_S = 299_792.458
_INSTALL_HINT = "pip install 'e2evision[sim]'"


class MissingExtraError(_MissingExtraError):
    """Raised when the optional simulation packages (lenstronomy, astropy) are not installed."""


def _require_sim() -> None:
    """Import the optional packages by their top-level names so a missing one fails clearly.

    Importing the top-level package first matters: ``from lenstronomy.X import Y`` can succeed
    from ``sys.modules`` even when the package itself has been made unavailable.
    """
    import importlib

    for name in ("lenstronomy", "astropy"):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise MissingExtraError(
                f"the lensing simulator needs the optional package {name!r}: {_INSTALL_HINT}"
            ) from err


# ------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class LensingConfig:
    """Every number the simulation uses, recorded in ``metadata.json``.

    Defaults follow the public DeepLense Model I recipe. Fields are plain floats/ints/tuples so the
    config is hashable (it keys the per-process cache of lenstronomy models) and JSON-serialisable.
    """

    # --- image --------------------------------------------------------------------------------
    num_pix: int = 150
    pixel_scale_arcsec: float = 0.05
    supersampling_factor: int = 1
    """Surface brightness is evaluated on a grid this many times finer, then binned (1 = public)."""

    # --- cosmology and main lens --------------------------------------------------------------
    z_lens: float = 0.5
    z_source: float = 1.0
    h0: float = 70.0
    omega_m0: float = 0.3
    omega_b0: float = 0.05
    main_halo_mass_msun: float = 1e12
    """Mass inside the Einstein radius; theta_E = sqrt(4 G M / c^2 * D_ls / (D_l D_s))."""
    lens_ellipticity: float = 0.1
    """|e| of the SIE in lenstronomy's convention, |e| = (1 - q) / (1 + q)."""
    shear_gamma: float = 0.05
    """Magnitude of the external shear."""
    random_orientation: bool = True
    """Draw the SIE and shear position angles uniformly; False fixes e = (|e|, 0) and
    gamma = (|gamma|, 0) as in the public generator."""

    # --- source ---------------------------------------------------------------------------------
    source_amp: float = 20.0
    """Sersic surface brightness at R_sersic, in counts/s per arcsec^2 (lenstronomy's ``amp``)."""
    source_r_sersic_arcsec: float = 0.25
    source_n_sersic: float = 1.0
    source_e1: float = -0.1
    source_e2: float = 0.1
    source_center_range_arcsec: float = 0.35
    """Source centre x and y are each uniform in [-range, range]."""

    # --- instrument ---------------------------------------------------------------------------
    psf_fwhm_arcsec: float = 0.087
    psf_truncation_sigma: float = 3.0
    """The Gaussian PSF kernel is cut at this many sigma (lenstronomy's ``truncation``)."""
    background_rms: float = 0.01
    """Gaussian background noise per pixel, counts/s."""
    log10_exposure_range_s: tuple[float, float] = (3.0, 3.5)
    """Exposure time 10^U(lo, hi) seconds sets the Poisson noise of the source counts."""

    # --- cdm subhalos ---------------------------------------------------------------------------
    cdm_mean_subhalos: float = 25.0
    subhalo_mass_range_msun: tuple[float, float] = (1e6, 1e10)
    subhalo_mass_slope: float = -0.9
    """dN/dm proportional to m^slope; -0.9 is what the public generator's code samples (its
    docstring says -1.9, the CDM slope, which makes nearly every subhalo invisible); -1 gives a
    log-uniform mass function."""
    subhalo_radius_range_arcsec: tuple[float, float] = (0.25, 2.0)
    """Subhalo distance from the lens centre is uniform in this range (not in area), with a
    uniform position angle: the subhalos crowd the Einstein ring."""

    # --- axion vortex ---------------------------------------------------------------------------
    vortex_mass_msun: float = 3e10
    vortex_points: int = 100
    log10_axion_mass_range_ev: tuple[float, float] = (-24.0, -22.0)
    vortex_velocity_km_s: float = 100.0
    """v in the vortex half-length hbar / (m_a v): 0.031" x (1e-22 eV / m_a) at z = 0.5, close to
    the public generator's 0.03" x (1e-22 eV / m_a)."""

    def __post_init__(self) -> None:
        positive = (
            "pixel_scale_arcsec", "z_lens", "z_source", "h0", "omega_m0", "main_halo_mass_msun",
            "source_amp", "source_r_sersic_arcsec", "source_n_sersic", "psf_fwhm_arcsec",
            "psf_truncation_sigma", "vortex_mass_msun", "vortex_velocity_km_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value) and value > 0):
                raise ValueError(f"LensingConfig.{name} must be a finite number > 0, got {value!r}")
        non_negative = (
            "omega_b0", "lens_ellipticity", "shear_gamma", "source_center_range_arcsec",
            "background_rms", "cdm_mean_subhalos",
        )
        for name in non_negative:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"LensingConfig.{name} must be a finite number >= 0, got {value!r}"
                )
        for name in ("num_pix", "supersampling_factor", "vortex_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LensingConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("log10_exposure_range_s", "subhalo_mass_range_msun",
                     "subhalo_radius_range_arcsec", "log10_axion_mass_range_ev"):
            value = getattr(self, name)
            if (not isinstance(value, tuple) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                    or value[0] > value[1]):
                raise ValueError(
                    f"LensingConfig.{name} must be a tuple (low, high) with low <= high, "
                    f"got {value!r}"
                )
        if self.subhalo_mass_range_msun[0] <= 0:
            raise ValueError("LensingConfig.subhalo_mass_range_msun must be positive")
        if self.subhalo_radius_range_arcsec[0] < 0:
            raise ValueError("LensingConfig.subhalo_radius_range_arcsec must be >= 0")
        if not math.isfinite(self.subhalo_mass_slope):
            raise ValueError("LensingConfig.subhalo_mass_slope must be finite")
        if not self.z_source > self.z_lens:
            raise ValueError(
                f"LensingConfig needs z_source > z_lens, got {self.z_source} <= {self.z_lens}"
            )
        if not self.lens_ellipticity < 1:
            raise ValueError("LensingConfig.lens_ellipticity must be < 1")
        if not isinstance(self.random_orientation, bool):
            raise ValueError("LensingConfig.random_orientation must be a bool")

    def to_json(self) -> str:
        """JSON of every field (tuples become lists), as stored in ``metadata.json``."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LensingConfig:
        """Rebuild a config recorded in ``metadata.json``."""
        raw = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown LensingConfig fields in JSON: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


# ------------------------------------------------------------------------------------------------
# cosmology


@functools.lru_cache(maxsize=32)
def _distances(config: LensingConfig) -> dict[str, float]:
    """Angular-diameter distances [Mpc] and derived lensing scales for the config's cosmology."""
    _require_sim()
    from astropy import constants as const
    from astropy import units as u
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=config.h0, Om0=config.omega_m0, Ob0=config.omega_b0)
    d_l = cosmo.angular_diameter_distance(config.z_lens)
    d_s = cosmo.angular_diameter_distance(config.z_source)
    # Flat universe: D_ls = (chi_s - chi_l) / (1 + z_s) (works on every astropy version).
    d_ls = (cosmo.comoving_distance(config.z_source) - cosmo.comoving_distance(config.z_lens)) / (
        1.0 + config.z_source
    )
    # theta_E^2 = (4 G M / c^2) D_ls / (D_l D_s), here per solar mass, in rad^2.
    theta2_per_msun = (4 * const.G * const.M_sun / const.c**2 * d_ls / (d_l * d_s)).to(
        u.dimensionless_unscaled
    ).value
    arcsec_rad = math.pi / (180.0 * 3600.0)
    return {
        "d_l_mpc": float(d_l.to(u.Mpc).value),
        "d_s_mpc": float(d_s.to(u.Mpc).value),
        "d_ls_mpc": float(d_ls.to(u.Mpc).value),
        "theta_e_per_sqrt_msun_arcsec": math.sqrt(theta2_per_msun) / arcsec_rad,
        "kpc_per_arcsec": float(d_l.to(u.kpc).value) * arcsec_rad,
    }


def einstein_radius_arcsec(
    mass_msun: float | np.ndarray, config: LensingConfig = LensingConfig()
) -> float | np.ndarray:
    """Einstein radius [arcsec] of a lens with ``mass_msun`` inside it, at the config's redshifts.

    The same relation gives the SIE's theta_E (mass inside the Einstein radius) and a
    point mass's theta_E (lenstronomy's ``POINT_MASS`` parameter), so subhalos use it too.
    """
    scale = _distances(config)["theta_e_per_sqrt_msun_arcsec"]
    mass = np.asarray(mass_msun, dtype=np.float64)
    if np.any(~np.isfinite(mass)) or np.any(mass < 0):
        raise ValueError(f"mass_msun must be finite and >= 0, got {mass_msun!r}")
    out = scale * np.sqrt(mass)
    return float(out) if out.ndim == 0 else out


def vortex_half_length_arcsec(
    axion_mass_ev: float, config: LensingConfig = LensingConfig()
) -> float:
    """Half-length of the vortex line: the de Broglie scale hbar / (m_a v) at the lens distance."""
    if not (math.isfinite(axion_mass_ev) and axion_mass_ev > 0):
        raise ValueError(f"axion_mass_ev must be a finite number > 0, got {axion_mass_ev!r}")
    length_m = _HBAR_C_EV_M / (axion_mass_ev * config.vortex_velocity_km_s / _C_KM_S)
    length_kpc = length_m / 3.0856775814913673e19
    return length_kpc / _distances(config)["kpc_per_arcsec"]


# ------------------------------------------------------------------------------------------------
# random streams


def _check_class(klass: str) -> None:
    if klass not in LABELS:
        raise ValueError(f"class must be one of {list(CLASSES)}, got {klass!r}")


def _check_seed(seed: object) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _rng(seed: int, klass: str, index: int, stream: int) -> np.random.Generator:
    """One stream per (seed, class, image index, stream): independent of sharding and workers."""
    seq = np.random.SeedSequence(entropy=seed, spawn_key=(LABELS[klass], int(index), stream))
    return np.random.Generator(np.random.PCG64(seq))


# ------------------------------------------------------------------------------------------------
# rendering


@dataclass
class LensSample:
    """One simulated lens: the stored image, the noise-free model and the drawn parameters.

    ``image`` is what is written to disk: (num_pix, num_pix) float64, min-max normalised to
    [0, 1]. ``model`` is the noise-free, PSF-convolved surface brightness in counts/s per pixel
    and ``noisy`` the same with noise, before normalisation. Array axis 0 is y and axis 1 is x;
    pixel (i, j) is centred at ((j - c) * pixel, (i - c) * pixel) arcsec with c = (num_pix - 1)/2.
    ``point_masses`` is (k, 3): x, y [arcsec] and mass [Msun] of each subhalo or vortex element.
    """

    klass: str
    index: int
    image: np.ndarray
    model: np.ndarray
    noisy: np.ndarray
    params: dict[str, float | int]
    point_masses: np.ndarray


@functools.lru_cache(maxsize=8)
def _static_models(config: LensingConfig) -> tuple[Any, Any, Any]:
    """Pixel grid, PSF and source light model: the same for every image of a config."""
    _require_sim()
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.LightModel.light_model import LightModel

    n, d = config.num_pix, config.pixel_scale_arcsec
    corner = -0.5 * (n - 1) * d  # centre of pixel (0, 0); x grows with column, y with row
    grid = PixelGrid(nx=n, ny=n, transform_pix2angle=np.array([[d, 0.0], [0.0, d]]),
                     ra_at_xy_0=corner, dec_at_xy_0=corner)
    psf = PSF(psf_type="GAUSSIAN", fwhm=config.psf_fwhm_arcsec, pixel_size=d,
              truncation=config.psf_truncation_sigma)
    return grid, psf, LightModel(["SERSIC_ELLIPSE"])


@functools.lru_cache(maxsize=256)
def _image_model(config: LensingConfig, n_point_masses: int) -> Any:
    """lenstronomy ImageModel for SIE + shear + ``n_point_masses`` point masses (cached)."""
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel

    grid, psf, source = _static_models(config)
    lens = LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * n_point_masses)
    numerics = {"supersampling_factor": config.supersampling_factor,
                "supersampling_convolution": False}
    return ImageModel(grid, psf, lens_model_class=lens, source_model_class=source,
                      kwargs_numerics=numerics)


def _draw_main(rng: np.random.Generator, cfg: LensingConfig) -> dict[str, float]:
    """Main lens orientation, source position and exposure (fixed draw order: determinism)."""
    half = cfg.source_center_range_arcsec
    src_x, src_y = rng.uniform(-half, half, 2)
    lens_phi, shear_phi = rng.uniform(0.0, math.pi, 2)
    if not cfg.random_orientation:
        lens_phi = shear_phi = 0.0
    log_t = rng.uniform(*cfg.log10_exposure_range_s)
    return {
        "theta_E_arcsec": einstein_radius_arcsec(cfg.main_halo_mass_msun, cfg),
        "lens_e1": cfg.lens_ellipticity * math.cos(2 * lens_phi),
        "lens_e2": cfg.lens_ellipticity * math.sin(2 * lens_phi),
        "shear_gamma1": cfg.shear_gamma * math.cos(2 * shear_phi),
        "shear_gamma2": cfg.shear_gamma * math.sin(2 * shear_phi),
        "source_x_arcsec": float(src_x),
        "source_y_arcsec": float(src_y),
        "exposure_time_s": float(10.0**log_t),
    }


def _sample_power_law(
    rng: np.random.Generator, n: int, lo: float, hi: float, slope: float
) -> np.ndarray:
    """Inverse-CDF draws from dN/dm proportional to m^slope on [lo, hi]."""
    u = rng.random(n)
    if abs(slope + 1.0) < 1e-12:
        return lo * (hi / lo) ** u
    a = slope + 1.0
    return (lo**a + u * (hi**a - lo**a)) ** (1.0 / a)


def _draw_substructure(
    rng: np.random.Generator, klass: str, cfg: LensingConfig
) -> tuple[np.ndarray, dict[str, float | int]]:
    """Point masses (x, y, mass) of the class's substructure and its summary parameters."""
    if klass == "no_sub":
        return np.zeros((0, 3)), {"n_point_masses": 0, "substructure_mass_msun": 0.0}
    if klass == "cdm":
        n = int(rng.poisson(cfg.cdm_mean_subhalos))
        mass = _sample_power_law(rng, n, *cfg.subhalo_mass_range_msun, cfg.subhalo_mass_slope)
        r = rng.uniform(*cfg.subhalo_radius_range_arcsec, n)
        ang = rng.uniform(0.0, 2 * math.pi, n)
        pm = np.column_stack([r * np.cos(ang), r * np.sin(ang), mass])
        return pm, {
            "n_point_masses": n,
            "substructure_mass_msun": float(mass.sum()),
            "max_subhalo_mass_msun": float(mass.max()) if n else 0.0,
        }
    # axion vortex: a straight line of equal point masses through the lens centre
    log_m = rng.uniform(*cfg.log10_axion_mass_range_ev)
    angle = rng.uniform(0.0, 2 * math.pi)
    axion_mass = float(10.0**log_m)
    half = vortex_half_length_arcsec(axion_mass, cfg)
    s = np.linspace(-half, half, cfg.vortex_points)
    mass = np.full(cfg.vortex_points, cfg.vortex_mass_msun / cfg.vortex_points)
    pm = np.column_stack([s * math.cos(angle), s * math.sin(angle), mass])
    return pm, {
        "n_point_masses": cfg.vortex_points,
        "substructure_mass_msun": float(mass.sum()),
        "axion_mass_ev": axion_mass,
        "vortex_half_length_arcsec": float(half),
        "vortex_angle_rad": float(angle),
    }


def _normalise(x: np.ndarray) -> np.ndarray:
    """Per-image min-max scaling to [0, 1] (a constant image becomes all zeros)."""
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros_like(x, dtype=np.float64)
    out = (x - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)  # guard against 1 + 1 ulp from rounding


def simulate_lens(
    klass: LensClass,
    index: int,
    seed: int = 0,
    config: LensingConfig = LensingConfig(),
    *,
    paired: bool = False,
) -> LensSample:
    """Render image ``index`` of class ``klass`` for ``seed`` (same arguments, same image).

    With ``paired=True`` (``cdm``/``axion`` only) the main lens, source, exposure and noise come
    from the streams of ``no_sub`` image ``index`` for this seed, so the pair differs only by the
    substructure. The written data set uses ``paired=False`` (independent lenses per class).
    """
    _check_class(klass)
    seed = _check_seed(seed)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be an integer >= 0, got {index!r}")
    if not isinstance(config, LensingConfig):
        raise ValueError(f"config must be a LensingConfig, got {type(config).__name__}")
    if paired and klass == "no_sub":
        raise ValueError("paired=True pairs a cdm or axion image with its no_sub twin")
    _require_sim()
    main_class = "no_sub" if paired else klass
    main = _draw_main(_rng(seed, main_class, index, _STREAM_MAIN), config)
    pm, sub = _draw_substructure(_rng(seed, klass, index, _STREAM_SUB), klass, config)

    kwargs_lens: list[dict[str, float]] = [
        {"theta_E": main["theta_E_arcsec"], "e1": main["lens_e1"], "e2": main["lens_e2"],
         "center_x": 0.0, "center_y": 0.0},
        {"gamma1": main["shear_gamma1"], "gamma2": main["shear_gamma2"], "ra_0": 0.0, "dec_0": 0.0},
    ]
    if len(pm):
        theta_pm = einstein_radius_arcsec(pm[:, 2], config)
        kwargs_lens += [{"theta_E": float(t), "center_x": float(x), "center_y": float(y)}
                        for t, x, y in zip(theta_pm, pm[:, 0], pm[:, 1])]
    kwargs_source = [{
        "amp": config.source_amp, "R_sersic": config.source_r_sersic_arcsec,
        "n_sersic": config.source_n_sersic, "e1": config.source_e1, "e2": config.source_e2,
        "center_x": main["source_x_arcsec"], "center_y": main["source_y_arcsec"],
    }]
    model = np.asarray(_image_model(config, len(pm)).image(kwargs_lens, kwargs_source),
                       dtype=np.float64)
    model = np.clip(model, 0.0, None)  # guard: convolution round-off must not give negative rates

    # Noise: the background draw comes first so a paired twin shares it exactly.
    noise_rng = _rng(seed, main_class, index, _STREAM_NOISE)
    t = main["exposure_time_s"]
    background = noise_rng.normal(0.0, config.background_rms, model.shape)
    noisy = noise_rng.poisson(model * t) / t + background
    params: dict[str, float | int] = {**main, **sub, "paired": int(bool(paired))}
    return LensSample(klass=klass, index=int(index), image=_normalise(noisy), model=model,
                      noisy=noisy, params=params, point_masses=pm)


# ------------------------------------------------------------------------------------------------
# files


def lensing_file_name(klass: LensClass, index: int, n_class: int) -> str:
    """``<class>_sim_<index>.npy`` (the public prefix), zero-padded to the class size."""
    _check_class(klass)
    width = max(6, len(str(max(n_class - 1, 0))))
    return f"{klass}_sim_{int(index):0{width}d}.npy"


def _class_counts(n: int) -> dict[str, int]:
    """Split ``n`` over the classes in label order; the first ``n % 3`` classes get one more."""
    return {c: n // 3 + (1 if i < n % 3 else 0) for i, c in enumerate(CLASSES)}


def _shard_range(n_class: int, shard: int, num_shards: int) -> tuple[int, int]:
    return shard * n_class // num_shards, (shard + 1) * n_class // num_shards


def _shard_suffix(shard: int, num_shards: int) -> str:
    return f"_shard{shard}of{num_shards}" if num_shards > 1 else ""


def _save_npy(path: Path, array: np.ndarray, allow_pickle: bool) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.save adds no suffix
        np.save(fh, array, allow_pickle=allow_pickle)


def _render_and_write(
    task: tuple[str, Sequence[int], int, int, LensingConfig, str, bool],
) -> list[dict[str, Any]]:
    """Worker job: render and write a batch of images of one class, return their table rows."""
    klass, indices, n_class, seed, config, out_dir, object_arrays = task
    rows = []
    for index in indices:
        sample = simulate_lens(klass, index, seed, config)  # type: ignore[arg-type]
        name = lensing_file_name(klass, index, n_class)  # type: ignore[arg-type]
        path = Path(out_dir) / klass / name
        if klass == "axion" and object_arrays:
            obj = np.empty(2, dtype=object)  # the public form: [image, axion_mass]
            obj[0] = sample.image
            obj[1] = float(sample.params["axion_mass_ev"])
            _save_npy(path, obj, allow_pickle=True)
        else:
            _save_npy(path, sample.image, allow_pickle=False)
        rows.append({"file": name, "index": int(index), **sample.params})
    return rows


def _table(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows -> columns (a compact JSON table that loads straight into ``pandas.DataFrame``)."""
    rows = sorted(rows, key=lambda r: r["index"])
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and k != "paired"]
    return {k: [r.get(k) for r in rows] for k in keys}


def write_lensing(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    config: LensingConfig = LensingConfig(),
    *,
    shard: int = 0,
    num_shards: int = 1,
    workers: int = 1,
    axion_object_arrays: bool = False,
    progress: bool = True,
    batch: int = 8,
) -> Path:
    """Write ``n`` lenses (split evenly over axion/cdm/no_sub) as DeepLense Model I ``.npy`` files.

    Layout: ``out_dir/{axion,cdm,no_sub}/<class>_sim_<index>.npy``, each (150, 150) float64 in
    [0, 1]. Axion images are plain arrays with the axion mass in ``axion/axion_mass<sfx>.csv``;
    ``axion_object_arrays=True`` writes the public object array ``[image, axion_mass]`` instead
    (needs ``allow_pickle`` to read). ``metadata<sfx>.json`` records settings, versions and a
    per-file parameter table; ``<sfx>`` is ``_shard{i}of{k}`` for sharded runs, so shards may share
    one directory and together hold exactly the files of the unsharded run. ``workers`` processes
    (spawned) render in parallel; files do not depend on ``workers`` or ``batch``.
    Returns the metadata path.
    """
    for name, value, low in (("n", n, 3), ("num_shards", num_shards, 1), ("workers", workers, 1),
                             ("batch", batch, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if (isinstance(shard, bool) or not isinstance(shard, (int, np.integer))
            or not 0 <= shard < num_shards):
        raise ValueError(f"shard must be an integer in [0, num_shards={num_shards}), got {shard!r}")
    seed = _check_seed(seed)
    if not isinstance(config, LensingConfig):
        raise ValueError(f"config must be a LensingConfig, got {type(config).__name__}")
    _require_sim()
    from tqdm.auto import tqdm

    out = Path(out_dir)
    counts = _class_counts(int(n))
    ranges = {c: _shard_range(counts[c], int(shard), int(num_shards)) for c in CLASSES}
    for c in CLASSES:
        (out / c).mkdir(parents=True, exist_ok=True)
    tasks = [
        (c, list(range(lo, min(lo + batch, ranges[c][1]))), counts[c], seed, config, str(out),
         bool(axion_object_arrays))
        for c in CLASSES
        for lo in range(ranges[c][0], ranges[c][1], batch)
    ]
    total = sum(hi - lo for lo, hi in ranges.values())
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in CLASSES}
    with tqdm(total=total, desc="lensing", unit="img", disable=not progress) as bar:
        if workers == 1:
            results: Iterable[list[dict[str, Any]]] = map(_render_and_write, tasks)
            for task, res in zip(tasks, results):
                rows[task[0]] += res
                bar.update(len(res))
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # fork + lenstronomy/numba/BLAS is unsafe
            with ctx.Pool(int(workers)) as pool:
                for res in pool.imap_unordered(_render_and_write, tasks):
                    if res:
                        rows[_class_of(res[0]["file"])] += res
                    bar.update(len(res))

    suffix = _shard_suffix(int(shard), int(num_shards))
    axion_rows = sorted(rows["axion"], key=lambda r: r["index"])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "axion_mass_ev"])
    writer.writerows([r["file"], repr(float(r["axion_mass_ev"]))] for r in axion_rows)
    atomic_write_text(out / "axion" / f"axion_mass{suffix}.csv", buf.getvalue())

    derived = dict(_distances(config))
    derived["theta_E_arcsec"] = einstein_radius_arcsec(config.main_halo_mass_msun, config)
    metadata = {
        "generator": GENERATOR_NAME,
        "format": "DeepLense Model I: one .npy per image in <class>/ folders",
        "seed": seed,
        "shard": int(shard),
        "num_shards": int(num_shards),
        "n_total": int(n),
        "image": {
            "shape": [config.num_pix, config.num_pix],
            "dtype": "float64",
            "pixel_scale_arcsec": config.pixel_scale_arcsec,
            "normalisation": "per-image min-max to [0, 1] of the noisy counts/s image",
            "axes": "axis 0 = y (row), axis 1 = x (column); display with origin='lower'",
        },
        "axion_storage": "object_array [image, axion_mass_ev] (pickle)" if axion_object_arrays
        else "plain float64 array; axion mass in axion/axion_mass" + suffix + ".csv",
        "axion_object_arrays": bool(axion_object_arrays),
        "config": json.loads(config.to_json()),
        "derived": derived,
        "versions": package_versions(extra=("astropy",)),  # astropy sets the cosmology
        "classes": {
            c: {
                "label": LABELS[c],
                "n_class": counts[c],
                "index_start": ranges[c][0],
                "index_stop": ranges[c][1],
                "table": _table(rows[c]),
            }
            for c in CLASSES
        },
    }
    return atomic_write_json(out / f"metadata{suffix}.json", metadata)


def _class_of(file_name: str) -> str:
    for c in CLASSES:
        if file_name.startswith(f"{c}_sim_"):
            return c
    raise ValueError(f"not a lensing file name: {file_name!r}")


# ------------------------------------------------------------------------------------------------
# reading back and validation plots


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
        files = sorted((root / c).glob("*.npy"))[: max_per_class]
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


def _radial_profile(
    image: np.ndarray, pixel: float, bin_width: float
) -> tuple[np.ndarray, np.ndarray]:
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


def lensing_validation_plots(
    images: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    config: LensingConfig = LensingConfig(),
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
    from matplotlib.figure import Figure

    present = [c for c in CLASSES if c in images and len(images[c])]
    if not present:
        raise ValueError("images holds no class with images")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    half = 0.5 * config.num_pix * config.pixel_scale_arcsec
    extent = (-half, half, -half, half)
    theta_e = einstein_radius_arcsec(config.main_halo_mass_msun, config)
    paths: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        path = out / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        paths.append(path)

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
    save(fig, "lensing_examples.png")

    fig = Figure(figsize=(4.2 * len(present), 3.9))
    fig.subplots_adjust(left=0.06, right=0.95, bottom=0.1, top=0.9, wspace=0.3)
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, c in zip(axes, present):
        im = ax.imshow(images[c].mean(axis=0), origin="lower", cmap="magma", extent=extent)
        ax.set_title(f"{c}: mean of {len(images[c])}")
        ax.set_xlabel("x [arcsec]")
        fig.colorbar(im, ax=ax)
    save(fig, "lensing_mean_image.png")

    fig = Figure(figsize=(6.0, 4.2))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.95)
    ax = fig.subplots()
    for c in present:
        r, prof = _radial_profile(images[c].mean(axis=0), config.pixel_scale_arcsec,
                                  config.pixel_scale_arcsec)
        ax.plot(r, prof, label=c)
    ax.axvline(theta_e, color="k", ls="--", lw=1, label=f"θ_E = {theta_e:.2f}″")
    ax.set_xlabel("radius [arcsec]")
    ax.set_ylabel("azimuthal mean of the mean image")
    ax.legend()
    save(fig, "lensing_radial_profile.png")

    base = simulate_lens("no_sub", twin_index, seed, config)
    twins = [simulate_lens(c, twin_index, seed, config, paired=True) for c in ("cdm", "axion")]
    fig = Figure(figsize=(16.0, 7.4))
    fig.subplots_adjust(left=0.04, right=0.95, bottom=0.06, top=0.9, wspace=0.45, hspace=0.3)
    axes = fig.subplots(2, 4)
    for row, twin in zip(axes, twins):
        diff = twin.image - base.image
        mdiff = twin.model - base.model
        panels = [
            (base.image, "no_sub twin", "magma", None),
            (twin.image, f"{twin.klass} ({twin.params['n_point_masses']} point masses)", "magma",
             None),
            (diff, "difference of stored images", "RdBu_r", float(np.abs(diff).max())),
            (mdiff, "noise-free difference [counts/s]", "RdBu_r", float(np.abs(mdiff).max())),
        ]
        for ax, (img, title, cmap, lim) in zip(row, panels):
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
    save(fig, "lensing_substructure_difference.png")
    return paths
