"""Choose a reader by dataset name or from the files themselves."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from e2evision.datasets.base import DatasetError, ImageDataset

PathLike = str | os.PathLike[str]
_READERS: dict[str, Callable[..., ImageDataset]] = {}


def register_reader(*names: str) -> Callable[[Callable[..., ImageDataset]], Callable[..., ImageDataset]]:
    def deco(factory: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        for name in names:
            _READERS[name] = factory
        return factory

    return deco


def list_formats() -> list[str]:
    return sorted(_READERS)


def open_dataset(
    paths: PathLike | Sequence[PathLike], format: str | None = None, **kwargs: object
) -> ImageDataset:
    """Open ``paths`` with the reader for ``format``, or detect it from the files.

    Detection looks at extensions and, for HDF5, at the keys: ``X`` + ``y`` is the electron/photon
    schema.
    """
    if format in (None, "auto") or _is_store(paths):
        # A converted store is read as such whatever format the config names (it was made from it).
        format = detect_format(paths)
    try:
        factory = _READERS[format]
    except KeyError:
        raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(list_formats())}") from None
    return factory(paths, **kwargs)


def detect_format(paths: PathLike | Sequence[PathLike]) -> str:
    """The format of a file, folder or pattern: store manifest, DeepLense folders, Parquet or HDF5 schema."""
    from e2evision.datasets.paths import as_list, expand_paths
    from e2evision.safety import require_regular_file

    items = as_list(paths)
    if not items:
        raise ValueError("no dataset paths given")
    first = Path(items[0])
    if any(ch in str(first) for ch in "*?[") and not first.exists():
        first = expand_paths([first], (".parquet", ".h5", ".hdf5", ".npy"), kind="data")[0]
    if not first.exists():
        raise DatasetError(first, "file or directory not found")
    if first.is_dir():
        from e2evision.datasets.deeplense import looks_like_deeplense

        if (first / "manifest.json").exists():
            return "store"
        if looks_like_deeplense(first):
            return "deeplense"
        files = sorted(q for q in first.iterdir() if q.is_file() and q.name.lower().endswith(_KNOWN_SUFFIXES))
        if not files:
            raise DatasetError(first, "directory holds no .parquet, .h5/.hdf5 files, class folders of .npy "
                                      "files, or store manifest")
        first = files[0]
    require_regular_file(first)  # before any open: a FIFO named x.hdf5 would block forever
    name = first.name.lower()
    if name.endswith((".parquet", ".pq")):
        from e2evision.datasets.parquet_jets import parquet_schema_guess

        guess = parquet_schema_guess(first)
        if guess is None:
            raise DatasetError(first, "Parquet columns match no known schema (quark-gluon/top: X_jets + y; "
                                      "top-mass: X_jet + m); pass --format")
        return guess
    if name.endswith((".h5", ".hdf5")):
        import h5py

        try:
            with h5py.File(first, "r") as h5:
                keys = set(h5.keys())
        except OSError as err:
            raise DatasetError(first, f"cannot open as HDF5 (truncated or not an HDF5 file): {err}") from err
        if {"X", "y"} <= keys:
            return "egamma"
        if {"X_jets", "y"} <= keys:
            return "quark-gluon-hdf5"
        raise DatasetError(first, f"HDF5 keys {sorted(keys)} match no known schema (electron/photon needs 'X' "
                                  "and 'y'; quark/gluon needs 'X_jets' and 'y')")
    raise DatasetError(first, f"cannot tell the dataset format from the name {first.name!r}; pass --format")


def _is_store(paths: PathLike | Sequence[PathLike]) -> bool:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    return len(items) == 1 and (Path(items[0]) / "manifest.json").is_file()


_KNOWN_SUFFIXES = (".parquet", ".pq", ".h5", ".hdf5")
