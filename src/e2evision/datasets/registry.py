"""Choose a reader by dataset name or from the files themselves.

Readers register themselves (``@register_reader("name", sniffer=Sniffer(...))``, as models do with
``register_model``); :func:`detect_format` asks the registered sniffers and knows no format itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from e2evision.datasets.base import DatasetError, ImageDataset
from e2evision.datasets.paths import as_list, expand_paths
from e2evision.safety import require_regular_file

PathLike = str | os.PathLike[str]
_READERS: dict[str, Callable[..., ImageDataset]] = {}


@dataclass(frozen=True)
class Sniffer:
    """How :func:`detect_format` recognises a reader's data when no format is named."""

    detect: Callable[[Path], str | None]
    """Given a file with one of ``suffixes`` (a folder, with ``folder=True``): the format name, or
    None when it is not this reader's data. A file sniffer that recognises the file type but not
    its content raises :class:`DatasetError` saying what it found."""
    describe: str
    """What it looks for, as the message for a folder that holds nothing known words it."""
    suffixes: tuple[str, ...] = ()
    """Lower-case file-name endings this sniffer reads (``.snappy.parquet`` ends in ``.parquet``)."""
    folder: bool = False
    """Called with the folder itself, before any file inside it is looked at."""
    priority: int = 0
    """Folder sniffers run highest first (a store's manifest beats class folders of ``.npy``)."""
    authoritative: bool = False
    """A match wins over the format a config names (a converted store is read as a store)."""


_SNIFFERS: list[Sniffer] = []


def register_reader(
    *names: str, sniffer: Sniffer | None = None
) -> Callable[[Callable[..., ImageDataset]], Callable[..., ImageDataset]]:
    """Register ``factory(paths, **kwargs)`` under ``names``, and how to recognise its data."""

    def deco(factory: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        for name in names:
            _READERS[name] = factory
        if sniffer is not None and sniffer not in _SNIFFERS:
            _SNIFFERS.append(sniffer)
        return factory

    return deco


def list_formats() -> list[str]:
    return sorted(_READERS)


def open_dataset(paths: PathLike | Sequence[PathLike], format: str | None = None, **kwargs: object) -> ImageDataset:
    """Open ``paths`` with the reader for ``format``, or detect it from the files.

    Detection asks each registered reader's :class:`Sniffer` (extensions, folder layout and, for
    HDF5 and Parquet, the keys or columns).
    """
    if format in (None, "auto") or _claimed(paths):
        # A converted store is read as such whatever format the config names (it was made from it).
        format = detect_format(paths)
    try:
        factory = _READERS[format]
    except KeyError:
        raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(list_formats())}") from None
    return factory(paths, **kwargs)


def detect_format(paths: PathLike | Sequence[PathLike]) -> str:
    """The format of a file, folder or pattern, by the registered sniffers."""
    items = as_list(paths)
    if not items:
        raise ValueError("no dataset paths given")
    first = Path(items[0])
    if any(ch in str(first) for ch in "*?[") and not first.exists():
        first = expand_paths([first], _file_suffixes(), kind="data")[0]
    if not first.exists():
        raise DatasetError(first, "file or directory not found")
    if first.is_dir():
        for sniffer in _folder_sniffers():
            found = sniffer.detect(first)
            if found is not None:
                return found
        suffixes = _file_suffixes()
        files = sorted(q for q in first.iterdir() if q.is_file() and q.name.lower().endswith(suffixes))
        if not files:
            raise DatasetError(first, f"directory holds no {_known_contents()}")
        first = files[0]
    require_regular_file(first)  # before any open: a FIFO named x.hdf5 would block forever
    name = first.name.lower()
    for sniffer in _SNIFFERS:
        if not sniffer.folder and name.endswith(sniffer.suffixes):
            found = sniffer.detect(first)
            if found is not None:
                return found
    raise DatasetError(first, f"cannot tell the dataset format from the name {first.name!r}; pass --format")


def _folder_sniffers() -> list[Sniffer]:
    return sorted((s for s in _SNIFFERS if s.folder), key=lambda s: -s.priority)


def _file_suffixes() -> tuple[str, ...]:
    return tuple(suffix for s in _SNIFFERS if not s.folder for suffix in s.suffixes)


def _known_contents() -> str:
    """``.parquet, .h5/.hdf5 files, ... or store manifest``: what a data folder may hold."""
    words = [s.describe for s in _SNIFFERS if not s.folder] + [s.describe for s in _SNIFFERS if s.folder]
    return ", ".join(words[:-1]) + ", or " + words[-1] if len(words) > 1 else "".join(words)


def _claimed(paths: PathLike | Sequence[PathLike]) -> bool:
    """Whether one folder is claimed by an authoritative sniffer (it overrides a named format)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if len(items) != 1 or not Path(items[0]).is_dir():
        return False
    return any(s.detect(Path(items[0])) is not None for s in _folder_sniffers() if s.authoritative)
