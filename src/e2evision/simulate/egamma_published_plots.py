"""Our e/γ simulation beside the published CMS anchors of :mod:`egamma_reference`.

``published_comparison_figure`` draws one PNG with six panels: tracker material and photon
conversion probability against |η| (ours vs the CMS FastSim material model), R9 of photons
split at 85 cm as in the CMS photon paper's Figure 1, R9 of electrons with the 0.94 category
boundary, and σ_iηiη of photons and electrons with the 2012 barrel electron-ID cut at 0.010.
Several comparisons (the default and proposed configs) overlay, the first drawn solid.

``published_plots_from_files`` is what ``simulate egamma --plots`` can call on the two files it
wrote; ``run_published_comparison`` simulates in memory (any ``CalorimeterConfig``) and writes
the figure plus a JSON summary, which is how proposals are measured without touching defaults.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.simulate.egamma_reference import (
    CRYSTAL_ETA,
    R9_THRESHOLD,
    SIEIE_CUT_BARREL_ELECTRON,
    EgammaComparison,
    comparison_from_files,
    simulate_comparison,
)
from e2evision.utils.io import atomic_path

__all__ = ["published_comparison_figure", "published_plots_from_files", "run_published_comparison"]

_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange")
_FIGURE_NAME = "egamma_published_comparison.png"


def _step(ax: Any, comp: EgammaComparison, key: str, colour: str, style: str, label: str) -> None:
    t = comp.conversion
    x = np.append(t["eta_lo"], t["eta_hi"][-1])
    y = np.append(t[key], t[key][-1])
    ax.step(x, y, where="post", color=colour, ls=style, lw=1.6, label=label)


def _cms_points(ax: Any, comp: EgammaComparison, key: str) -> None:
    """CMS FastSim values: filled where complete, open with an up-arrow where a lower bound."""
    t = comp.conversion
    centre = 0.5 * (t["eta_lo"] + t["eta_hi"])
    complete = t["cms_fastsim_complete"] > 0.5
    ax.plot(centre[complete], t[key][complete], "ko", ms=5, label="CMS FastSim material (Run 1)")
    if np.any(~complete):
        ax.plot(
            centre[~complete],
            t[key][~complete],
            "k^",
            mfc="none",
            ms=7,
            label="CMS FastSim, lower bound",
        )


def _hist(
    ax: Any,
    values: np.ndarray,
    bins: np.ndarray,
    colour: str,
    style: str,
    label: str,
    filled: bool = False,
) -> None:
    if values.size == 0:
        return
    clipped = np.clip(values, bins[0], bins[-1] - 1e-9)
    if filled:
        ax.hist(clipped, bins=bins, density=True, color=colour, alpha=0.25, label=label)
    else:
        ax.hist(
            clipped,
            bins=bins,
            density=True,
            histtype="step",
            color=colour,
            ls=style,
            lw=1.5,
            label=label,
        )


def _draw_set(ax: Any, comp: EgammaComparison, k: int, r9_bins: np.ndarray, s_bins: np.ndarray) -> None:
    """One simulated set's six distributions, in the k-th colour (the first one filled)."""
    colour, style = _COLOURS[k % len(_COLOURS)], "-" if k == 0 else "--"
    _step(ax[0, 0], comp, "material_x0", colour, style, f"{comp.label}: x(|η|)")
    _step(ax[0, 1], comp, "converted", colour, style, f"{comp.label}: all conversions")
    _step(ax[0, 1], comp, "early", colour, ":", f"{comp.label}: before 85 cm")
    _hist(
        ax[0, 2],
        comp.r9["photon_early"],
        r9_bins,
        colour,
        style,
        f"{comp.label}: converted < 85 cm",
        filled=k == 0,
    )
    _hist(
        ax[0, 2],
        comp.r9["photon_late"],
        r9_bins,
        colour,
        style,
        f"{comp.label}: later / unconverted",
    )
    _hist(ax[1, 0], comp.r9["electron"], r9_bins, colour, style, f"{comp.label}: electrons")
    _hist(
        ax[1, 1],
        comp.sieie["photon_late"],
        s_bins,
        colour,
        style,
        f"{comp.label}: later / unconv.",
    )
    _hist(
        ax[1, 1],
        comp.sieie["photon_early"],
        s_bins,
        colour,
        ":",
        f"{comp.label}: conv. < 85 cm",
    )
    _hist(ax[1, 2], comp.sieie["electron"], s_bins, colour, style, f"{comp.label}: electrons")


def _dress_axes(ax: Any, first: EgammaComparison) -> None:
    """The CMS points, the published cut lines, labels, titles and legends."""
    _cms_points(ax[0, 0], first, "cms_fastsim_x0")
    _cms_points(ax[0, 1], first, "cms_fastsim_conversion")
    for a in (ax[0, 2], ax[1, 0]):
        a.axvline(R9_THRESHOLD, color="k", ls="-.", lw=1, label="CMS category boundary 0.94")
        a.set_xlabel("R9 = E3×3 / E(crop)")
        a.set_ylabel("density")
    for a in (ax[1, 1], ax[1, 2]):
        a.axvline(
            SIEIE_CUT_BARREL_ELECTRON,
            color="k",
            ls="-.",
            lw=1,
            label="2012 barrel electron-ID cut 0.010",
        )
        a.set_xlabel(f"σ_iηiη [η units; 1 crystal = {CRYSTAL_ETA}]")
        a.set_ylabel("density")
    ax[0, 0].set(xlabel="|η|", ylabel="tracker material [X0]", title="material in front of the ECAL")
    ax[0, 1].set(xlabel="|η|", ylabel="fraction of photons", title="photon conversions (CMS: 1 − e^(−7x/9))")
    ax[0, 2].set_title("photons: R9 (CMS-EGM-14-001 Fig. 1 split)")
    ax[1, 0].set_title("electrons: R9")
    ax[1, 1].set_title("photons: σ_iηiη (CMSSW definition)")
    ax[1, 2].set_title("electrons: σ_iηiη")
    for a in ax.ravel():
        a.legend(fontsize=6.5, loc="upper left", framealpha=0.7)


def published_comparison_figure(comparisons: Sequence[EgammaComparison], out_path: str | os.PathLike[str]) -> Path:
    """Write the six-panel comparison PNG for one or more simulated sets; returns its path."""
    from matplotlib.figure import Figure

    comps = list(comparisons)
    if not comps:
        raise ValueError("need at least one EgammaComparison to plot")
    fig = Figure(figsize=(15.0, 8.6))
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.07, top=0.93, wspace=0.25, hspace=0.33)
    ax = fig.subplots(2, 3)
    r9_bins = np.linspace(0.3, 1.02, 73)
    s_bins = np.linspace(0.004, 0.016, 49)
    for k, comp in enumerate(comps):
        _draw_set(ax, comp, k, r9_bins, s_bins)
    _dress_axes(ax, comps[0])
    fig.suptitle("e/γ simulator vs published CMS anchors (sources: docs/simulation.md)", fontsize=11)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out


def published_plots_from_files(
    photon_path: str | os.PathLike[str],
    electron_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
) -> list[Path]:
    """Figure and JSON summary for the two files of ``simulate egamma`` (for ``--plots``)."""
    comp = comparison_from_files(photon_path, electron_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "egamma_published_comparison.json"
    with atomic_path(summary) as tmp:
        Path(tmp).write_text(comp.to_json())
    return [published_comparison_figure([comp], out / _FIGURE_NAME), summary]


def run_published_comparison(
    out_dir: str | os.PathLike[str],
    n_per_class: int = 2000,
    seed: int = 5,
    proposals: Mapping[str, object] | None = None,
) -> tuple[list[Path], list[EgammaComparison]]:
    """Simulate the default config and each proposed ``CalorimeterConfig`` in memory, compare.

    Writes ``egamma_published_comparison.png`` (all sets overlaid) and a JSON with every set's
    summary. The defaults in ``calorimeter.py`` are untouched: proposals are passed in.
    """
    comps = [simulate_comparison(n_per_class, seed, None, "default")]
    for name, cfg in (proposals or {}).items():
        comps.append(simulate_comparison(n_per_class, seed, cfg, name))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "egamma_published_comparison.json"
    payload = {c.label: json.loads(c.to_json()) for c in comps}
    for c in comps:
        payload[c.label]["config_json"] = json.loads(c.config_json)
    with atomic_path(summary) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=1, sort_keys=True))
    return [published_comparison_figure(comps, out / _FIGURE_NAME), summary], comps
