"""Validation of the jet detector response: the same jets with and without it, per class.

``e2evision simulate quark-gluon|top|top-mass --plots DIR`` calls
:func:`response_validation_plots`, which simulates up to 100 jets twice from the same seed (so
the hard-scatter jets are identical and only the response differs) and draws, per class, the
ECAL occupancy, the hottest-pixel fraction, the ECAL noise spectrum far from the jet (with the
pure-noise expectation) and the pile-up energy density.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from e2evision.simulate.pixelate import CRYSTAL_DETA, pixel_offsets
from e2evision.utils.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["response_statistics", "response_validation_plots"]

_FAR_MARGIN = 0.2  # "far from the jet": Delta R > jet radius + this


def response_statistics(
    images: np.ndarray, jet_eta: np.ndarray, channels: tuple[str, ...], jet_radius: float
) -> dict[str, np.ndarray]:
    """Per-jet figures of the calorimeter channels of ``images`` ``(N, C, S, S)``.

    ``ecal_nonzero`` (pixels), ``hottest_fraction`` (largest ECAL pixel / ECAL sum),
    ``pileup_density`` (ECAL + HCAL E_T per unit eta-phi area beyond Delta R = R + 0.2 from the
    jet axis, GeV), ``far_energy`` (energies of the non-zero ECAL pixels there, GeV, flat) and
    ``far_pixels`` (how many ECAL pixels lie there per jet).
    """
    ecal = images[:, channels.index("ecal")]
    hcal = images[:, channels.index("hcal")]
    size = ecal.shape[-1]
    d_eta, d_phi = pixel_offsets(size)
    far = np.hypot(d_eta, d_phi) > jet_radius + _FAR_MARGIN
    area = far.sum() * CRYSTAL_DETA * (2.0 * math.pi / 360.0)
    total = ecal.sum(axis=(1, 2))
    hottest = ecal.reshape(len(ecal), -1).max(axis=1)
    row_eta = (np.floor(jet_eta / CRYSTAL_DETA)[:, None] - size // 2 + np.arange(size) + 0.5) * CRYSTAL_DETA
    energy = ecal * np.cosh(row_eta)[:, :, None]
    far_e = energy[:, far]
    return {
        "ecal_nonzero": (ecal > 0).sum(axis=(1, 2)),
        "hottest_fraction": np.where(total > 0, hottest / np.where(total > 0, total, 1.0), 0.0),
        "pileup_density": (ecal[:, far].sum(axis=1) + hcal[:, far].sum(axis=1)) / area,
        "far_energy": far_e[far_e > 0],
        "far_pixels": np.full(len(ecal), int(far.sum())),
    }


_STYLE = {"without": {"ls": "--", "color": "tab:gray"}, "with": {"ls": "-", "color": "tab:red"}}
# per setting ("without", "with") and class index: the figures of response_statistics
_Stats = dict[str, dict[int, dict[str, np.ndarray]]]


def _paired_statistics(dataset: str, config: Any, resp: Any, seed: int, n: int, workers: int) -> _Stats:
    """Simulate the same ``n`` jets without and with the response; their statistics per class."""
    from e2evision.simulate.jets import jet_class_names, simulate_jets

    samples = {
        "without": simulate_jets(dataset, n, seed, dataclasses.replace(config, response=None), workers=workers),
        "with": simulate_jets(dataset, n, seed, dataclasses.replace(config, response=resp), workers=workers),
    }
    n_classes = len(jet_class_names(dataset))
    stats: _Stats = {}
    for key, s in samples.items():
        cls = s.truth["class_index"]
        stats[key] = {
            c: response_statistics(s.images[cls == c], s.truth["eta"][cls == c], s.channels, config.jet_radius)
            for c in range(n_classes)
            if np.any(cls == c)
        }
    return stats


def _per_class_figure(
    dataset: str,
    names: tuple[str, ...],
    stats: _Stats,
    xlabel: str,
    draw: Any,
    logx: bool = False,
    logy: bool = False,
) -> Figure:
    """One panel per class, ``draw(ax, class_index)`` filling each, response off and on."""
    from matplotlib.figure import Figure

    classes = sorted(stats["with"])
    fig = Figure(figsize=(5.0 * len(classes), 4.0))
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.14, top=0.88, wspace=0.25)
    axes = fig.subplots(1, len(classes), squeeze=False)[0]
    for ax, c in zip(axes, classes):
        draw(ax, c)
        ax.set_title(f"{names[c]} (N={len(stats['with'][c]['ecal_nonzero'])})", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_xscale("log" if logx else "linear")
        ax.set_yscale("log" if logy else "linear")
        ax.legend(fontsize=7)
    fig.suptitle(f"{dataset}: detector response off (dashed) and on (solid), same jets", fontsize=10)
    return fig


def _histogram_drawer(stats: _Stats, key: str, bins: np.ndarray, fmt: str) -> Any:
    """A panel drawer: the per-jet figure ``key`` without and with the response."""

    def draw(ax: Any, c: int) -> None:
        for which in ("without", "with"):
            v = np.asarray(stats[which][c][key], dtype=np.float64)
            ax.hist(
                np.clip(v, bins[0], bins[-1]),
                bins=bins,
                histtype="step",
                lw=1.5,
                label=f"{which} (mean {v.mean():{fmt}})",
                **_STYLE[which],
            )
        ax.set_ylabel("jets")

    return draw


def _spectrum_drawer(stats: _Stats, resp: Any, edges: np.ndarray) -> Any:
    """A panel drawer: ECAL pixel energies far from the jet, with the pure-noise expectation."""

    def draw(ax: Any, c: int) -> None:
        for which in ("without", "with"):
            st = stats[which][c]
            counts, _ = np.histogram(st["far_energy"], bins=edges)
            ax.stairs(counts / len(st["ecal_nonzero"]), edges, lw=1.5, label=which, **_STYLE[which])
        st = stats["with"][c]
        from scipy.stats import norm

        sigma, thr = resp.ecal_noise_gev, resp.ecal_threshold_gev
        lo = np.maximum(edges[:-1], thr)
        tail = np.clip(norm.sf(lo / sigma) - norm.sf(edges[1:] / sigma), 0.0, None)
        expect = st["far_pixels"][0] * tail
        ax.stairs(
            np.where(edges[1:] > thr, expect, 0.0),
            edges,
            color="k",
            lw=1.0,
            ls=":",
            label=f"noise alone ({sigma * 1e3:.0f} MeV, threshold {thr * 1e3:.0f} MeV)",
        )
        ax.set_ylabel("ECAL pixels per jet")
        ax.set_ylim(bottom=1e-3)

    return draw


def response_validation_plots(
    dataset: str,
    config: Any,
    seed: int,
    out_dir: str | os.PathLike[str],
    n: int = 100,
    workers: int = 1,
) -> list[Path]:
    """Simulate ``n`` jets with and without the response and write four PNGs; returns the paths.

    ``config`` is the run's ``JetSimConfig``; without a response in it, the default one is shown.
    """
    from e2evision.simulate.jets import jet_class_names
    from e2evision.simulate.response import ResponseConfig

    resp = config.response if config.response is not None else ResponseConfig()
    stats = _paired_statistics(dataset, config, resp, seed, n, workers)
    names = jet_class_names(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = dataset.replace("-", "_")

    def save(name: str, xlabel: str, draw: Any, logx: bool = False, logy: bool = False) -> Path:
        fig = _per_class_figure(dataset, names, stats, xlabel, draw, logx, logy)
        path = out / f"{prefix}_response_{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        return path

    far = f"beyond dR = R + {_FAR_MARGIN}"
    top_hits = max(float(np.max(s[c]["ecal_nonzero"])) for s in stats.values() for c in s)
    top_density = max(float(np.max(s[c]["pileup_density"])) for s in stats.values() for c in s)
    return [
        save(
            "ecal_occupancy",
            "non-zero ECAL pixels per jet",
            _histogram_drawer(stats, "ecal_nonzero", np.linspace(0.0, max(top_hits, 10.0) * 1.05, 41), ".1f"),
        ),
        save(
            "hottest_fraction",
            "hottest ECAL pixel / ECAL sum",
            _histogram_drawer(stats, "hottest_fraction", np.linspace(0.0, 1.0, 41), ".3f"),
        ),
        save(
            "pileup_density",
            f"ECAL + HCAL E_T per unit area {far} [GeV]",
            _histogram_drawer(stats, "pileup_density", np.linspace(0.0, max(top_density, 1.0) * 1.05, 41), ".2f"),
        ),
        save(
            "noise_spectrum",
            f"ECAL pixel energy {far} [GeV]",
            _spectrum_drawer(stats, resp, np.geomspace(0.05, 50.0, 41)),
            logx=True,
            logy=True,
        ),
    ]
