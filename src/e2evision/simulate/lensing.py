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

This module writes the files; the parts live beside it: the configuration
(:mod:`~e2evision.simulate.lensing_config`), the renderer
(:mod:`~e2evision.simulate.lensing_render`) and the reader and validation plots
(:mod:`~e2evision.simulate.lensing_plots`). Their public names are importable from here.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.simulate.common import (
    check_int,
    check_seed,
    check_shard,
    class_counts,
    shard_range,
    shard_suffix,
)
from e2evision.simulate.lensing_config import (
    CLASSES,
    DEFAULT_LENSING_CONFIG,
    LABELS,
    LensClass,
    LensingConfig,
    MissingExtraError,
    _require_sim,
)
from e2evision.simulate.lensing_plots import lensing_validation_plots, load_lensing_images
from e2evision.simulate.lensing_render import (
    LensSample,
    _check_class,
    _distances,
    einstein_radius_arcsec,
    simulate_lens,
    vortex_half_length_arcsec,
)
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

GENERATOR_NAME = "e2evision.simulate.lensing"
METADATA_NAME = "metadata.json"

# A worker's job: (class, image indices, images in the class, seed, config, output dir, axion
# files as object arrays?)
_Task = tuple[str, Sequence[int], int, int, LensingConfig, str, bool]


def lensing_file_name(klass: LensClass, index: int, n_class: int) -> str:
    """``<class>_sim_<index>.npy`` (the public prefix), zero-padded to the class size."""
    _check_class(klass)
    width = max(6, len(str(max(n_class - 1, 0))))
    return f"{klass}_sim_{int(index):0{width}d}.npy"


def _save_npy(path: Path, array: np.ndarray, allow_pickle: bool) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.save adds no suffix
        np.save(fh, array, allow_pickle=allow_pickle)


def _render_and_write(task: _Task) -> list[dict[str, Any]]:
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


def _check_write_args(
    n: object,
    seed: object,
    config: object,
    shard: object,
    num_shards: object,
    workers: object,
    batch: object,
) -> int:
    """Reject bad arguments of :func:`write_lensing` before any file is touched; the seed."""
    for name, value, low in (("n", n, 3), ("num_shards", num_shards, 1), ("workers", workers, 1), ("batch", batch, 1)):
        check_int(name, value, low)
    check_shard(shard, num_shards)
    seed = check_seed(seed)
    if not isinstance(config, LensingConfig):
        raise ValueError(f"config must be a LensingConfig, got {type(config).__name__}")
    return seed


def _render_all(tasks: list[_Task], total: int, workers: int, progress: bool) -> dict[str, list[dict[str, Any]]]:
    """Run the render-and-write tasks (in ``workers`` spawned processes if > 1); rows per class."""
    from tqdm.auto import tqdm

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
    return rows


def _write_axion_masses(out: Path, axion_rows: list[dict[str, Any]], suffix: str) -> None:
    """``axion/axion_mass<suffix>.csv``: each axion file's mass, exactly (``repr`` of the float)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "axion_mass_ev"])
    rows = sorted(axion_rows, key=lambda r: r["index"])
    writer.writerows([r["file"], repr(float(r["axion_mass_ev"]))] for r in rows)
    atomic_write_text(out / "axion" / f"axion_mass{suffix}.csv", buf.getvalue())


def _metadata(
    n: int,
    seed: int,
    config: LensingConfig,
    shard: int,
    num_shards: int,
    axion_object_arrays: bool,
    counts: dict[str, int],
    ranges: dict[str, tuple[int, int]],
    rows: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """What ``metadata<suffix>.json`` records: settings, derived scales, versions, per-file table."""
    suffix = shard_suffix(shard, num_shards)
    derived = dict(_distances(config))
    derived["theta_E_arcsec"] = einstein_radius_arcsec(config.main_halo_mass_msun, config)
    return {
        "generator": GENERATOR_NAME,
        "format": "DeepLense Model I: one .npy per image in <class>/ folders",
        "seed": seed,
        "shard": shard,
        "num_shards": num_shards,
        "n_total": n,
        "image": {
            "shape": [config.num_pix, config.num_pix],
            "dtype": "float64",
            "pixel_scale_arcsec": config.pixel_scale_arcsec,
            "normalisation": "per-image min-max to [0, 1] of the noisy counts/s image",
            "axes": "axis 0 = y (row), axis 1 = x (column); display with origin='lower'",
        },
        "axion_storage": "object_array [image, axion_mass_ev] (pickle)"
        if axion_object_arrays
        else "plain float64 array; axion mass in axion/axion_mass" + suffix + ".csv",
        "axion_object_arrays": axion_object_arrays,
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


def write_lensing(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    config: LensingConfig = DEFAULT_LENSING_CONFIG,
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
    seed = _check_write_args(n, seed, config, shard, num_shards, workers, batch)
    _require_sim()
    n, shard, num_shards = int(n), int(shard), int(num_shards)
    out = Path(out_dir)
    # image i of class c is row i of that class; the first n % 3 classes get one image more
    counts = dict(zip(CLASSES, class_counts(n, len(CLASSES))))
    ranges = {c: shard_range(counts[c], 1, shard, num_shards) for c in CLASSES}
    for c in CLASSES:
        (out / c).mkdir(parents=True, exist_ok=True)
    tasks: list[_Task] = [
        (
            c,
            list(range(lo, min(lo + batch, ranges[c][1]))),
            counts[c],
            seed,
            config,
            str(out),
            bool(axion_object_arrays),
        )
        for c in CLASSES
        for lo in range(ranges[c][0], ranges[c][1], batch)
    ]
    total = sum(hi - lo for lo, hi in ranges.values())
    rows = _render_all(tasks, total, int(workers), progress)
    suffix = shard_suffix(shard, num_shards)
    _write_axion_masses(out, rows["axion"], suffix)
    metadata = _metadata(n, seed, config, shard, num_shards, bool(axion_object_arrays), counts, ranges, rows)
    return atomic_write_json(out / f"metadata{suffix}.json", metadata)


def _class_of(file_name: str) -> str:
    for c in CLASSES:
        if file_name.startswith(f"{c}_sim_"):
            return c
    raise ValueError(f"not a lensing file name: {file_name!r}")
