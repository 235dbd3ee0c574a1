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
from e2evision.datasets.store import TrainingStore, decode_sparse
from e2evision.datasets.store_manifest import (
    FORMAT_MARKER,
    MANIFEST,
    STORE_VERSION,
    manifest_digest,
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

__all__ = ["STORE_VERSION", "TrainingStore", "decode_sparse", "encode_sparse", "write_store"]


# --------------------------------------------------------------------------------------- writing
def encode_sparse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR encoding of a batch ``(n, C, H, W)``: (indptr, flat pixel index, value) of non-zeros."""
    flat = x.reshape(x.shape[0], -1)
    rows, cols = np.nonzero(flat)
    indptr = np.zeros(flat.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=flat.shape[0]), out=indptr[1:])
    index_dtype = np.uint16 if flat.shape[1] <= 2**16 else np.uint32
    return indptr, cols.astype(index_dtype), flat[rows, cols].astype(np.float32)


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
                raise DatasetError(
                    final,
                    "changed while this conversion ran (another writer?); "
                    "nothing was replaced; check it and convert again",
                )
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


def _write_contents(
    reader: ImageDataset, tmp: Path, layout: str, chunk_size: int, progress: bool, source_checksums: bool
) -> dict[str, Any]:
    """Write every array of the store into ``tmp``; returns the manifest (without its checksum)."""
    chunks, stats = _write_chunks(reader, tmp, layout, chunk_size, progress)
    n = reader.n_samples
    labels = reader.labels().astype(np.float32)
    scalars = (
        reader.read_scalars(np.arange(n)).astype(np.float32) if reader.scalar_names else np.zeros((n, 0), np.float32)
    )
    files = {
        "label_file": _save_npy(tmp / "labels.npy", labels),
        "scalar_file": _save_npy(tmp / "scalars.npy", scalars),
    }
    return _manifest(reader, chunks, stats, files, chunk_size, source_checksums)


class _ChunkWriter:
    """Writes chunk files in the layout chosen on the first chunk (``auto``: the smaller one)."""

    def __init__(self, tmp: Path, layout: str, image_shape: tuple[int, int, int]) -> None:
        self.tmp = tmp
        self.layout = layout
        self.image_size = int(np.prod(image_shape))
        self.chunks: list[dict[str, Any]] = []
        self.nnz_total = 0

    def write(self, x: np.ndarray) -> None:
        k = len(self.chunks)
        if self.layout == "auto":
            nnz = int(np.count_nonzero(x))
            idx_bytes = 2 if self.image_size <= 2**16 else 4
            self.layout = "sparse" if nnz * (4 + idx_bytes) + 8 * x.shape[0] < x.size * 4 else "dense"
        entry: dict[str, Any] = {"n": int(x.shape[0])}
        if self.layout == "sparse":
            indptr, index, values = encode_sparse(x)
            entry["nnz"] = int(values.size)
            entry["files"] = [
                _save_npy(self.tmp / "chunks" / f"{k:06d}.{part}.npy", arr)
                for part, arr in (("indptr", indptr), ("index", index), ("values", values))
            ]
        else:
            entry["nnz"] = int(np.count_nonzero(x))
            entry["files"] = [_save_npy(self.tmp / "chunks" / f"{k:06d}.dense.npy", x.astype(np.float32))]
        self.nnz_total += entry["nnz"]
        self.chunks.append(entry)


def _write_chunks(
    reader: ImageDataset, tmp: Path, layout: str, chunk_size: int, progress: bool
) -> tuple[_ChunkWriter, ChannelStats]:
    """Stream the reader in memory-bounded batches into chunks of ``chunk_size`` samples, in order,
    accumulating the channel statistics on the way."""
    n = reader.n_samples
    stats = ChannelStats(reader.image_shape[0])
    writer = _ChunkWriter(tmp, layout, reader.image_shape)
    pending: list[np.ndarray] = []
    pending_n = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm  # only for a visible progress bar

        bar = tqdm(total=n, desc=f"converting {reader.format}", unit="img")
    batch = reader.default_batch_size()
    for start in range(0, n, batch):
        x, _ = reader.read(np.arange(start, min(start + batch, n)))
        stats.update(x)
        pending.append(x)
        pending_n += x.shape[0]
        while pending_n >= chunk_size:
            block = np.concatenate(pending) if len(pending) > 1 else pending[0]
            writer.write(block[:chunk_size])
            rest = block[chunk_size:]
            pending, pending_n = ([rest] if rest.shape[0] else []), rest.shape[0]
        if bar is not None:
            bar.update(x.shape[0])
    if pending_n:
        writer.write(np.concatenate(pending) if len(pending) > 1 else pending[0])
    if bar is not None:
        bar.close()
    return writer, stats


def _manifest(
    reader: ImageDataset,
    written: _ChunkWriter,
    stats: ChannelStats,
    files: dict[str, dict[str, Any]],
    chunk_size: int,
    source_checksums: bool,
) -> dict[str, Any]:
    """What the store holds, where it came from and the checksums of every file."""
    c, h, w = reader.image_shape
    n = reader.n_samples
    data_bytes = sum(f["bytes"] for ch in written.chunks for f in ch["files"])
    sources = [
        {"path": str(p), "bytes": _size(p), **({"sha256": _tree_sha256(p)} if source_checksums else {})}
        for p in reader.paths
    ]
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
        "layout": written.layout if written.layout != "auto" else "dense",
        "chunk_size": int(chunk_size),
        "dtype": "float32",
        "nnz": int(written.nnz_total),
        "bytes": {"images": int(data_bytes), "dense_float32": int(n) * c * h * w * 4},
        "labels": reader.label_summary(),
        **files,
        "channel_stats": _stats_dict(stats, reader.channel_names),
        "chunks": written.chunks,
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
