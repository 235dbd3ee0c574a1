"""Configuration of the strong-lensing simulator, its classes, and the check for its extra.

Every number the renderer (:mod:`e2evision.simulate.lensing_render`) uses lives in
:class:`LensingConfig`, so that ``metadata.json`` records the whole recipe of a data set.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Literal

from e2evision.errors import MissingDependencyError

__all__ = [
    "CLASSES",
    "DEFAULT_LENSING_CONFIG",
    "LABELS",
    "LensClass",
    "LensingConfig",
    "MissingExtraError",
]

LensClass = Literal["axion", "cdm", "no_sub"]
CLASSES: tuple[LensClass, ...] = ("axion", "cdm", "no_sub")
LABELS: dict[str, int] = {"axion": 0, "cdm": 1, "no_sub": 2}
"""Public Model I labels; the label is also the class component of every RNG spawn key."""

_INSTALL_HINT = "pip install 'e2evision[sim]'"


#: the optional simulation packages (lenstronomy, astropy) are not installed: the family's one class
MissingExtraError = MissingDependencyError


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
            "pixel_scale_arcsec",
            "z_lens",
            "z_source",
            "h0",
            "omega_m0",
            "main_halo_mass_msun",
            "source_amp",
            "source_r_sersic_arcsec",
            "source_n_sersic",
            "psf_fwhm_arcsec",
            "psf_truncation_sigma",
            "vortex_mass_msun",
            "vortex_velocity_km_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"LensingConfig.{name} must be a finite number > 0, got {value!r}")
        non_negative = (
            "omega_b0",
            "lens_ellipticity",
            "shear_gamma",
            "source_center_range_arcsec",
            "background_rms",
            "cdm_mean_subhalos",
        )
        for name in non_negative:
            value = getattr(self, name)
            if not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"LensingConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("num_pix", "supersampling_factor", "vortex_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LensingConfig.{name} must be an integer >= 1, got {value!r}")
        for name in (
            "log10_exposure_range_s",
            "subhalo_mass_range_msun",
            "subhalo_radius_range_arcsec",
            "log10_axion_mass_range_ev",
        ):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                or value[0] > value[1]
            ):
                raise ValueError(f"LensingConfig.{name} must be a tuple (low, high) with low <= high, got {value!r}")
        if self.subhalo_mass_range_msun[0] <= 0:
            raise ValueError("LensingConfig.subhalo_mass_range_msun must be positive")
        if self.subhalo_radius_range_arcsec[0] < 0:
            raise ValueError("LensingConfig.subhalo_radius_range_arcsec must be >= 0")
        if not math.isfinite(self.subhalo_mass_slope):
            raise ValueError("LensingConfig.subhalo_mass_slope must be finite")
        if not self.z_source > self.z_lens:
            raise ValueError(f"LensingConfig needs z_source > z_lens, got {self.z_source} <= {self.z_lens}")
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


DEFAULT_LENSING_CONFIG = LensingConfig()
"""The DeepLense Model I defaults, shared as the default argument of the simulator's functions
(a frozen dataclass, so one instance serves them all)."""
