"""Image datasets in HDF5: CMS electron/photon crops and the quark/gluon HDF5 variant.

Electron/photon schema (``docs/datasets.md``): each file holds ``X`` float32 ``(N, 32, 32, 2)``
channels-last (ECAL energy, hit time) and ``y`` float32 ``(N,)`` with photon = 0, electron = 1.
The public set is two files, one per class; users concatenate them (photon first). This reader
takes any number of such files (two single-class files or one holding both classes), checks the
schema from the headers and labels at open time, and reads pixel data lazily per request, checking
each read for NaN/inf, so a 249k-sample file is never loaded whole.

Quark/gluon HDF5 variant (datasets.md §2): ``X_jets`` ``(N, 125, 125, 3)`` channels-last plus
``m0``, ``pt`` and ``y`` (quark 0, gluon 1). Both share :class:`HDF5Images`, which only differs
in keys, channel names, image size and scalar columns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from e2evision.datasets.base import (
    ColumnsInMemory,
    DatasetError,
    ImageDataset,
    check_finite,
    select_channels,
)
from e2evision.datasets.paths import expand_paths
from e2evision.datasets.registry import Sniffer, register_reader

CHANNELS = ["ecal_energy", "ecal_time"]
IMAGE_KEY = "X"
LABEL_KEY = "y"
VALID_LABELS = (0.0, 1.0)
_SLICE_BYTES = 256 * 2**20  # largest covering slice read at once for a dense, non-contiguous request


class HDF5Images(ColumnsInMemory, ImageDataset):
    """Channels-last image datasets in HDF5 with a label dataset and optional scalar datasets.

    Subclasses set the keys, channel names, image size and class names of one public schema.
    """

    format = "hdf5-images"
    image_key = IMAGE_KEY
    label_key = LABEL_KEY
    default_channels: tuple[str, ...] = tuple(CHANNELS)
    default_image_size: tuple[int, int] = (32, 32)
    default_scalars: tuple[str, ...] = ()
    classes: tuple[str, ...] = ("0", "1")

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        image_size: tuple[int, int] | None = None,
        channels: Sequence[str | int] | None = None,
        channel_names: Sequence[str] | None = None,
        scalars: Sequence[str] | None = None,
    ) -> None:
        self._paths = self._expand(paths)
        self._image_size = tuple(image_size or self.default_image_size)
        self._file_channels = list(channel_names or self.default_channels)
        self._scalar_names = list(self.default_scalars if scalars is None else scalars)
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        sizes, labels, scalar_cols = [], [], []
        for path in self._paths:
            n, y, s = self._validate_header(path)
            sizes.append(n)
            labels.append(y)
            scalar_cols.append(s)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._labels = np.concatenate(labels).astype(np.float32)
        self._scalars = np.concatenate(scalar_cols).astype(np.float32)
        self._select = select_channels(self._file_channels, channels, self._paths[0])

    @classmethod
    def _expand(cls, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
        return expand_paths(paths, (".h5", ".hdf5"), kind="HDF5")

    # ----------------------------------------------------------------------------- interface
    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    @property
    def n_samples(self) -> int:
        return int(self._offsets[-1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (len(self._select), *self._image_size)

    @property
    def channel_names(self) -> list[str]:
        return [self._file_channels[i] for i in self._select]

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self.checked_indices(indices)
        out = np.empty((idx.size, *self.image_shape), dtype=np.float32)
        file_of = np.searchsorted(self._offsets, idx, side="right") - 1
        for f in np.unique(file_of):
            sel = np.nonzero(file_of == f)[0]
            local = idx[sel] - self._offsets[f]
            # h5py fancy indexing needs increasing, unique indices: read sorted, then scatter back.
            uniq, inverse = np.unique(local, return_inverse=True)
            block = self._read_block(int(f), uniq)
            check_finite(block, self._paths[f], self.image_key, uniq)
            block = block.transpose(0, 3, 1, 2)
            if self._select != list(range(len(self._file_channels))):
                block = block[:, self._select]
            out[sel] = block[inverse]
        return out, self._labels[idx]

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()

    def __getstate__(self) -> dict:
        # h5py handles cannot cross process boundaries (DataLoader workers): reopen lazily there.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    # ----------------------------------------------------------------------------- internals
    def _file(self, f: int) -> h5py.File:
        if self._pid != os.getpid():  # forked worker: never share the parent's HDF5 handles
            self._handles = {}
            self._pid = os.getpid()
        if f not in self._handles:
            self._handles[f] = _open(self._paths[f])
        return self._handles[f]

    def _read_block(self, f: int, local: np.ndarray) -> np.ndarray:
        ds = self._file(f)[self.image_key]
        if local.size == 0:
            return np.empty((0, *ds.shape[1:]), dtype=np.float32)
        lo, hi = int(local[0]), int(local[-1]) + 1
        row_bytes = int(np.prod(ds.shape[1:])) * 4
        try:
            # h5py's fancy indexing is slow (one selection per index): when the request is dense,
            # read the covering slice in one go and pick the rows in memory, within a RAM bound.
            if hi - lo == local.size or (hi - lo <= 4 * local.size and (hi - lo) * row_bytes <= _SLICE_BYTES):
                block = ds[lo:hi]
                if hi - lo != local.size:
                    block = block[local - lo]
            else:
                block = ds[local]
        except OSError as err:  # truncated or corrupt chunk
            raise DatasetError(
                self._paths[f], f"cannot read field '{self.image_key}' samples {lo}..{hi - 1}: {err}"
            ) from err
        return np.asarray(block, dtype=np.float32)

    def _validate_header(self, path: Path) -> tuple[int, np.ndarray, np.ndarray]:
        ik, lk = self.image_key, self.label_key
        with _open(path) as h5:
            need = [ik, lk, *self._scalar_names]
            missing = [k for k in need if k not in h5]
            if missing:
                raise DatasetError(
                    path,
                    f"missing key(s) {missing}; {self.format} files need {need} "
                    f"('{ik}' shaped (N, {self._image_size[0]}, {self._image_size[1]}, "
                    f"{len(self._file_channels)})), found keys {sorted(h5.keys())}",
                )
            x, y = h5[ik], h5[lk]
            if not isinstance(x, h5py.Dataset) or not isinstance(y, h5py.Dataset):
                raise DatasetError(path, f"'{ik}' and '{lk}' must be datasets, not groups")
            expected = (*self._image_size, len(self._file_channels))
            if x.ndim != 4 or tuple(x.shape[1:]) != expected:
                raise DatasetError(
                    path,
                    f"field '{ik}' has shape {tuple(x.shape)}, expected (N, {expected[0]}, "
                    f"{expected[1]}, {expected[2]}) channels-last ({', '.join(self._file_channels)})",
                )
            if x.shape[0] == 0:
                raise DatasetError(path, f"field '{ik}' is empty (0 samples)")
            n = int(x.shape[0])
            columns = {}
            for key in (lk, *self._scalar_names):
                ds = h5[key]
                if not isinstance(ds, h5py.Dataset) or not (ds.ndim == 1 or (ds.ndim == 2 and ds.shape[1] == 1)):
                    raise DatasetError(path, f"field '{key}' has shape {getattr(ds, 'shape', '?')}, expected (N,)")
                if ds.shape[0] != n:
                    what = "labels" if key == lk else "entries"
                    raise DatasetError(path, f"field '{key}' has {ds.shape[0]} {what} but '{ik}' has {n} images")
                if ds.dtype.kind not in "fiu":
                    raise DatasetError(path, f"field '{key}' has dtype {ds.dtype}, expected a number")
                try:
                    columns[key] = np.asarray(ds[()], dtype=np.float64).reshape(-1)
                except OSError as err:
                    raise DatasetError(path, f"cannot read field '{key}': {err}") from err
                if not np.isfinite(columns[key]).all():
                    raise DatasetError(path, f"field '{key}' has NaN or infinite values")
            if x.dtype.kind not in "fiu":
                raise DatasetError(path, f"field '{ik}' has dtype {x.dtype}, expected float32")
            labels = columns[lk]
            bad = ~np.isin(labels, VALID_LABELS)
            if bad.any():
                values = np.unique(labels[bad])[:5].tolist()
                names = ", ".join(f"{c} = {i}" for i, c in enumerate(self.classes))
                raise DatasetError(
                    path,
                    f"field '{lk}' has labels outside {{0, 1}}: {values} "
                    f"({names}; first bad sample {int(np.argmax(bad))})",
                )
            scalars = (
                np.stack([columns[k] for k in self._scalar_names], axis=1) if self._scalar_names else np.zeros((n, 0))
            )
            return n, labels, scalars


class EgammaHDF5(HDF5Images):
    """Electron/photon crops from one or more HDF5 files, delivered as ``(N, 2, 32, 32)``.

    Args:
        paths: the HDF5 files, in the order their samples are numbered (photon file first for the
            public pair). A directory means every ``*.h5``/``*.hdf5`` file in it, photon files first.
        image_size: the expected (H, W); the public crops are 32 × 32.
    """

    format = "egamma-hdf5"
    classes = ("photon", "electron")

    @classmethod
    def _expand(cls, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
        return expand_egamma_paths(paths)


class QuarkGluonHDF5(HDF5Images):
    """The quark/gluon HDF5 variant: ``X_jets (N, 125, 125, 3)`` channels-last, ``m0``, ``pt``, ``y``."""

    format = "quark-gluon-hdf5"
    image_key = "X_jets"
    default_channels = ("tracks", "ecal", "hcal")
    default_image_size = (125, 125)
    default_scalars = ("pt", "m0")
    classes = ("quark", "gluon")


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DatasetError(path, "file not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(path, f"cannot open as HDF5 (truncated or not an HDF5 file): {err}") from err


def expand_egamma_paths(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[Path]:
    """Files from paths, directories or patterns; in a directory photon files sort first."""
    return expand_paths(
        paths,
        (".h5", ".hdf5"),
        kind="electron/photon HDF5",
        sort_key=lambda q: (0 if "photon" in q.name.lower() else 1, q.name),
    )


def sniff_hdf5(path: Path) -> str:
    """``egamma`` (keys ``X`` + ``y``) or ``quark-gluon-hdf5`` (``X_jets`` + ``y``); else an error."""
    try:
        with h5py.File(path, "r") as h5:
            keys = set(h5.keys())
    except OSError as err:
        raise DatasetError(path, f"cannot open as HDF5 (truncated or not an HDF5 file): {err}") from err
    if {"X", "y"} <= keys:
        return "egamma"
    if {"X_jets", "y"} <= keys:
        return "quark-gluon-hdf5"
    raise DatasetError(
        path,
        f"HDF5 keys {sorted(keys)} match no known schema (electron/photon needs 'X' "
        "and 'y'; quark/gluon needs 'X_jets' and 'y')",
    )


_HDF5 = Sniffer(sniff_hdf5, ".h5/.hdf5 files", suffixes=(".h5", ".hdf5"))
register_reader("egamma", "egamma-hdf5", sniffer=_HDF5)(EgammaHDF5)
register_reader("quark-gluon-hdf5", "qg-hdf5", sniffer=_HDF5)(QuarkGluonHDF5)
