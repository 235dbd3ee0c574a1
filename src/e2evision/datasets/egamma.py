"""CMS electron/photon calorimeter crops (HDF5), as published.

Schema (``../shared/specs/datasets.md`` §1): each file holds ``X`` float32 ``(N, 32, 32, 2)``
channels-last (ECAL energy, hit time) and ``y`` float32 ``(N,)`` with photon = 0, electron = 1.
The public set is two files, one per class; users concatenate them (photon first). This reader
takes any number of such files (two single-class files or one holding both classes), checks the
schema from the headers and labels at open time, and reads pixel data lazily per request, checking
each read for NaN/inf, so a 249k-sample file is never loaded whole.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from e2evision.datasets.base import DatasetError, ImageDataset, check_finite

CHANNELS = ["ecal_energy", "ecal_time"]
IMAGE_KEY = "X"
LABEL_KEY = "y"
VALID_LABELS = (0.0, 1.0)
_SLICE_BYTES = 256 * 2**20  # largest covering slice read at once for a dense, non-contiguous request


class EgammaHDF5(ImageDataset):
    """Electron/photon crops from one or more HDF5 files, delivered as ``(N, 2, 32, 32)``.

    Args:
        paths: the HDF5 files, in the order their samples are numbered (photon file first for the
            public pair). A directory means every ``*.h5``/``*.hdf5`` file in it, photon files first.
        image_size: the expected (H, W); the public crops are 32 × 32.
    """

    format = "egamma-hdf5"

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        image_size: tuple[int, int] = (32, 32),
    ) -> None:
        self._paths = expand_egamma_paths(paths)
        self._image_size = tuple(image_size)
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        sizes, labels = [], []
        for path in self._paths:
            n, y = self._validate_header(path)
            sizes.append(n)
            labels.append(y)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._labels = np.concatenate(labels).astype(np.float32)

    # ----------------------------------------------------------------------------- interface
    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    @property
    def n_samples(self) -> int:
        return int(self._offsets[-1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (len(CHANNELS), *self._image_size)

    @property
    def channel_names(self) -> list[str]:
        return list(CHANNELS)

    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_samples):
            raise IndexError(f"sample index out of range [0, {self.n_samples}) for {self._paths[0]}")
        out = np.empty((idx.size, *self.image_shape), dtype=np.float32)
        file_of = np.searchsorted(self._offsets, idx, side="right") - 1
        for f in np.unique(file_of):
            sel = np.nonzero(file_of == f)[0]
            local = idx[sel] - self._offsets[f]
            # h5py fancy indexing needs increasing, unique indices: read sorted, then scatter back.
            uniq, inverse = np.unique(local, return_inverse=True)
            block = self._read_block(int(f), uniq)
            check_finite(block, self._paths[f], IMAGE_KEY, uniq)
            out[sel] = block.transpose(0, 3, 1, 2)[inverse]
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
        ds = self._file(f)[IMAGE_KEY]
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
            raise DatasetError(self._paths[f], f"cannot read field '{IMAGE_KEY}' samples {lo}..{hi - 1}: {err}") from err
        return np.asarray(block, dtype=np.float32)

    def _validate_header(self, path: Path) -> tuple[int, np.ndarray]:
        with _open(path) as h5:
            missing = [k for k in (IMAGE_KEY, LABEL_KEY) if k not in h5]
            if missing:
                raise DatasetError(
                    path, f"missing key(s) {missing}; electron/photon files need 'X' (N, 32, 32, 2) "
                    f"and 'y' (N,), found keys {sorted(h5.keys())}"
                )
            x, y = h5[IMAGE_KEY], h5[LABEL_KEY]
            if not isinstance(x, h5py.Dataset) or not isinstance(y, h5py.Dataset):
                raise DatasetError(path, "'X' and 'y' must be datasets, not groups")
            expected = (*self._image_size, len(CHANNELS))
            if x.ndim != 4 or tuple(x.shape[1:]) != expected:
                raise DatasetError(
                    path, f"field 'X' has shape {tuple(x.shape)}, expected (N, {expected[0]}, "
                    f"{expected[1]}, {expected[2]}) channels-last (energy, time)"
                )
            if x.shape[0] == 0:
                raise DatasetError(path, "field 'X' is empty (0 samples)")
            if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
                raise DatasetError(path, f"field 'y' has shape {tuple(y.shape)}, expected (N,)")
            if y.shape[0] != x.shape[0]:
                raise DatasetError(
                    path, f"field 'y' has {y.shape[0]} labels but 'X' has {x.shape[0]} images"
                )
            for key, ds in ((IMAGE_KEY, x), (LABEL_KEY, y)):
                if ds.dtype.kind not in "fiu":
                    raise DatasetError(path, f"field '{key}' has dtype {ds.dtype}, expected float32")
            try:
                labels = np.asarray(y[()], dtype=np.float64).reshape(-1)
            except OSError as err:
                raise DatasetError(path, f"cannot read field 'y': {err}") from err
            if not np.isfinite(labels).all():
                raise DatasetError(path, "field 'y' has NaN or infinite labels")
            bad = ~np.isin(labels, VALID_LABELS)
            if bad.any():
                values = np.unique(labels[bad])[:5].tolist()
                raise DatasetError(
                    path, f"field 'y' has labels outside {{0, 1}}: {values} "
                    f"(photon = 0, electron = 1; first bad sample {int(np.argmax(bad))})"
                )
            return int(x.shape[0]), labels


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
    """Files from a path, a directory or a list; in a directory photon files sort first."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                (q for q in p.iterdir() if q.suffix.lower() in {".h5", ".hdf5"}),
                key=lambda q: (0 if "photon" in q.name.lower() else 1, q.name),
            )
            if not found:
                raise DatasetError(p, "directory holds no .h5/.hdf5 files")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise ValueError("no electron/photon HDF5 files given")
    return out
