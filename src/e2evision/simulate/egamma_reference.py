"""Published CMS anchors for the e/γ simulator, and the simulator's matching quantities.

The reference part is data: every number carries the source it was read from (paper, figure
caption, or public CMS software file) and a note on what it does and does not say. Only
numbers that were found as text are recorded; figures whose curves could not be read are cited
by caption with ``value=None``.

The second part computes, from simulated crops and the simulator's truth, the quantities those
sources talk about: the photon conversion fraction against |η| (all conversions, and those before
85 cm as in the CMS photon paper), R9 = E3×3 / E_crop per class, and σ_iηiη with the CMS
definition (CMSSW ``EcalClusterTools::localCovariances``: 5×5 crystals around the seed,
log weights w = max(0, 4.7 + ln(E_i / E_5×5)) about the *linear* energy-weighted 5×5 mean,
converted to η units by 0.01745 per crystal).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from e2evision.features.shower_shapes import NAMES as _SHAPE_NAMES
from e2evision.features.shower_shapes import shower_shape_features

__all__ = [
    "CRYSTAL_ETA",
    "DEFAULT_ETA_EDGES",
    "EARLY_CONVERSION_RADIUS_CM",
    "FASTSIM_BARREL_LAYERS",
    "FASTSIM_COMPLETE_ETA",
    "FASTSIM_ENDCAP_LAYERS",
    "R9_THRESHOLD",
    "REFERENCES",
    "SIEIE_CUT_BARREL_ELECTRON",
    "W0",
    "EgammaComparison",
    "PublishedReference",
    "cms_fastsim_material_x0",
    "comparison_from_files",
    "egamma_comparison",
    "fit_material_to_fastsim",
    "r9",
    "reference",
    "sigma_ieta_ieta",
    "simulate_comparison",
]

# ------------------------------------------------------------------------------------------------
# reference values (data)

CRYSTAL_ETA = 0.01745
"""Barrel crystal size in η used by CMSSW to express σ_iηiη in η units (1 crystal = 0.01745)."""
W0 = 4.7
"""Default log-weight cut-off w0 of the CMSSW cluster-shape tools."""
R9_THRESHOLD = 0.94
"""R9 boundary CMS uses between unconverted/low-brem and converted/showering e/γ candidates."""
EARLY_CONVERSION_RADIUS_CM = 85.0
"""The CMS photon paper splits photons into conversions before this radius and the rest."""
SIEIE_CUT_BARREL_ELECTRON = 0.010
"""Barrel σ_iηiη cut (η units) of the 2012 CMS cut-based electron identification."""

_CMSSW = "CMS Collaboration, CMSSW (github.com/cms-sw/cmssw)"
_EGM14001 = (
    "CMS Collaboration, 'Performance of photon reconstruction and identification with the CMS "
    "detector in proton-proton collisions at sqrt(s) = 8 TeV', JINST 10 (2015) P08010, "
    "arXiv:1502.02702, CMS-EGM-14-001"
)


@dataclass(frozen=True)
class PublishedReference:
    """One published anchor: a value (or ``None`` when only a caption was found) and its source."""

    key: str
    quantity: str
    value: float | None
    unit: str
    source: str
    where: str
    note: str


REFERENCES: tuple[PublishedReference, ...] = (
    PublishedReference(
        key="r9_conversion_split",
        quantity="R9 = E3x3/E_SC of barrel photons: converted before r = 85 cm vs later/unconverted",
        value=EARLY_CONVERSION_RADIUS_CM,
        unit="cm (the split radius; the histogram values were not read)",
        source=_EGM14001,
        where="Figure 1 (caption on the CMS public-results page EGM-14-001)",
        note="The figure shows the two R9 populations; its bin contents were not available as "
        "text, so only the split radius is recorded. Our comparison uses the same split.",
    ),
    PublishedReference(
        key="r9_threshold",
        quantity="R9 boundary between low-bremsstrahlung (R9 > 0.94) and showering electrons",
        value=R9_THRESHOLD,
        unit="dimensionless",
        source="CMS ECAL DPG, '2015 ECAL detector performance plots', CMS-DP-2015/057 "
        "(twiki CMSPublic/EcalDPGResultsCMSDPS2015057)",
        where="caption 'ECAL energy resolution with Z -> e+e-'",
        note="A category boundary, not a fraction. The same page's E5x5 caption states that the "
        "low tail in the barrel comes from the high fraction of showering electrons at |eta| > 1.",
    ),
    PublishedReference(
        key="sieie_cut_barrel_electron",
        quantity="barrel sigma_ietaieta cut of the 2012 cut-based electron ID (all working points)",
        value=SIEIE_CUT_BARREL_ELECTRON,
        unit="eta units (0.573 crystals)",
        source=_CMSSW + ", EgammaAnalysis/ElectronTools/src/EGammaCutBasedEleId.cc",
        where="VETO/LOOSE/MEDIUM/TIGHT and TRIGGERTIGHT/TRIGGERWP70 working points: "
        "cut_sigmaIEtaIEta = 0.010 (barrel), 0.030 (endcap)",
        note="An identification cut meant to keep prompt electrons (one working point is named "
        "WP70, which by its name targets ~70 % overall efficiency with seven cuts). The "
        "efficiency of this cut alone is not given in the sources found.",
    ),
    PublishedReference(
        key="sieie_definition",
        quantity="sigma_ietaieta definition: 5x5 around the seed, w = max(0, w0 + ln(E/E5x5)), "
        "w0 = 4.7, linear energy-weighted 5x5 mean, times 0.01745 per crystal",
        value=CRYSTAL_ETA,
        unit="eta per barrel crystal",
        source=_CMSSW + ", RecoEcal/EgammaCoreTools/interface/EcalClusterTools.h",
        where="localCovariances(), mean5x5PositionInLocalCrysCoord(), default w0 = 4.7",
        note="The same file uses 2.19 cm as the Moliere radius of PbWO4 in its LAT moment.",
    ),
    PublishedReference(
        key="pbwo4_moliere_radius",
        quantity="Moliere radius of PbWO4 used in CMS cluster-shape code",
        value=2.19,
        unit="cm",
        source=_CMSSW + ", RecoEcal/EgammaCoreTools/interface/EcalClusterTools.h",
        where="lat(): redmoment / (redmoment + 2.19^2 (e1 + e2))",
        note="Our CalorimeterConfig.moliere_radius_cm defaults to 2.0 cm.",
    ),
    PublishedReference(
        key="tracker_material_fastsim",
        quantity="Run-1 tracker material in X0 per layer (radius, z ranges) of the CMS fast "
        "simulation; integrated along a straight track by cms_fastsim_material_x0()",
        value=None,
        unit="X0 (see FASTSIM_BARREL_LAYERS)",
        source=_CMSSW + ", FastSimulation/SimplifiedGeometryPropagator/python/TrackerMaterial_cfi.py",
        where="TrackerMaterialBlock.BarrelLayers / EndcapLayers (base, pre-phase-1 geometry)",
        note="Public CMS software, not a paper figure. Complete for |eta| < 0.88 (barrel layers "
        "only); beyond that the pixel/TID/TEC disks, whose z positions come from the "
        "reconstruction geometry and are not in the file, are missing, so the sum is a lower "
        "bound.",
    ),
    PublishedReference(
        key="tracker_material_data_vs_sim",
        quantity="agreement of tracker material between 2010 data and simulation",
        value=0.10,
        unit="relative ('typically in the 10% range')",
        source="CMS Collaboration, 'Studies of Tracker Material', CMS-PAS-TRK-10-003 (2010)",
        where="abstract (photon conversions and nuclear interactions, 7 TeV)",
        note="Sets the scale to which a material model can be called right.",
    ),
    PublishedReference(
        key="conversion_fraction_vs_eta",
        quantity="fraction of photons converting in the tracker vs eta (single photons, pT = 35 GeV)",
        value=None,
        unit="fraction",
        source="N. Marinelli (for CMS), 'Track finding in gamma conversions in CMS', arXiv:0710.2818",
        where="Figure 1",
        note="Only the existence of the figure was found as text; no values were read.",
    ),
    PublishedReference(
        key="electron_performance_8tev",
        quantity="electron reconstruction, brem-dependent momentum resolution 1.7-4.5 %",
        value=None,
        unit="-",
        source="CMS Collaboration, 'Performance of electron reconstruction and selection with the "
        "CMS detector in proton-proton collisions at sqrt(s) = 8 TeV', JINST 10 (2015) P06005, "
        "arXiv:1502.02701, doi:10.1088/1748-0221/10/06/P06005",
        where="abstract",
        note="Its R9 / sigma_ietaieta figures were not available as text.",
    ),
)


def reference(key: str) -> PublishedReference:
    """The :data:`REFERENCES` entry named ``key``."""
    for ref in REFERENCES:
        if ref.key == key:
            return ref
    raise KeyError(f"no published reference {key!r}; known: {[r.key for r in REFERENCES]}")


# CMS FastSim Run-1 tracker material (TrackerMaterial_cfi.py, base geometry). Barrel layers:
# (radius cm, z boundaries cm, x/X0 at normal incidence in each z range). Radii of the active
# layers are the values the file gives in comments (they are read from the reco geometry).
FASTSIM_BARREL_LAYERS: tuple[tuple[float, tuple[float, ...], tuple[float, ...]], ...] = (
    (3.003, (0.0, 28.3), (0.0024,)),  # beam pipe
    (4.425, (0.0, 28.391), (0.0217,)),  # BPix1
    (7.312, (0.0, 28.391), (0.0217,)),  # BPix2
    (10.177, (0.0, 28.391), (0.0217,)),  # BPix3
    (17.6, (0.0, 27.5, 32.0, 65.0), (0.0135, 0.095, 0.050)),  # pixel outside walls/cables
    (25.767, (0.0, 35.0, 65.254), (0.053, 0.0769)),  # TIB1
    (34.104, (0.0, 35.0, 65.231), (0.053, 0.0769)),  # TIB2
    (41.974, (0.0, 35.0, 66.232), (0.035, 0.0508)),  # TIB3
    (49.907, (0.0, 35.0, 66.355), (0.04, 0.058)),  # TIB4
    (55.1, (0.0, 27.5, 30.5, 72.0, 108.2), (0.009, 0.036, 0.009, 0.0495)),  # TOB inside wall
    (60.937, (0.0, 18.0, 30.0, 36.0, 46.0, 55.0, 108.737), (0.021, 0.06, 0.03, 0.06, 0.03, 0.06)),
    (69.322, (0.0, 18.0, 30.0, 36.0, 46.0, 55.0, 108.737), (0.021, 0.06, 0.03, 0.06, 0.03, 0.06)),
    (
        78.081,
        (0.0, 18.0, 30.0, 36.0, 46.0, 55.0, 108.737),
        (0.0154, 0.044, 0.022, 0.044, 0.022, 0.044),
    ),
    (
        86.876,
        (0.0, 18.0, 30.0, 36.0, 46.0, 55.0, 108.737),
        (0.0154, 0.044, 0.022, 0.044, 0.022, 0.044),
    ),
    (
        96.569,
        (0.0, 18.0, 30.0, 36.0, 46.0, 55.0, 108.737),
        (0.0154, 0.044, 0.022, 0.044, 0.022, 0.044),
    ),
    (
        108.063,
        (0.0, 18.0, 30.0, 36.0, 46.0, 55.0, 108.737),
        (0.0154, 0.044, 0.022, 0.044, 0.022, 0.044),
    ),
    (120.0, (0.0, 120.0, 299.9), (0.042, 0.1596)),  # TOB outside cables and walls
)
# Endcap structures whose z the file states: (z cm, radius boundaries cm, x/X0 along z).
FASTSIM_ENDCAP_LAYERS: tuple[tuple[float, tuple[float, ...], tuple[float, ...]], ...] = (
    (
        28.7,
        (4.2, 5.1, 7.1, 8.2, 10.0, 11.0, 11.9, 16.5),
        (0.100, 0.0, 0.108, 0.0, 0.112, 0.02, 0.04),
    ),
    (28.8, (3.8, 16.5), (0.012,)),
    (65.1, (6.5, 10.0, 11.0, 16.0, 17.61), (0.150, 0.325, 0.250, 0.175)),
    (74.0, (22.5, 53.9), (0.130,)),
    (108.0, (22.0, 24.0, 47.5, 54.943), (0.111, 0.074, 0.185)),
    (115.0, (55.0, 60.0, 62.0, 78.0, 92.0, 111.0), (0.005, 0.009, 0.014, 0.016, 0.009)),
)
FASTSIM_COMPLETE_ETA = 0.88
"""Below this |η| a straight track from the origin crosses only barrel layers (TOB6 ends at
|z| = 108.7 cm), so :func:`cms_fastsim_material_x0` is complete; above it, a lower bound."""


def _layer_value(boundaries: tuple[float, ...], values: tuple[float, ...], where: float) -> float:
    i = int(np.searchsorted(boundaries, where, side="right")) - 1
    return values[i] if 0 <= i < len(values) else 0.0


def cms_fastsim_material_x0(abs_eta: float | Sequence[float], ecal_radius_cm: float = 129.0) -> np.ndarray:
    """Material [X0] a straight track from the origin crosses in the CMS FastSim Run-1 tracker.

    Barrel layers count ``x cosh η`` (path through a cylinder), endcap structures
    ``x cosh η / sinh η`` (path through a disk) when the track meets them inside the ECAL radius.
    Complete below :data:`FASTSIM_COMPLETE_ETA`, a lower bound above (disks without z are missing).
    """
    etas = np.atleast_1d(np.asarray(abs_eta, dtype=np.float64))
    if np.any(~np.isfinite(etas)) or np.any(etas < 0):
        raise ValueError(f"abs_eta must be finite and >= 0, got {abs_eta!r}")
    out = np.zeros_like(etas)
    for k, eta in enumerate(etas):
        sh, ch = math.sinh(eta), math.cosh(eta)
        total = sum(_layer_value(z, x, abs(r * sh)) * ch for r, z, x in FASTSIM_BARREL_LAYERS)
        if sh > 0:
            for z_disk, radii, x in FASTSIM_ENDCAP_LAYERS:
                r_cross = z_disk / sh
                if r_cross < ecal_radius_cm:
                    total += _layer_value(radii, x, r_cross) * ch / sh
        out[k] = total
    return out


# ------------------------------------------------------------------------------------------------
# our quantities


def _energies(crops: np.ndarray) -> np.ndarray:
    """Energy channel ``(N, H, W)`` of crops given as (N, H, W, C) (HDF5 layout) or (N, H, W)."""
    x = np.asarray(crops)
    if x.ndim == 4:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"crops must be (N, H, W, C) with energy first or (N, H, W), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("crops hold NaN or infinite energies")
    return np.clip(x.astype(np.float64), 0.0, None)


def r9(crops: np.ndarray) -> np.ndarray:
    """R9 = E(3×3 around the seed) / E(crop), via :func:`shower_shape_features` (no copy of it).

    The crop total stands in for the supercluster energy E_SC of the CMS definition.
    """
    e = _energies(crops)
    return shower_shape_features(e[:, None])[:, _SHAPE_NAMES.index("r9")]


def sigma_ieta_ieta(crops: np.ndarray, w0: float = W0) -> np.ndarray:
    """σ_iηiη in crystal units with the CMSSW ``localCovariances`` convention.

    5×5 window around the seed (clipped at the crop border), weights w = max(0, w0 + ln(E/E5×5))
    for E > 0, deviations taken from the *linear* energy-weighted 5×5 mean (the shower-shape
    module's ``sigma_ieta`` uses the log-weighted mean instead, which gives slightly smaller
    values on asymmetric showers). Multiply by :data:`CRYSTAL_ETA` for CMS η units. Crops with
    no energy give 0.
    """
    e = _energies(crops)
    n, h, w = e.shape
    flat = e.reshape(n, -1)
    seed = flat.argmax(axis=1)
    ci, cj = seed // w, seed % w
    di = np.arange(h)[None, :, None] - ci[:, None, None]
    dj = np.arange(w)[None, None, :] - cj[:, None, None]
    e5 = np.where((np.abs(di) <= 2) & (np.abs(dj) <= 2), e, 0.0)
    e5_sum = e5.sum(axis=(1, 2))
    safe = np.where(e5_sum > 0, e5_sum, 1.0)[:, None, None]
    mean_i = (e5 * di).sum(axis=(1, 2)) / safe[:, 0, 0]
    with np.errstate(divide="ignore"):
        logw = np.where(e5 > 0, np.maximum(0.0, w0 + np.log(np.where(e5 > 0, e5, 1.0) / safe)), 0.0)
    sw = logw.sum(axis=(1, 2))
    var = (logw * (di - mean_i[:, None, None]) ** 2).sum(axis=(1, 2)) / np.where(sw > 0, sw, 1.0)
    return np.where(sw > 0, np.sqrt(np.clip(var, 0.0, None)), 0.0)


DEFAULT_ETA_EDGES = (0.0, 0.22, 0.44, 0.66, 0.88, 1.16, 1.44)
"""Six |η| bins across the simulated barrel acceptance; the first four end at
:data:`FASTSIM_COMPLETE_ETA`, where the CMS FastSim material sum is complete."""


@dataclass
class EgammaComparison:
    """Our quantities matching :data:`REFERENCES`, from one simulated set.

    ``r9`` and ``sieie`` (σ_iηiη in η units) map class names to per-crop arrays:
    ``photon_early`` (converted before 85 cm), ``photon_late`` (later or unconverted),
    ``photon`` (all) and ``electron``. ``conversion`` holds per-|η|-bin arrays.
    """

    eta_edges: np.ndarray
    conversion: dict[str, np.ndarray]
    r9: dict[str, np.ndarray]
    sieie: dict[str, np.ndarray]
    label: str = "ours"
    config_json: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per class: count, median and mean R9, fraction R9 > 0.94, median σ_iηiη, fraction below
        the electron-ID cut 0.010; plus overall conversion fractions."""
        out: dict[str, dict[str, float]] = {}
        for name, values in self.r9.items():
            s = self.sieie[name]
            out[name] = {
                "n": float(values.size),
                "r9_median": float(np.median(values)) if values.size else math.nan,
                "r9_mean": float(values.mean()) if values.size else math.nan,
                "r9_above_0p94": float((values > R9_THRESHOLD).mean()) if values.size else math.nan,
                "sieie_median": float(np.median(s)) if s.size else math.nan,
                "sieie_below_0p010": float((s < SIEIE_CUT_BARREL_ELECTRON).mean()) if s.size else math.nan,
            }
        n = self.conversion["n"]
        out["conversions"] = {
            "converted": float((self.conversion["converted"] * n).sum() / max(n.sum(), 1)),
            "converted_before_85cm": float((self.conversion["early"] * n).sum() / max(n.sum(), 1)),
        }
        return out

    def to_json(self) -> str:
        """Summary and binned conversion table as JSON (what the docs table is built from)."""
        table = {k: np.asarray(v).tolist() for k, v in self.conversion.items()}
        return json.dumps(
            {
                "label": self.label,
                "eta_edges": self.eta_edges.tolist(),
                "conversion": table,
                "summary": self.summary(),
                "extra": self.extra,
            },
            indent=1,
            sort_keys=True,
        )


def _conversion_table(truth: Mapping[str, np.ndarray], edges: np.ndarray) -> dict[str, np.ndarray]:
    """Per |η| bin: counts, converted fraction, fraction converted before 85 cm, mean material."""
    for key in ("eta", "converted", "conversion_radius_cm", "material_x0"):
        if key not in truth:
            raise ValueError(f"photon truth lacks {key!r} (needs simulate_showers' truth dict)")
    abs_eta = np.abs(np.asarray(truth["eta"], dtype=np.float64))
    conv = np.asarray(truth["converted"], dtype=bool)
    radius = np.asarray(truth["conversion_radius_cm"], dtype=np.float64)
    early = conv & (np.nan_to_num(radius, nan=np.inf) < EARLY_CONVERSION_RADIUS_CM)
    x0 = np.asarray(truth["material_x0"], dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, abs_eta, side="right") - 1, 0, edges.size - 2)
    nb = edges.size - 1
    n = np.bincount(idx, minlength=nb).astype(np.float64)
    safe = np.where(n > 0, n, 1.0)

    def frac(flag: np.ndarray) -> np.ndarray:
        return np.where(n > 0, np.bincount(idx, weights=flag.astype(np.float64), minlength=nb) / safe, np.nan)

    # CMS FastSim material and the conversion probability 1 - exp(-7/9 x) it implies, averaged
    # over a fine |eta| grid inside each bin (the layer structure makes x(eta) step-like).
    fine = np.linspace(0.0, 1.0, 41)
    grid = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * fine[None, :]
    x_cms = cms_fastsim_material_x0(grid.ravel()).reshape(grid.shape)
    return {
        "eta_lo": edges[:-1].copy(),
        "eta_hi": edges[1:].copy(),
        "n": n,
        "converted": frac(conv),
        "early": frac(early),
        "material_x0": frac(x0),
        "cms_fastsim_x0": x_cms.mean(axis=1),
        "cms_fastsim_conversion": (-np.expm1(-7.0 / 9.0 * x_cms)).mean(axis=1),
        "cms_fastsim_complete": (edges[1:] <= FASTSIM_COMPLETE_ETA + 1e-9).astype(np.float64),
    }


def egamma_comparison(
    photon_crops: np.ndarray,
    photon_truth: Mapping[str, np.ndarray],
    electron_crops: np.ndarray,
    label: str = "ours",
    eta_edges: Sequence[float] = DEFAULT_ETA_EDGES,
    config_json: str = "",
) -> EgammaComparison:
    """Our R9, σ_iηiη and conversion fractions for a simulated photon and electron set.

    ``photon_truth`` is the truth dict of :func:`simulate_showers` for the photon crops (the
    HDF5 files do not store it; :func:`comparison_from_files` regenerates it). Crops are
    ``(N, 32, 32, 2)`` as written by ``write_egamma``.
    """
    edges = np.asarray(eta_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"eta_edges must be an increasing sequence of >= 2 values, got {eta_edges!r}")
    n_photon = np.asarray(photon_crops).shape[0]
    if np.asarray(photon_truth.get("eta", [])).shape[0] != n_photon:
        raise ValueError("photon_crops and photon_truth disagree on the number of photons")
    conv = np.asarray(photon_truth["converted"], dtype=bool)
    radius = np.nan_to_num(np.asarray(photon_truth["conversion_radius_cm"], dtype=np.float64), nan=np.inf)
    early = conv & (radius < EARLY_CONVERSION_RADIUS_CM)
    r9_p, r9_e = r9(photon_crops), r9(electron_crops)
    s_p = sigma_ieta_ieta(photon_crops) * CRYSTAL_ETA
    s_e = sigma_ieta_ieta(electron_crops) * CRYSTAL_ETA
    return EgammaComparison(
        eta_edges=edges,
        conversion=_conversion_table(photon_truth, edges),
        r9={
            "photon_early": r9_p[early],
            "photon_late": r9_p[~early],
            "photon": r9_p,
            "electron": r9_e,
        },
        sieie={
            "photon_early": s_p[early],
            "photon_late": s_p[~early],
            "photon": s_p,
            "electron": s_e,
        },
        label=label,
        config_json=config_json,
    )


def simulate_comparison(
    n_per_class: int, seed: int = 5, config: object | None = None, label: str = "ours"
) -> EgammaComparison:
    """Simulate ``n_per_class`` photons and electrons in memory and compare (any config).

    This is how a proposed ``CalorimeterConfig`` is measured without touching the defaults.
    """
    from e2evision.simulate.calorimeter import CalorimeterConfig, simulate_showers

    cfg = CalorimeterConfig() if config is None else config
    if not isinstance(cfg, CalorimeterConfig):
        raise TypeError(f"config must be a CalorimeterConfig, got {type(cfg).__name__}")
    xp, tp = simulate_showers(n_per_class, "photon", seed, cfg)
    xe, te = simulate_showers(n_per_class, "electron", seed, cfg)
    comp = egamma_comparison(xp, tp, xe, label, config_json=cfg.to_json())
    comp.extra["electron_brem_fraction_mean"] = float(np.mean(te["brem_fraction"]))
    return comp


def _read_file(path: Path) -> tuple[np.ndarray, dict[str, object]]:
    import h5py

    with h5py.File(path, "r") as f:
        for key in ("seed", "particle", "config_json", "event_start", "event_stop"):
            if key not in f.attrs:
                raise ValueError(f"{path}: attribute {key!r} missing; not written by write_egamma")
        attrs = {k: f.attrs[k] for k in ("seed", "particle", "config_json", "event_start", "event_stop")}
        return np.asarray(f["X"][...]), attrs


def comparison_from_files(photon_path: str | Path, electron_path: str | Path, label: str = "ours") -> EgammaComparison:
    """Compare the two files of ``e2evision simulate egamma`` with the published anchors.

    The files carry no per-event truth, so the photon truth (η, conversion, radius) is
    regenerated from the seed and config recorded in the file, and the regenerated crops are
    checked to be bit-identical to the stored ones before the truth is trusted.
    """
    from e2evision.simulate.calorimeter import CalorimeterConfig, simulate_showers

    xp, attrs = _read_file(Path(photon_path))
    xe, attrs_e = _read_file(Path(electron_path))
    if str(attrs["particle"]) != "photon" or str(attrs_e["particle"]) != "electron":
        raise ValueError(f"expected a photon then an electron file, got {attrs['particle']!r}, {attrs_e['particle']!r}")
    cfg = CalorimeterConfig.from_json(str(attrs["config_json"]))
    start, stop = int(attrs["event_start"]), int(attrs["event_stop"])
    x_regen, truth = simulate_showers(stop, "photon", int(attrs["seed"]), cfg)
    if not np.array_equal(x_regen[start:stop], xp):
        raise ValueError(
            f"{photon_path}: crops differ from a regeneration with the recorded seed "
            "and config (another simulator version?); its truth cannot be recovered"
        )
    truth = {k: v[start:stop] for k, v in truth.items()}
    return egamma_comparison(xp, truth, xe, label, config_json=cfg.to_json())


def fit_material_to_fastsim(eta_max: float = 1.44, edges: Sequence[float] = DEFAULT_ETA_EDGES) -> dict[str, float]:
    """Grid-fit the simulator's material law x(η) = c + (e − c)(|η|/η_max)^p to CMS FastSim.

    Least squares on the bin-averaged FastSim material where it is complete (|η| < 0.88), under
    the constraint that the model is not below the FastSim lower bound in the outer bins.
    Returns ``material_x0_central``, ``material_x0_edge``, ``material_eta_power`` and the rms
    residual [X0] on the complete bins. ``CalorimeterConfig``'s defaults are this fit's values
    (a test checks that they stay equal).
    """
    e = np.asarray(edges, dtype=np.float64)
    fine = np.linspace(0.0, 1.0, 41)
    grid = e[:-1, None] + (e[1:] - e[:-1])[:, None] * fine[None, :]
    target = cms_fastsim_material_x0(grid.ravel()).reshape(grid.shape).mean(axis=1)
    complete = e[1:] <= FASTSIM_COMPLETE_ETA + 1e-9
    u = np.clip(grid / eta_max, 0.0, 1.0)
    edge_values = np.arange(1.0, 2.601, 0.02)
    powers = np.arange(0.5, 3.001, 0.05)
    shape = (u[None, None] ** powers[None, :, None, None]).mean(axis=-1)  # (1, P, bins)
    best = (math.inf, 0.0, 0.0, 0.0)
    for c in np.arange(0.30, 0.601, 0.01):
        model = c + (edge_values[:, None, None] - c) * shape  # (E, P, bins)
        ok = np.all(model[..., ~complete] >= target[~complete], axis=-1)
        rms = np.sqrt(np.mean((model[..., complete] - target[complete]) ** 2, axis=-1))
        rms = np.where(ok, rms, np.inf)
        i, j = np.unravel_index(int(np.argmin(rms)), rms.shape)
        if rms[i, j] < best[0] - 1e-12:
            best = (float(rms[i, j]), float(c), float(edge_values[i]), float(powers[j]))
    if not math.isfinite(best[0]):
        raise ValueError("no material law on the search grid satisfies the FastSim lower bounds")
    return {
        "material_x0_central": round(best[1], 2),
        "material_x0_edge": round(best[2], 2),
        "material_eta_power": round(best[3], 2),
        "rms_x0": best[0],
    }
