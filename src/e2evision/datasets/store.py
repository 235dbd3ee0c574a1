"""The reader of e2evision's training store (written by :func:`e2evision.store.write_store`).

A store directory holds ``manifest.json`` (written last: its presence marks a complete store),
``labels.npy``, ``scalars.npy`` and ``chunks/`` of sparse (CSR: ``indptr``, flat pixel ``index``,
``values``) or dense ``.npy`` arrays; the layout is described in :mod:`e2evision.store.format`.
Every array is opened with ``mmap_mode="r"`` and ``allow_pickle=False``, and checked against the
manifest (:mod:`.store_manifest`) before it is trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from e2evision.datasets.base import ChannelStats, DatasetError, ImageDataset
from e2evision.datasets.paths import PathArg, as_list
from e2evision.datasets.registry import Sniffer, register_reader
from e2evision.datasets.store_manifest import (
    MANIFEST,
    REBUILD,
    check_finite,
    check_labels,
    inside,
    read_manifest,
    verify_file,
)

__all__ = ["TrainingStore", "decode_sparse"]


def decode_sparse(
    indptr: np.ndarray, index: np.ndarray, values: np.ndarray, rows: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """Dense ``(len(rows), *shape)`` float32 images of the given chunk rows (vectorised scatter)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros((rows.size, int(np.prod(shape))), dtype=np.float32)
    start = np.asarray(indptr[rows], dtype=np.int64)
    lens = np.asarray(indptr[rows + 1], dtype=np.int64) - start
    total = int(lens.sum())
    if total:
        first = np.cumsum(lens) - lens  # where each row's entries begin in the gathered arrays
        src = np.repeat(start - first, lens) + np.arange(total, dtype=np.int64)
        if np.all(np.diff(rows) == 1):  # contiguous rows: one slice instead of a gather
            lo = int(start[0])
            cols = np.asarray(index[lo : lo + total], dtype=np.int64)
            vals = np.asarray(values[lo : lo + total])
        else:
            cols = np.asarray(index[src], dtype=np.int64)
            vals = np.asarray(values[src])
        out[np.repeat(np.arange(rows.size), lens), cols] = vals
    return out.reshape(rows.size, *shape)


def _sniff_store(path: Path) -> str | None:
    """A folder with a manifest is a store (whatever else it holds: ``chunks/`` has ``.npy`` files)."""
    return "store" if (path / MANIFEST).is_file() else None


@register_reader("store", sniffer=Sniffer(_sniff_store, "store manifest", folder=True, priority=1, authoritative=True))
class TrainingStore(ImageDataset):
    """Read a store written by :func:`write_store` through the common reader interface.

    Opening checks the manifest and that every file has the recorded size (a truncated or
    half-copied store fails here, naming the file); :meth:`verify` also checks the SHA-256 sums.
    """

    format = "store"

    def __init__(self, paths: PathArg, **unused: object) -> None:
        items = as_list(paths)
        if len(items) != 1:
            raise ValueError("a training store is one directory; pass exactly one path")
        if unused:
            raise TypeError(
                f"{items[0]}: reader options {sorted(unused)} apply when converting; a store "
                "already holds their result (remove them, e.g. data.kwargs, when reading a store)"
            )
        self.root = Path(items[0])
        if not self.root.is_dir():
            raise DatasetError(self.root, "store directory not found")
        self.manifest = m = read_manifest(self.root)
        self.task = m.get("task", "binary")
        self._shape = tuple(int(v) for v in m["image_shape"])
        self._chunk_size = int(m["chunk_size"])
        self._chunks: dict[int, list[np.ndarray]] = {}  # mapped chunks, least recently used first
        self._checked: set[int] = set()  # chunks whose checksums and structure were verified
        for entry in [m["label_file"], m["scalar_file"], *(f for ch in m["chunks"] for f in ch["files"])]:
            p = inside(self.root, self._file_path(entry["file"]))
            if not p.is_file():
                raise DatasetError(p, f"file listed in the manifest is missing; {REBUILD}")
            if p.stat().st_size != entry["bytes"]:
                raise DatasetError(
                    p, f"size {p.stat().st_size} bytes, the manifest says {entry['bytes']} (truncated?); {REBUILD}"
                )
        for entry in (m["label_file"], m["scalar_file"]):  # small: verified at once
            verify_file(self.root, self._file_path(entry["file"]), entry)
        self._labels = self._load(m["label_file"]["file"]).astype(np.float32)
        self._scalars = self._load(m["scalar_file"]["file"])
        label_path = self._file_path(m["label_file"]["file"])
        if self._labels.shape != (m["n_samples"],):
            raise DatasetError(label_path, f"shape {self._labels.shape}, expected ({m['n_samples']},); {REBUILD}")
        check_labels(self._labels, self.task, len(m.get("class_names", [])), label_path)
        scalar_path = self._file_path(m["scalar_file"]["file"])
        want = (m["n_samples"], len(m.get("scalars", [])))
        if self._scalars.shape != want:
            raise DatasetError(scalar_path, f"shape {self._scalars.shape}, expected {want}; {REBUILD}")
        check_finite(np.asarray(self._scalars), scalar_path)

    # ----------------------------------------------------------------------------- interface
    @property
    def paths(self) -> list[Path]:
        return [self.root]

    @property
    def n_samples(self) -> int:
        return int(self.manifest["n_samples"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def channel_names(self) -> list[str]:
        return list(self.manifest["channels"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.get("class_names", []))

    @property
    def scalar_names(self) -> list[str]:
        return list(self.manifest.get("scalars", []))

    @property
    def source_format(self) -> str:
        return str(self.manifest["source"]["format"])

    def labels(self) -> np.ndarray:
        return np.array(self._labels)

    def read_scalars(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(self._scalars[self.checked_indices(indices)], dtype=np.float32)

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self.checked_indices(indices)
        out = np.empty((idx.size, *self._shape), dtype=np.float32)
        chunk_of = idx // self._chunk_size
        order = np.argsort(idx, kind="stable")
        sorted_chunks = chunk_of[order]
        bounds = np.flatnonzero(np.diff(sorted_chunks)) + 1
        for part in np.split(order, bounds):
            if part.size == 0:
                continue
            k = int(chunk_of[part[0]])
            rows = idx[part] - k * self._chunk_size
            arrays = self._chunk(k)
            if self.manifest["layout"] == "sparse":
                out[part] = decode_sparse(*arrays, rows, self._shape)
            else:
                out[part] = arrays[0][rows]
        return out, self._labels[idx]

    def channel_stats(self, batch_size: int | None = None, progress: bool = False) -> ChannelStats:
        """The whole store's statistics from the manifest (computed once, at conversion)."""
        raw = self.manifest["channel_stats"]["raw"]
        stats = ChannelStats(self._shape[0])
        for key, value in raw.items():
            setattr(stats, key, np.asarray(value, dtype=np.float64))
        return stats

    def verify(self) -> None:
        """Check every file's SHA-256 against the manifest (a full read of the store)."""
        m = self.manifest
        for entry in [m["label_file"], m["scalar_file"], *(f for ch in m["chunks"] for f in ch["files"])]:
            verify_file(self.root, self._file_path(entry["file"]), entry)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_chunks"] = {}  # memory maps are reopened in each worker
        return state

    # ----------------------------------------------------------------------------- internals
    def _file_path(self, name: str) -> Path:
        return self.root / name if name in ("labels.npy", "scalars.npy") else self.root / "chunks" / name

    def _load(self, name: str) -> np.ndarray:
        path = self._file_path(name)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DatasetError(path, f"cannot read store array: {err}") from err

    #: bytes of chunk files kept memory-mapped at once: pages of a mapped file that a read touched
    #: count in the process's resident memory until the map is closed, so without a bound an epoch
    #: over a store larger than RAM would show the whole store as resident (reclaimable, but it is
    #: what ``ru_maxrss`` and schedulers see); beyond it the least recently used chunks are closed
    map_budget_bytes: int = 512 * 2**20

    def _chunk(self, k: int) -> list[np.ndarray]:
        """Chunk ``k``'s arrays, verified (SHA-256, structure, finite values) the first time they
        are mapped in this process; later reads cost nothing extra, nor does mapping it again
        after it was closed to stay within :attr:`map_budget_bytes`."""
        arrays = self._chunks.pop(k, None)
        if arrays is None:
            entry = self.manifest["chunks"][k]
            if k not in self._checked:
                for f in entry["files"]:
                    verify_file(self.root, self._file_path(f["file"]), f)
            arrays = [self._load(f["file"]) for f in entry["files"]]
            if k not in self._checked:
                self._check_chunk(k, entry, arrays)
                self._checked.add(k)
            self._release_maps(keep=sum(int(f["bytes"]) for f in entry["files"]))
        self._chunks[k] = arrays  # (re)inserted last: the most recently used
        return arrays

    def _release_maps(self, keep: int) -> None:
        """Close the least recently used maps until ``keep`` more bytes fit the budget."""
        chunks = self.manifest["chunks"]
        mapped = sum(int(f["bytes"]) for j in self._chunks for f in chunks[j]["files"])
        while self._chunks and mapped + keep > self.map_budget_bytes:
            j = next(iter(self._chunks))
            mapped -= sum(int(f["bytes"]) for f in chunks[j]["files"])
            del self._chunks[j]  # the memmaps close when no array refers to them (reads copy out)

    def _check_chunk(self, k: int, entry: dict, arrays: list[np.ndarray]) -> None:
        """Shapes and index bounds of a chunk, so no read can land outside an image."""
        n = int(entry["n"])
        where = self._file_path(entry["files"][0]["file"])
        if self.manifest["layout"] == "dense":
            if arrays[0].shape != (n, *self._shape) or arrays[0].dtype != np.float32:
                raise DatasetError(
                    where, f"shape {arrays[0].shape} {arrays[0].dtype}, expected {(n, *self._shape)} float32; {REBUILD}"
                )
            check_finite(arrays[0], where)
            return
        indptr, index, values = arrays
        size = int(np.prod(self._shape))
        if (
            indptr.shape != (n + 1,)
            or index.ndim != 1
            or values.shape != index.shape
            or int(indptr[0]) != 0
            or int(indptr[-1]) != values.size
            or np.any(np.diff(indptr) < 0)
        ):
            raise DatasetError(
                where,
                f"sparse arrays of chunk {k} are inconsistent (indptr "
                f"{indptr.shape}, index {index.shape}, values {values.shape}); "
                f"{REBUILD}",
            )
        if index.size and int(index.max()) >= size:
            raise DatasetError(
                self._file_path(entry["files"][1]["file"]),
                f"pixel index {int(index.max())} outside an image of {size} pixels; {REBUILD}",
            )
        check_finite(values, self._file_path(entry["files"][2]["file"]))
