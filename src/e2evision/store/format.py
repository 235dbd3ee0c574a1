"""The training store: chunked, sparse-aware, memory-mapped, with a manifest that is written last.

Layout of a store directory::

    manifest.json              what the store holds (see below); its presence marks a complete store
    labels.npy                 (N,) float32 labels or regression targets
    scalars.npy                (N, K) float32 scalar features (pt, m0, ...), K may be 0
    chunks/000000.indptr.npy   sparse layout: (n+1,) int64 offsets of each sample's non-zeros
    chunks/000000.index.npy    flat pixel index c·H·W + h·W + w of each non-zero (uint16 or uint32)
    chunks/000000.values.npy   the non-zero values, float32 (bit-exact copies of the source's floats)
    chunks/000000.dense.npy    dense layout instead: (n, C, H, W) float32

Jet images have tens to hundreds of non-zero pixels out of 15,625 per channel, so the sparse
layout (6 bytes per non-zero with 16-bit indices) is one to two orders of magnitude smaller than
dense float32 and reads faster, because fewer bytes cross the page cache. Dense data (lensing
images) keeps the dense layout; ``layout="auto"`` picks whichever is smaller on the first batch.

Every array is a plain ``.npy`` opened with ``mmap_mode="r"`` and ``allow_pickle=False``: a read
touches only the pages of the requested samples, so memory stays bounded for stores larger than
RAM, and forked DataLoader workers share the page cache.

The manifest records the format version, source format and files with SHA-256 checksums, shapes,
channel names, counts, label balance, per-channel statistics (mean, std, min, max, non-zero
fraction, and the raw moments they come from), and per-chunk file sizes and checksums.
:func:`write_store` writes into a hidden sibling directory and renames it into place after the
manifest is written, so an interrupted conversion never leaves a directory that reads as a store.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.datasets.base import ChannelStats, DatasetError, ImageDataset
from e2evision.datasets.paths import PathArg, as_list
from e2evision.store.integrity import (
    FORMAT_MARKER,
    MANIFEST,
    REBUILD,
    check_finite,
    check_labels,
    inside,
    manifest_digest,
    read_manifest,
    verify_file,
)
from e2evision.store.publish import (
    check_target,
    identity,
    new_partial,
    remove_dead_partials,
    replace_store,
    writer_lock,
)
from e2evision.utils.io import atomic_write_json
from e2evision.utils.provenance import package_versions

STORE_VERSION = 1


# --------------------------------------------------------------------------------------- writing
def encode_sparse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR encoding of a batch ``(n, C, H, W)``: (indptr, flat pixel index, value) of non-zeros."""
    flat = x.reshape(x.shape[0], -1)
    rows, cols = np.nonzero(flat)
    indptr = np.zeros(flat.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=flat.shape[0]), out=indptr[1:])
    index_dtype = np.uint16 if flat.shape[1] <= 2**16 else np.uint32
    return indptr, cols.astype(index_dtype), flat[rows, cols].astype(np.float32)


def decode_sparse(indptr: np.ndarray, index: np.ndarray, values: np.ndarray, rows: np.ndarray,
                  shape: tuple[int, int, int]) -> np.ndarray:
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
            cols = np.asarray(index[lo:lo + total], dtype=np.int64)
            vals = np.asarray(values[lo:lo + total])
        else:
            cols = np.asarray(index[src], dtype=np.int64)
            vals = np.asarray(values[src])
        out[np.repeat(np.arange(rows.size), lens), cols] = vals
    return out.reshape(rows.size, *shape)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _save_npy(path: Path, arr: np.ndarray) -> dict[str, Any]:
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def _stats_dict(stats: ChannelStats, names: Sequence[str]) -> dict[str, Any]:
    return {
        "per_channel": stats.as_dict(names),
        "raw": {k: getattr(stats, k).tolist() for k in ("count", "mean", "m2", "minimum", "maximum", "nonzero")},
    }


def write_store(
    reader: ImageDataset,
    out: str | os.PathLike[str],
    *,
    layout: str = "auto",
    chunk_size: int = 4096,
    overwrite: bool = False,
    progress: bool = False,
    source_checksums: bool = True,
) -> Path:
    """Convert everything ``reader`` holds into a store at ``out``; returns its path.

    Reads the source in memory-bounded batches in order, so a source larger than RAM converts.
    """
    if layout not in {"auto", "sparse", "dense"}:
        raise ValueError(f"layout must be auto, sparse or dense, not {layout!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    final = Path(out)
    if final.name in ("", ".", ".."):
        raise DatasetError(final, "--out must name a store directory (not '.', '..' or a root)")
    final.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(final):
        check_target(final, reader.paths, overwrite)
        before = identity(final)
        remove_dead_partials(final)  # left by interrupted conversions; never a live one
        tmp = new_partial(final)
        try:
            manifest = _write_contents(reader, tmp, layout, chunk_size, progress, source_checksums)
            manifest["manifest_sha256"] = manifest_digest(manifest)
            atomic_write_json(tmp / MANIFEST, manifest)
            _fsync_dir(tmp)
            if identity(final) != before:
                raise DatasetError(final, "changed while this conversion ran (another writer?); "
                                          "nothing was replaced; check it and convert again")
            if before is not None:
                check_target(final, reader.paths, overwrite)  # still a store, still not an input
                replace_store(tmp, final)
            else:
                os.rename(tmp, final)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _write_contents(reader: ImageDataset, tmp: Path, layout: str, chunk_size: int, progress: bool,
                    source_checksums: bool) -> dict[str, Any]:
    c, h, w = reader.image_shape
    n = reader.n_samples
    stats = ChannelStats(c)
    chunks: list[dict[str, Any]] = []
    nnz_total = 0
    pending: list[np.ndarray] = []
    pending_n = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"converting {reader.format}", unit="img")

    def flush(x: np.ndarray) -> None:
        nonlocal layout, nnz_total
        k = len(chunks)
        if layout == "auto":
            nnz = int(np.count_nonzero(x))
            idx_bytes = 2 if c * h * w <= 2**16 else 4
            layout = "sparse" if nnz * (4 + idx_bytes) + 8 * x.shape[0] < x.size * 4 else "dense"
        entry: dict[str, Any] = {"n": int(x.shape[0])}
        if layout == "sparse":
            indptr, index, values = encode_sparse(x)
            entry["nnz"] = int(values.size)
            nnz_total += int(values.size)
            entry["files"] = [_save_npy(tmp / "chunks" / f"{k:06d}.{part}.npy", arr)
                              for part, arr in (("indptr", indptr), ("index", index), ("values", values))]
        else:
            entry["nnz"] = int(np.count_nonzero(x))
            nnz_total += entry["nnz"]
            entry["files"] = [_save_npy(tmp / "chunks" / f"{k:06d}.dense.npy", x.astype(np.float32))]
        chunks.append(entry)

    batch = reader.default_batch_size()
    for start in range(0, n, batch):
        x, _ = reader.read(np.arange(start, min(start + batch, n)))
        stats.update(x)
        pending.append(x)
        pending_n += x.shape[0]
        while pending_n >= chunk_size:
            block = np.concatenate(pending) if len(pending) > 1 else pending[0]
            flush(block[:chunk_size])
            rest = block[chunk_size:]
            pending, pending_n = ([rest] if rest.shape[0] else []), rest.shape[0]
        if bar is not None:
            bar.update(x.shape[0])
    if pending_n:
        flush(np.concatenate(pending) if len(pending) > 1 else pending[0])
    if bar is not None:
        bar.close()

    labels = reader.labels().astype(np.float32)
    scalars = reader.read_scalars(np.arange(n)).astype(np.float32) if reader.scalar_names else np.zeros((n, 0), np.float32)
    label_file = _save_npy(tmp / "labels.npy", labels)
    scalar_file = _save_npy(tmp / "scalars.npy", scalars)
    data_bytes = sum(f["bytes"] for ch in chunks for f in ch["files"])
    sources = [{"path": str(p), "bytes": _size(p), **({"sha256": _tree_sha256(p)} if source_checksums else {})}
               for p in reader.paths]
    return {
        "format": FORMAT_MARKER,
        "store_version": STORE_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"format": reader.format, "files": sources},
        "task": reader.task,
        "n_samples": int(n),
        "image_shape": [int(c), int(h), int(w)],
        "channels": reader.channel_names,
        "class_names": reader.class_names,
        "scalars": reader.scalar_names,
        "layout": layout if layout != "auto" else "dense",
        "chunk_size": int(chunk_size),
        "dtype": "float32",
        "nnz": int(nnz_total),
        "bytes": {"images": int(data_bytes), "dense_float32": int(n) * c * h * w * 4},
        "labels": reader.label_summary(),
        "label_file": label_file,
        "scalar_file": scalar_file,
        "channel_stats": _stats_dict(stats, reader.channel_names),
        "chunks": chunks,
        "versions": package_versions(),
    }


def _size(p: Path) -> int:
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.is_dir() else p.stat().st_size


def _tree_sha256(p: Path) -> str:
    if not p.is_dir():
        return _sha256(p)
    digest = hashlib.sha256()
    for q in sorted(q for q in p.rglob("*") if q.is_file()):
        digest.update(str(q.relative_to(p)).encode())
        digest.update(_sha256(q).encode())
    return "sha256:" + digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------- reading
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
            raise TypeError(f"{items[0]}: reader options {sorted(unused)} apply when converting; a store "
                            "already holds their result (remove them, e.g. data.kwargs, when reading a store)")
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
                raise DatasetError(p, f"size {p.stat().st_size} bytes, the manifest says "
                                      f"{entry['bytes']} (truncated?); {REBUILD}")
        for entry in (m["label_file"], m["scalar_file"]):  # small: verified at once
            verify_file(self.root, self._file_path(entry["file"]), entry)
        self._labels = self._load(m["label_file"]["file"]).astype(np.float32)
        self._scalars = self._load(m["scalar_file"]["file"])
        label_path = self._file_path(m["label_file"]["file"])
        if self._labels.shape != (m["n_samples"],):
            raise DatasetError(label_path, f"shape {self._labels.shape}, expected "
                                           f"({m['n_samples']},); {REBUILD}")
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
                raise DatasetError(where, f"shape {arrays[0].shape} {arrays[0].dtype}, expected "
                                          f"{(n, *self._shape)} float32; {REBUILD}")
            check_finite(arrays[0], where)
            return
        indptr, index, values = arrays
        size = int(np.prod(self._shape))
        if (indptr.shape != (n + 1,) or index.ndim != 1 or values.shape != index.shape
                or int(indptr[0]) != 0 or int(indptr[-1]) != values.size
                or np.any(np.diff(indptr) < 0)):
            raise DatasetError(where, f"sparse arrays of chunk {k} are inconsistent (indptr "
                                      f"{indptr.shape}, index {index.shape}, values {values.shape}); "
                                      f"{REBUILD}")
        if index.size and int(index.max()) >= size:
            raise DatasetError(self._file_path(entry["files"][1]["file"]),
                               f"pixel index {int(index.max())} outside an image of {size} pixels; "
                               f"{REBUILD}")
        check_finite(values, self._file_path(entry["files"][2]["file"]))
