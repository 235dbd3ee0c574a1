"""Rendering one lens with lenstronomy: cosmology, random streams, main lens, substructure.

Every image has its own random streams, ``SeedSequence(seed, spawn_key=(class, index,
stream))`` with separate streams for the main lens + source (0), the substructure (1) and the
noise (2), so image ``i`` of a class is the same however the work is split.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from e2evision.simulate.common import check_seed
from e2evision.simulate.lensing_config import (
    CLASSES,
    DEFAULT_LENSING_CONFIG,
    LABELS,
    LensClass,
    LensingConfig,
    _require_sim,
)

__all__ = ["LensSample", "einstein_radius_arcsec", "simulate_lens", "vortex_half_length_arcsec"]

_STREAM_MAIN, _STREAM_SUB, _STREAM_NOISE = 0, 1, 2
_HBAR_C_EV_M = 1.973269804e-7  # hbar c [eV m]
_C_KM_S = 299_792.458


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
    d_ls = (cosmo.comoving_distance(config.z_source) - cosmo.comoving_distance(config.z_lens)) / (1.0 + config.z_source)
    # theta_E^2 = (4 G M / c^2) D_ls / (D_l D_s), here per solar mass, in rad^2.
    theta2_per_msun = (4 * const.G * const.M_sun / const.c**2 * d_ls / (d_l * d_s)).to(u.dimensionless_unscaled).value
    arcsec_rad = math.pi / (180.0 * 3600.0)
    return {
        "d_l_mpc": float(d_l.to(u.Mpc).value),
        "d_s_mpc": float(d_s.to(u.Mpc).value),
        "d_ls_mpc": float(d_ls.to(u.Mpc).value),
        "theta_e_per_sqrt_msun_arcsec": math.sqrt(theta2_per_msun) / arcsec_rad,
        "kpc_per_arcsec": float(d_l.to(u.kpc).value) * arcsec_rad,
    }


def einstein_radius_arcsec(
    mass_msun: float | np.ndarray, config: LensingConfig = DEFAULT_LENSING_CONFIG
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


def vortex_half_length_arcsec(axion_mass_ev: float, config: LensingConfig = DEFAULT_LENSING_CONFIG) -> float:
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
    grid = PixelGrid(
        nx=n, ny=n, transform_pix2angle=np.array([[d, 0.0], [0.0, d]]), ra_at_xy_0=corner, dec_at_xy_0=corner
    )
    psf = PSF(psf_type="GAUSSIAN", fwhm=config.psf_fwhm_arcsec, pixel_size=d, truncation=config.psf_truncation_sigma)
    return grid, psf, LightModel(["SERSIC_ELLIPSE"])


@functools.lru_cache(maxsize=256)
def _image_model(config: LensingConfig, n_point_masses: int) -> Any:
    """lenstronomy ImageModel for SIE + shear + ``n_point_masses`` point masses (cached)."""
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel

    grid, psf, source = _static_models(config)
    lens = LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * n_point_masses)
    numerics = {"supersampling_factor": config.supersampling_factor, "supersampling_convolution": False}
    return ImageModel(grid, psf, lens_model_class=lens, source_model_class=source, kwargs_numerics=numerics)


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


def _sample_power_law(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
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
    config: LensingConfig = DEFAULT_LENSING_CONFIG,
    *,
    paired: bool = False,
) -> LensSample:
    """Render image ``index`` of class ``klass`` for ``seed`` (same arguments, same image).

    With ``paired=True`` (``cdm``/``axion`` only) the main lens, source, exposure and noise come
    from the streams of ``no_sub`` image ``index`` for this seed, so the pair differs only by the
    substructure. The written data set uses ``paired=False`` (independent lenses per class).
    """
    _check_class(klass)
    seed = check_seed(seed)
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
        {
            "theta_E": main["theta_E_arcsec"],
            "e1": main["lens_e1"],
            "e2": main["lens_e2"],
            "center_x": 0.0,
            "center_y": 0.0,
        },
        {"gamma1": main["shear_gamma1"], "gamma2": main["shear_gamma2"], "ra_0": 0.0, "dec_0": 0.0},
    ]
    if len(pm):
        theta_pm = einstein_radius_arcsec(pm[:, 2], config)
        kwargs_lens += [
            {"theta_E": float(t), "center_x": float(x), "center_y": float(y)}
            for t, x, y in zip(theta_pm, pm[:, 0], pm[:, 1])
        ]
    kwargs_source = [
        {
            "amp": config.source_amp,
            "R_sersic": config.source_r_sersic_arcsec,
            "n_sersic": config.source_n_sersic,
            "e1": config.source_e1,
            "e2": config.source_e2,
            "center_x": main["source_x_arcsec"],
            "center_y": main["source_y_arcsec"],
        }
    ]
    model = np.asarray(_image_model(config, len(pm)).image(kwargs_lens, kwargs_source), dtype=np.float64)
    model = np.clip(model, 0.0, None)  # guard: convolution round-off must not give negative rates

    # Noise: the background draw comes first so a paired twin shares it exactly.
    noise_rng = _rng(seed, main_class, index, _STREAM_NOISE)
    t = main["exposure_time_s"]
    background = noise_rng.normal(0.0, config.background_rms, model.shape)
    noisy = noise_rng.poisson(model * t) / t + background
    params: dict[str, float | int] = {**main, **sub, "paired": int(bool(paired))}
    return LensSample(
        klass=klass, index=int(index), image=_normalise(noisy), model=model, noisy=noisy, params=params, point_masses=pm
    )
