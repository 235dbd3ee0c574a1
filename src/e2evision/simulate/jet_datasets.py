"""The three jet data sets: their classes, channels, columns, Pythia settings and seeds.

Which Pythia process makes each class, which channels the images have and in which order the
public schema lists its columns; and the seeding that keys every random stream by (seed, class,
block), so that a seed gives the same rows however the work is split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from e2evision.simulate.jet_config import JET_DATASETS, JetSimConfig

__all__ = ["jet_channels", "jet_class_names", "pythia_settings"]

_PYTHIA_SEED_SPAN = 899_999_999  # Pythia accepts 0 < seed < 900,000,000


@dataclass(frozen=True)
class _JetClass:
    name: str
    label: float
    key: int  # spawn key of the random streams (stable: never renumber)
    process: tuple[str, ...]


_Z_TO_NUNU = ("23:onMode = off", "23:onIfAny = 12 14 16", "WeakZ0:gmZmode = 2")
_TTBAR_HADRONIC = ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off", "24:onIfAny = 1 2 3 4 5")
_CLASSES: dict[str, tuple[_JetClass, ...]] = {
    "quark-gluon": (
        _JetClass("quark", 0.0, 1, ("WeakBosonAndParton:qg2gmZq = on", *_Z_TO_NUNU)),
        _JetClass("gluon", 1.0, 21, ("WeakBosonAndParton:qqbar2gmZg = on", *_Z_TO_NUNU)),
    ),
    "top": (
        _JetClass("qcd", 0.0, 2, ("HardQCD:all = on",)),
        _JetClass("top", 1.0, 6, _TTBAR_HADRONIC),
    ),
    "top-mass": (_JetClass("top", math.nan, 60, _TTBAR_HADRONIC),),
}
_CHANNELS = {
    "quark-gluon": ("tracks", "ecal", "hcal"),
    "top": ("track_pt", "track_d0", "track_dz", "ecal", "hcal", "bpix1", "bpix2", "bpix3"),
    "top-mass": ("track_pt", "track_d0", "track_dz", "ecal", "hcal", "bpix1", "bpix2", "bpix3"),
}
# Public column order of each schema (datasets.md); the image column comes first.
_COLUMNS = {
    "quark-gluon": ("X_jets", "pt", "m0", "y"),
    "top": ("X_jets", "m0", "pt", "y"),
    "top-mass": ("X_jet", "m", "iphi", "pt", "ieta"),
}


def jet_channels(dataset: str) -> tuple[str, ...]:
    """Channel names of ``dataset`` in file order (channels-first images)."""
    _check_dataset(dataset)
    return _CHANNELS[dataset]


def jet_class_names(dataset: str) -> tuple[str, ...]:
    """Class names of ``dataset`` by class index (row i holds class i % len(names))."""
    _check_dataset(dataset)
    return tuple(c.name for c in _CLASSES[dataset])


def _check_dataset(dataset: str) -> None:
    if dataset not in JET_DATASETS:
        raise ValueError(f"dataset must be one of {JET_DATASETS}, got {dataset!r}")


def pythia_settings(config: JetSimConfig, class_name: str, seed: int) -> list[str]:
    """The ``readString`` lines of one class's Pythia instance, in order (stored in the files).

    Speed: all lines that do not change the events are about printing. What makes a difference
    is physics (MPI ~10x, see docs/simulation.md); the only "free" choices are the decay modes
    that the recipe fixes anyway (Z -> nu nu, W -> hadrons) and the pure-Z mode (gamma* does
    not couple to neutrinos).
    """
    cls = {c.name: c for c in _CLASSES[config.dataset]}[class_name]
    lines = [
        f"Beams:eCM = {config.ecm_gev:g}",
        "Random:setSeed = on",
        f"Random:seed = {int(seed)}",
        "Print:quiet = on",
        "Next:numberCount = 0",
        f"PartonLevel:MPI = {'on' if config.mpi else 'off'}",
        f"PhaseSpace:pTHatMin = {config.pthat_min_gev:g}",
        f"PhaseSpace:pTHatMax = {config.pthat_max_gev:g}",
        *cls.process,
    ]
    if config.dataset == "top-mass":
        lo, hi = config.top_mass_range_gev
        lines += [
            f"6:m0 = {0.5 * (lo + hi):g}",
            f"6:mWidth = {config.top_mass_width_gev:g}",
            "6:doForceWidth = on",
            f"6:mMin = {lo:g}",
            f"6:mMax = {hi:g}",
        ]
    return lines + list(config.extra_pythia)


# ------------------------------------------------------------------------------------------------
# seeding


def _pythia_seed(seed: int, class_key: int, block: int) -> int:
    """Pythia seed of a block: consecutive per class from a SeedSequence-drawn start.

    Pythia takes seeds in [1, 9e8). Consecutive seeds are independent sequences by design, and a
    per-(seed, class) random start keeps blocks of one run collision-free (hashing every block
    into 9e8 values would repeat some after ~30,000 blocks). Block -1 seeds the initialisation.
    """
    start = np.random.SeedSequence(entropy=seed, spawn_key=(class_key, 2**32 - 1))
    base = int(start.generate_state(1, np.uint64)[0] % _PYTHIA_SEED_SPAN)
    return 1 + (base + block + 1) % _PYTHIA_SEED_SPAN


def _block_rng(seed: int, class_key: int, block: int) -> np.random.Generator:
    """NumPy stream for the detector effects of one block, keyed by (seed, class, block)."""
    child = np.random.SeedSequence(entropy=seed, spawn_key=(class_key, int(block)))
    return np.random.Generator(np.random.PCG64(child))
