"""Configuration of the parametric e/gamma simulator: every number it uses, in one record.

Kept apart from the physics (:mod:`e2evision.simulate.calorimeter_tracker`,
:mod:`e2evision.simulate.calorimeter_showers`) because the jet detector response reuses the same
shower parametrisation and reads these numbers too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_CALORIMETER_CONFIG", "CalorimeterConfig", "Particle"]

Particle = Literal["electron", "photon"]


@dataclass(frozen=True)
class CalorimeterConfig:
    """Every number the simulation uses, recorded as JSON in each output file.

    Defaults describe the CMS barrel ECAL and tracker during Run 1 (the period of the public
    files). Changing any field changes the generated events; ``block_size`` included, because it
    fixes how random streams are assigned to events.
    """

    # --- kinematics of the particle gun -------------------------------------------------------
    pt_gev: float = 50.0
    """Transverse momentum of every generated particle (the public samples are fixed pT 50)."""
    eta_max: float = 1.44
    """|eta| is uniform in [0, eta_max): the barrel acceptance (crystals end at 1.479)."""

    # --- ECAL geometry and PbWO4 material -------------------------------------------------------
    crop_size: int = 32
    """Crop side in crystals (public crops are 32 x 32)."""
    crystal_size_cm: float = 2.2
    """Front-face size of a barrel crystal; the shower's lateral scale in crystal units."""
    crystal_dphi_rad: float = 2.0 * math.pi / 360.0
    """Angular size of one crystal in phi (and in eta): 360 crystals around the barrel."""
    radiation_length_cm: float = 0.89
    moliere_radius_cm: float = 2.0
    depth_x0: float = 25.8
    """Crystal length (23 cm) in radiation lengths; energy deposited deeper leaks out the back."""
    z_eff: float = 68.3
    """Mass-weighted effective Z of PbWO4, used by the GFlash parametrisation."""
    critical_energy_gev: float = 0.00875
    """Rossi critical energy of PbWO4, 2.66 (X0 Z/A)^1.1 MeV as in GFlash; sets y = E/Ec."""
    crystal_tilt_deg: float = 3.0
    """Crystal axes point 3 deg off the vertex (in eta and phi) to avoid cracks, which shifts the
    shower laterally with depth."""

    # --- magnetic field and tracker material ----------------------------------------------------
    b_field_t: float = 3.8
    ecal_radius_m: float = 1.29
    """Radius of the ECAL barrel front face."""
    tracker_inner_radius_m: float = 0.04
    tracker_outer_radius_m: float = 1.10
    """Tracker material is taken uniform in radius between these two radii."""
    material_x0_central: float = 0.46
    """Tracker material in front of the ECAL at eta = 0, in radiation lengths. The three material
    parameters are ``egamma_reference.fit_material_to_fastsim()``: the law fitted to CMS FastSim's
    Run-1 tracker material (docs/simulation.md); before 2026-12-05 they were 0.4, 1.4 and 1.5,
    which left the barrel end below FastSim's lower bound."""
    material_x0_edge: float = 1.76
    """Tracker material at |eta| = eta_max (the barrel end), in radiation lengths."""
    material_eta_power: float = 2.0
    """x(eta) = central + (edge - central) * (|eta| / eta_max) ** power."""
    n_brem_slabs: int = 8
    """Radial slabs in which brem is sampled; each emits (at most) one collinear photon bundle, so
    this sets how finely the brem photons are spread along the bending trajectory."""
    secondary_conversions: bool = True
    """Let brem photons convert in the tracker material left after their emission (their e+e-
    legs bend apart but do not radiate again). At pT = 50 GeV the electron itself bends by less
    than one crystal, so these soft, strongly bending pairs are a main source of electron phi
    spread; switch off for a brem-only picture."""
    electron_charge: int = 0
    """Charge of the electron gun: -1, +1, or 0 for a random sign per event (default, as the
    public images show brem on both sides)."""

    # --- Grindhammer-Peters longitudinal profile (homogeneous media; Geant4 GFlash tuning) -------
    gp_tmax_offset: float = -0.812
    """<ln T> = ln(ln y + offset), T the depth of the shower maximum in X0."""
    gp_alpha: tuple[float, float, float] = (0.81, 0.458, 2.26)
    """<ln alpha> = ln(a1 + (a2 + a3 / Z) ln y)."""
    gp_sigma_log_tmax: tuple[float, float] = (-1.4, 1.26)
    """sigma(ln T) = 1 / (s1 + s2 ln y): the fluctuation of the shower maximum."""
    gp_sigma_log_alpha: tuple[float, float] = (-0.58, 0.86)
    gp_rho: tuple[float, float] = (0.705, -0.023)
    """Correlation of ln T and ln alpha: rho = r1 + r2 ln y."""
    gp_min_log_y: float = 3.0
    """ln y is clipped from below (E >~ 0.18 GeV) where the fit's sigmas would diverge; soft
    brem photons simply get the shape of a 0.18 GeV shower."""
    photon_conversion_length_x0: float = 9.0 / 7.0
    """Photons start showering after an exponential depth with this mean (in X0)."""

    # --- GFlash lateral profile, radii in Moliere units, tau = t / T ----------------------------
    gflash_core_radius: tuple[float, float, float, float] = (0.0251, 0.00319, 0.1162, -0.000381)
    """R_C = z1 + z2 tau; z1 = c1 + c2 ln E, z2 = c3 + c4 Z."""
    gflash_tail_radius: tuple[float, float, float, float, float, float] = (
        0.659,
        -0.00309,
        0.645,
        -2.59,
        0.3585,
        0.0412,
    )
    """R_T = k1 (exp(k3 (tau - k2)) + exp(k4 (tau - k2))); k1 = t1 + t2 Z, k2, k3,
    k4 = t5 + t6 ln E."""
    gflash_core_weight: tuple[float, float, float, float, float, float] = (
        2.632,
        -0.00094,
        0.401,
        0.00187,
        1.313,
        -0.0686,
    )
    """p = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3)); p1 = c1 + c2 Z, p2 = c3 + c4 Z,
    p3 = c5 + c6 ln E."""

    # --- spot sampling --------------------------------------------------------------------------
    spot_energy_gev: float = 0.05
    """Energy per spot. GFlash uses ~4 MeV spots at 50 GeV; larger spots are faster and slightly
    exaggerate lateral fluctuations. A single spot in a tail crystal stays below the zero-
    suppression threshold, so isolated tail hits are not artificially created."""
    max_spots_per_shower: int = 4000
    min_shower_energy_gev: float = 0.001
    """Particles below this energy are dropped (their energy counts as lost)."""

    # --- readout ------------------------------------------------------------------------------
    stochastic_term: float = 0.028
    """a in sigma/E = a / sqrt(E/GeV); applied per crystal as a sqrt(E_i) so that the sum over
    crystals has exactly this resolution."""
    constant_term: float = 0.003
    """Per-crystal intercalibration spread (relative)."""
    noise_gev: float = 0.040
    """Gaussian electronic noise per crystal."""
    zero_suppression_sigma: float = 3.0
    """Crystals with measured energy below this many noise sigmas are read out as 0."""
    time_noise_term_ns: float = 35.0
    """sigma_t = N sigma_noise / A (+) C, with A the hit amplitude."""
    time_constant_term_ns: float = 0.07

    # --- bookkeeping ----------------------------------------------------------------------------
    block_size: int = 256
    """Events per independent random stream; fixes determinism under chunking and sharding."""

    def __post_init__(self) -> None:
        positive = (
            "pt_gev",
            "eta_max",
            "crystal_size_cm",
            "crystal_dphi_rad",
            "radiation_length_cm",
            "moliere_radius_cm",
            "depth_x0",
            "z_eff",
            "critical_energy_gev",
            "b_field_t",
            "ecal_radius_m",
            "spot_energy_gev",
            "noise_gev",
            "photon_conversion_length_x0",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"CalorimeterConfig.{name} must be a finite number > 0, got {value!r}")
        non_negative = (
            "material_x0_central",
            "material_x0_edge",
            "stochastic_term",
            "constant_term",
            "zero_suppression_sigma",
            "time_noise_term_ns",
            "time_constant_term_ns",
            "min_shower_energy_gev",
            "material_eta_power",
        )
        for name in non_negative:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"CalorimeterConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("crop_size", "n_brem_slabs", "max_spots_per_shower", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CalorimeterConfig.{name} must be an integer >= 1, got {value!r}")
        if self.crop_size % 2:
            raise ValueError(f"CalorimeterConfig.crop_size must be even, got {self.crop_size}")
        if not 0.0 < self.tracker_inner_radius_m < self.tracker_outer_radius_m < self.ecal_radius_m:
            raise ValueError(
                "CalorimeterConfig needs 0 < tracker_inner_radius_m < tracker_outer_radius_m < "
                f"ecal_radius_m, got {self.tracker_inner_radius_m}, {self.tracker_outer_radius_m}, "
                f"{self.ecal_radius_m}"
            )
        if self.electron_charge not in (-1, 0, 1):
            raise ValueError(f"CalorimeterConfig.electron_charge must be -1, 0 or +1, got {self.electron_charge!r}")
        if self.eta_max > 1.479:
            raise ValueError(f"CalorimeterConfig.eta_max={self.eta_max} is beyond the ECAL barrel edge (1.479)")

    def to_json(self) -> str:
        """JSON of every field, stored in each file so that a data set documents its own recipe."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CalorimeterConfig:
        """Rebuild the config recorded in a file (tuples come back from JSON lists)."""
        raw = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown CalorimeterConfig fields in JSON: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


DEFAULT_CALORIMETER_CONFIG = CalorimeterConfig()
"""The defaults (CMS barrel ECAL, Run 1), shared as the default argument of the simulator's
functions (a frozen dataclass, so one instance serves them all)."""
