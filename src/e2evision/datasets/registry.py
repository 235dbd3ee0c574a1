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
    if format in (None, "auto"):
        format = detect_format(paths)
    try:
        factory = _READERS[format]
    except KeyError:
        raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(list_formats())}") from None
    return factory(paths, **kwargs)


def detect_format(paths: PathLike | Sequence[PathLike]) -> str:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("no dataset paths given")
    first = Path(items[0])
    if not first.exists():
        raise DatasetError(first, "file or directory not found")
    if first.is_dir():
        files = sorted(q for q in first.rglob("*") if q.is_file())
        if not files:
            raise DatasetError(first, "directory is empty")
        first = next((q for q in files if q.suffix.lower() in {".h5", ".hdf5"}), files[0])
    suffix = first.suffix.lower()
    if suffix in {".h5", ".hdf5"}:
        import h5py

        try:
            with h5py.File(first, "r") as h5:
                keys = set(h5.keys())
        except OSError as err:
            raise DatasetError(first, f"cannot open as HDF5 (truncated or not an HDF5 file): {err}") from err
        if {"X", "y"} <= keys:
            return "egamma"
        raise DatasetError(first, f"HDF5 keys {sorted(keys)} match no known schema (electron/photon needs 'X' and 'y')")
    raise DatasetError(first, f"cannot tell the dataset format from the extension {suffix!r}; pass --format")
