"""Parametric electron/photon showers in the CMS barrel ECAL, written in the public crop schema.

The real ``SinglePhotonPt50`` / ``SingleElectronPt50`` crops come from full Geant4 simulation,
which needs data files that cannot be downloaded here. This module rebuilds the physics that makes
the two classes differ, with fast parametrisations instead of particle transport:

* **Tracker** (in front of the ECAL): electrons bend in the 3.8 T field and lose energy by
  bremsstrahlung (Bethe-Heitler energy-loss law, sampled in radial slabs so that the photons leave
  tangentially at different points of the bending trajectory and land spread along phi); photons
  convert with probability ``1 - exp(-7/9 x/X0)`` into an e+e- pair whose legs bend apart and
  radiate in turn. The material ``x`` grows with |eta|, so both effects grow with |eta|.
* **ECAL** (PbWO4): every particle reaching the calorimeter showers with the Grindhammer-Peters
  Gamma-distribution longitudinal profile (fluctuating, correlated shower maximum and shape) and
  the GFlash core + tail lateral profile in Moliere units; energy is deposited as equal-energy
  spots, all vectorised over spots and events.
* **Readout**: photostatistics-like stochastic term, intercalibration constant term, Gaussian
  electronic noise, zero suppression, and a hit time whose resolution degrades as noise/amplitude.

Image convention (as the public files): ``X[i, ieta, iphi, c]`` with c = 0 energy (GeV) and
c = 1 time (ns); crystals without a hit have energy 0 and time 0, so "no hit" is told from
"hit at t = 0" by the energy channel. As in the public crops, the crop is centred on the seed
(most energetic) crystal at index (16, 16): the leading deposit's impact lies at a random point
inside that central crystal.

Determinism: events are generated in fixed blocks of ``config.block_size`` events, each block with
its own ``SeedSequence`` child keyed by (seed, particle, block index). Results are therefore
bit-identical for a given seed no matter how the work is chunked or sharded.

This module writes the files; the parts live beside it: the configuration
(:mod:`~e2evision.simulate.calorimeter_config`), the tracker
(:mod:`~e2evision.simulate.calorimeter_tracker`), the showers and readout
(:mod:`~e2evision.simulate.calorimeter_showers`) and the validation plots
(:mod:`~e2evision.simulate.calorimeter_plots`). Their public names are importable from here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from e2evision.simulate.calorimeter_config import (
    DEFAULT_CALORIMETER_CONFIG,
    CalorimeterConfig,
    Particle,
)
from e2evision.simulate.calorimeter_plots import egamma_validation_plots, shower_widths
from e2evision.simulate.calorimeter_showers import (
    _check_particle,
    _root_sequence,
    _simulate_range,
    gflash_lateral,
    longitudinal_means,
    simulate_showers,
)
from e2evision.simulate.common import (
    check_int,
    check_seed,
    check_shard,
    class_counts,
    shard_range,
    shard_suffix,
)
from e2evision.utils.io import atomic_path
from e2evision.utils.provenance import package_versions

__all__ = [
    "CalorimeterConfig",
    "simulate_showers",
    "write_egamma",
    "egamma_validation_plots",
    "shower_widths",
    "egamma_file_name",
    "longitudinal_means",
    "gflash_lateral",
]

GENERATOR_NAME = "e2evision.simulate.calorimeter"
_LABEL = {"photon": 0.0, "electron": 1.0}  # public convention: photon = 0, electron = 1
_FILE_STEM = {"photon": "SinglePhoton", "electron": "SingleElectron"}


def egamma_file_name(
    particle: Particle,
    n_events: int,
    config: CalorimeterConfig = DEFAULT_CALORIMETER_CONFIG,
    shard: int = 0,
    num_shards: int = 1,
) -> str:
    """Public-style name, e.g. ``SinglePhotonPt50_IMGCROPS_n1000_sim.hdf5`` (``_sim``: ours)."""
    _check_particle(particle)
    suffix = shard_suffix(shard, num_shards)
    return f"{_FILE_STEM[particle]}Pt{config.pt_gev:g}_IMGCROPS_n{n_events}_sim{suffix}.hdf5"


def _write_one(
    path: Path,
    particle: Particle,
    n_class: int,
    start: int,
    stop: int,
    root: np.random.SeedSequence,
    seed: int,
    cfg: CalorimeterConfig,
    chunk: int,
    progress: bool,
    shard: int,
    num_shards: int,
) -> None:
    from tqdm.auto import tqdm

    k = stop - start
    crop = cfg.crop_size
    # Write steps are whole RNG blocks so that no block is generated twice.
    step = max(cfg.block_size, -(-chunk // cfg.block_size) * cfg.block_size)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        opts: dict[str, object] = {}
        if k > 0:
            opts = {
                "chunks": (min(256, k), crop, crop, 2),
                "compression": "gzip",
                "compression_opts": 1,
                "shuffle": True,
            }
        dx = f.create_dataset("X", shape=(k, crop, crop, 2), dtype=np.float32, **opts)
        f.create_dataset("y", data=np.full(k, _LABEL[particle], dtype=np.float32))
        f.attrs["generator"] = GENERATOR_NAME
        f.attrs["seed"] = int(seed)
        f.attrs["particle"] = particle
        f.attrs["label"] = _LABEL[particle]
        f.attrs["config_json"] = cfg.to_json()
        f.attrs["versions_json"] = json.dumps(package_versions(), sort_keys=True)
        f.attrs["n_events_class"] = int(n_class)
        f.attrs["shard"] = int(shard)
        f.attrs["num_shards"] = int(num_shards)
        f.attrs["event_start"] = int(start)
        f.attrs["event_stop"] = int(stop)
        f.attrs["schema"] = f"X float32 (N,{crop},{crop},2) [ieta, iphi, (energy GeV, time ns)]; y float32 (N,)"
        with tqdm(total=k, desc=path.name, unit="crop", disable=not progress, leave=False) as bar:
            for lo in range(start, stop, step):
                hi = min(lo + step, stop)
                x, _ = _simulate_range(lo, hi, particle, root, cfg)
                dx[lo - start : hi - start] = x
                bar.update(hi - lo)


def write_egamma(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    config: CalorimeterConfig = DEFAULT_CALORIMETER_CONFIG,
    progress: bool = True,
    chunk: int = 1000,
    *,
    shard: int = 0,
    num_shards: int = 1,
) -> list[Path]:
    """Write the photon file (``n // 2`` crops, y = 0) and the electron file (the rest, y = 1).

    Same schema as the public ``Single{Photon,Electron}Pt50_IMGCROPS`` files: ``X`` float32
    ``(k, 32, 32, 2)``, ``y`` float32 ``(k,)``. Each file is written atomically, block by block
    (``chunk`` events per step, rounded up to whole RNG blocks, only bounds memory: results do not
    depend on it). With ``num_shards > 1`` this call writes only shard ``shard``'s block-aligned
    part of each class; the shards together hold exactly the events of the unsharded files.
    Returns ``[photon_path, electron_path]``.
    """
    for name, value, low in (("n", n, 2), ("chunk", chunk, 1), ("num_shards", num_shards, 1)):
        check_int(name, value, low)
    check_shard(shard, num_shards)
    seed = check_seed(seed)
    if not isinstance(config, CalorimeterConfig):
        raise ValueError(f"config must be a CalorimeterConfig, got {type(config).__name__}")
    root = _root_sequence(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    # photons (label 0) first; an odd n gives the extra crop to the electrons (the last class)
    per_class = class_counts(int(n), len(_LABEL), remainder_to="last")
    for particle, n_class in zip(("photon", "electron"), per_class):
        start, stop = shard_range(n_class, config.block_size, int(shard), int(num_shards))
        path = out / egamma_file_name(particle, n_class, config, int(shard), int(num_shards))
        _write_one(
            path,
            particle,
            n_class,
            start,
            stop,
            root,
            int(seed),
            config,
            int(chunk),
            progress,
            int(shard),
            int(num_shards),
        )
        paths.append(path)
    return paths
