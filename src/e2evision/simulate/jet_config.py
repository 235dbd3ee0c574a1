"""Configuration of the jet simulators: every number they use, per data set.

:class:`JetSimConfig` is stored as JSON in each file's metadata so that a data set documents its
own recipe; :func:`jet_config` gives the defaults of one data set.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from e2evision.simulate.response import ResponseConfig

__all__ = ["JET_DATASETS", "JetDataset", "JetSimConfig", "jet_config"]

JetDataset = Literal["quark-gluon", "top", "top-mass"]
JET_DATASETS: tuple[str, ...] = ("quark-gluon", "top", "top-mass")


@dataclass(frozen=True)
class JetSimConfig:
    """Every number the jet simulation uses; stored as JSON in each file's metadata.

    Build it with :func:`jet_config` to get the defaults of a dataset. ``block_size`` fixes how
    random streams are assigned to jets, so it changes the generated rows like any physics knob.
    """

    dataset: str = "quark-gluon"
    # --- event generation ----------------------------------------------------------------------
    ecm_gev: float = 13000.0
    pthat_min_gev: float = 70.0
    pthat_max_gev: float = 100.0
    """Upper end of the pT-hat window; <= 0 means no upper limit."""
    mpi: bool = True
    """Multiparton interactions (the underlying event). Off is ~10x faster but unrealistic."""
    top_mass_range_gev: tuple[float, float] = (120.0, 230.0)
    """top-mass only: the top mass is spread over this range (Pythia's 6:mMin / 6:mMax)."""
    top_mass_width_gev: float = 1000.0
    """top-mass only: forced Breit-Wigner width of the top. Far wider than the range, so the mass
    is nearly flat in it before PDFs and phase space; the target is each top's generated mass."""
    extra_pythia: tuple[str, ...] = ()
    """Further ``readString`` lines, applied last (e.g. a tune)."""
    # --- jets ----------------------------------------------------------------------------------
    jet_radius: float = 0.4
    particle_eta_max: float = 2.5
    """Visible final-state particles beyond this |eta| (the tracker acceptance) are dropped."""
    jet_eta_max: float = 2.1
    """Leading jet must have |eta| below this (default 2.5 - R: the whole cone in acceptance)."""
    jet_pt_min_gev: float = 20.0
    top_match_dr: float = 0.6
    """top / top-mass: a top jet must lie within this Delta R of a top quark (<= 0: no check)."""
    top_contained: bool = True
    """top / top-mass: the matched top's decay quarks (b, q, q') must all lie within jet_radius
    of the jet axis, so that the jet holds the whole top decay (and its mass tracks the top's)."""
    image_particles: str = "constituents"
    """``constituents``: the leading jet's constituents; ``window``: every visible particle of
    the event that lands in the image (underlying event and neighbours included)."""
    # --- image and detector ----------------------------------------------------------------------
    image_size: int = 125
    b_field_t: float = 3.8
    """Solenoid field: bends charged particles before the calorimeters and pixel layers."""
    ecal_radius_mm: float = 1290.0
    ecal_endcap_z_mm: float = 3150.0
    hcal_radius_mm: float = 1800.0
    hcal_endcap_z_mm: float = 3900.0
    hcal_tower: int = 5
    """HCAL towers are this many crystals square; 1 keeps HCAL at crystal granularity."""
    smear: bool = True
    """Calorimeter energy (per particle, without ``response``) and track impact-parameter
    resolution."""
    ecal_resolution: tuple[float, float] = (0.03, 0.005)
    """(stochastic a, constant c): sigma/E = a / sqrt(E/GeV) (+) c, per particle."""
    hcal_resolution: tuple[float, float] = (1.0, 0.05)
    ecal_threshold_gev: float = 0.1
    """Zero suppression without ``response``: ECAL pixels with E_T below this are 0."""
    hcal_threshold_gev: float = 0.5
    """Zero suppression without ``response``: HCAL towers with E_T below this are 0."""
    track_pt_min_gev: float = 0.0
    track_max_vertex_radius_mm: float = 300.0
    """Charged particles produced further out than this (late V0 decays) leave no track."""
    d0_resolution_mm: tuple[float, float] = (0.02, 0.08)
    """sigma(d0) = a (+) b / (pT/GeV), mm."""
    dz_resolution_mm: tuple[float, float] = (0.03, 0.12)
    pixel_layer_radii_mm: tuple[float, ...] = (44.0, 73.0, 102.0)
    """BPIX1-3 radii (CMS Run 1 barrel pixels)."""
    pixel_half_length_mm: float = 265.0
    response: ResponseConfig | None = field(default_factory=ResponseConfig)
    """Detector response (pile-up, shower spread, per-cell resolution, noise and zero
    suppression; :mod:`e2evision.simulate.response`). It replaces the per-particle calorimeter
    smearing and the two thresholds above. ``None``: the generator-level images."""
    # --- bookkeeping ---------------------------------------------------------------------------
    block_size: int = 32

    def __post_init__(self) -> None:
        if self.dataset not in JET_DATASETS:
            raise ValueError(f"JetSimConfig.dataset must be one of {JET_DATASETS}, got {self.dataset!r}")
        positive = (
            "ecm_gev",
            "pthat_min_gev",
            "jet_radius",
            "particle_eta_max",
            "jet_eta_max",
            "ecal_radius_mm",
            "ecal_endcap_z_mm",
            "hcal_radius_mm",
            "hcal_endcap_z_mm",
            "top_mass_width_gev",
            "pixel_half_length_mm",
            "track_max_vertex_radius_mm",
        )
        for name in positive:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                raise ValueError(f"JetSimConfig.{name} must be a finite number > 0, got {value!r}")
        non_negative = ("jet_pt_min_gev", "b_field_t", "ecal_threshold_gev", "hcal_threshold_gev", "track_pt_min_gev")
        for name in non_negative:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ValueError(f"JetSimConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("image_size", "hcal_tower", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"JetSimConfig.{name} must be an integer >= 1, got {value!r}")
        if self.image_size % 2 == 0:
            raise ValueError(f"JetSimConfig.image_size must be odd (centred on the jet), got {self.image_size}")
        if 360 % self.hcal_tower:
            raise ValueError(f"JetSimConfig.hcal_tower must divide 360, got {self.hcal_tower}")
        if self.pthat_max_gev > 0 and self.pthat_max_gev <= self.pthat_min_gev:
            raise ValueError(
                f"JetSimConfig.pthat_max_gev ({self.pthat_max_gev}) must exceed pthat_min_gev "
                f"({self.pthat_min_gev}), or be <= 0 for no upper limit"
            )
        lo, hi = self.top_mass_range_gev
        if not 85.0 <= lo < hi:
            raise ValueError(
                "JetSimConfig.top_mass_range_gev must be (lo, hi) with 85 <= lo < hi "
                f"(below m_W + m_b ~ 85 GeV t -> W b is closed), got {self.top_mass_range_gev}"
            )
        if self.image_particles not in ("constituents", "window"):
            raise ValueError(
                f"JetSimConfig.image_particles must be 'constituents' or 'window', got {self.image_particles!r}"
            )
        for name in ("ecal_resolution", "hcal_resolution", "d0_resolution_mm", "dz_resolution_mm"):
            value = getattr(self, name)
            if len(value) != 2 or any(not (math.isfinite(v) and v >= 0) for v in value):
                raise ValueError(f"JetSimConfig.{name} must be two finite numbers >= 0, got {value!r}")
        if not self.pixel_layer_radii_mm or any(r <= 0 for r in self.pixel_layer_radii_mm):
            raise ValueError(f"JetSimConfig.pixel_layer_radii_mm must be radii > 0, got {self.pixel_layer_radii_mm}")
        if any(not isinstance(s, str) for s in self.extra_pythia):
            raise ValueError("JetSimConfig.extra_pythia must be a tuple of strings")
        if self.response is not None and not isinstance(self.response, ResponseConfig):
            raise ValueError(
                f"JetSimConfig.response must be a ResponseConfig or None, got {type(self.response).__name__}"
            )

    def to_json(self) -> str:
        """Every field as JSON, stored in the files so that a data set documents its recipe."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JetSimConfig:
        """Rebuild a config recorded in a file (JSON lists come back as tuples)."""
        raw = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown JetSimConfig fields in JSON: {unknown}")
        if isinstance(raw.get("response"), dict):
            raw["response"] = ResponseConfig.from_dict(raw["response"])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "quark-gluon": dict(pthat_min_gev=70.0, pthat_max_gev=100.0, jet_radius=0.4, jet_eta_max=2.1, jet_pt_min_gev=20.0),
    "top": dict(pthat_min_gev=400.0, pthat_max_gev=-1.0, jet_radius=0.8, jet_eta_max=1.7, jet_pt_min_gev=200.0),
    "top-mass": dict(pthat_min_gev=400.0, pthat_max_gev=-1.0, jet_radius=0.8, jet_eta_max=1.7, jet_pt_min_gev=200.0),
}


def jet_config(dataset: str, **overrides: Any) -> JetSimConfig:
    """The default configuration of ``dataset``, with ``overrides`` (any JetSimConfig field)."""
    if dataset not in JET_DATASETS:
        raise ValueError(f"dataset must be one of {JET_DATASETS}, got {dataset!r}")
    return JetSimConfig(**{"dataset": dataset, **_DATASET_DEFAULTS[dataset], **overrides})
