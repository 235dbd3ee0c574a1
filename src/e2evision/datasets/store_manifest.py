"""What makes a store trustworthy: a validated, self-checksummed manifest and verified files.

A store is read by other people months after it was written, from disks that flip bits, copies
that stop half-way and hands that edit JSON. So the reader trusts nothing it has not checked:

* the manifest is parsed as strict UTF-8 JSON, every field the reader uses is checked for type
  and range, file names must be plain names inside the store (no ``..``, no absolute paths, no
  links out), and a SHA-256 of the manifest's own canonical form (``manifest_sha256``) catches
  any edit or flipped bit in it;
* every array file's SHA-256 (recorded at conversion) is checked the first time a process maps
  it, so a chunk is verified once per process and then read at full memory-map speed;
* labels and values get the checks the source readers make (finite, labels in the task's range).

Every failure is a :class:`DatasetError` naming the file, the field and what to do. The reader
(:mod:`e2evision.datasets.store`) and the writer (:mod:`e2evision.store`) share this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.datasets.base import DatasetError

#: the version of the layout and manifest this code writes and reads
STORE_VERSION = 1
#: the marker that proves a directory was written by :func:`e2evision.store.write_store`
FORMAT_MARKER = "e2evision-store"
MANIFEST = "manifest.json"
#: the only names a store directory holds (anything else means it is not ours to delete)
TOP_LEVEL = frozenset({MANIFEST, "labels.npy", "scalars.npy", "chunks"})
REBUILD = "reconvert the source with `e2evision convert --overwrite`"


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest without its own ``manifest_sha256`` field, in canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def file_sha256(path: Path, block: int = 1 << 18) -> str:
    """SHA-256 of a file through one reused buffer (no per-block allocations)."""
    digest = hashlib.sha256()
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return "sha256:" + digest.hexdigest()


def read_manifest(root: Path) -> dict[str, Any]:
    """The validated manifest of the store at ``root`` (raises :class:`DatasetError`)."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise DatasetError(root, f"no {MANIFEST}: not a store, or a conversion that did not finish")
    try:
        text = mpath.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(mpath, f"not valid UTF-8 at byte {err.start} (corrupted or edited); {REBUILD}") from None
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, ValueError) as err:
        raise DatasetError(mpath, f"manifest is not valid JSON ({err}); {REBUILD}") from None
    if not isinstance(manifest, dict):
        raise DatasetError(mpath, f"top level is a {type(manifest).__name__}, not an object; {REBUILD}")
    validate_manifest(manifest, mpath)
    return manifest


def _field(m: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in m:
        raise DatasetError(where, f"manifest lacks the field {key!r}; {REBUILD}")
    value = m[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise DatasetError(
            where,
            f"field {key!r} is {type(value).__name__} {value!r:.60}, expected "
            f"{getattr(kind, '__name__', kind)}; {REBUILD}",
        )
    return value


def _count(value: Any, key: str, where: Path, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DatasetError(where, f"field {key!r} is {value!r:.60}, expected an integer >= {minimum}; {REBUILD}")
    return value


def _file_entry(entry: Any, key: str, where: Path) -> None:
    if not isinstance(entry, dict):
        raise DatasetError(where, f"field {key!r} is not an object; {REBUILD}")
    name = entry.get("file")
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        or not name.endswith(".npy")
        or "\0" in name
    ):
        raise DatasetError(
            where,
            f"field {key}.file is {name!r:.80}: a store file must be a plain .npy name inside the store; {REBUILD}",
        )
    _count(entry.get("bytes"), f"{key}.bytes", where)
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise DatasetError(where, f"field {key}.sha256 is {digest!r:.80}, expected 'sha256:<64 hex>'; {REBUILD}")


def validate_manifest(m: dict[str, Any], where: Path) -> None:
    """Check every field the reader relies on: types, ranges, consistency and the self-checksum."""
    _check_version(m, where)
    n = _count(_field(m, "n_samples", int, where), "n_samples", where, 1)
    shape = _check_geometry(m, where)
    layout = _check_layout(m, where)
    chunk_size = _count(_field(m, "chunk_size", int, where), "chunk_size", where, 1)
    _check_labels_and_source(m, where)
    _check_chunks(m, where, n, layout, chunk_size)
    _check_channel_stats(m, where, shape[0])
    recorded = m.get("manifest_sha256")  # last: a renamed or mistyped field gets its own message first
    if recorded is not None and recorded != manifest_digest(m):
        raise DatasetError(
            where,
            f"field 'manifest_sha256' does not match the manifest's content (edited or corrupted); {REBUILD}",
        )


def _check_version(m: dict[str, Any], where: Path) -> None:
    """The store version this code reads, and our format marker when there is one."""
    if m.get("store_version") != STORE_VERSION:
        raise DatasetError(
            where,
            f"field 'store_version' is {m.get('store_version')!r:.40}, this e2evision reads {STORE_VERSION}; {REBUILD}",
        )
    marker = m.get("format")
    if marker is not None and marker != FORMAT_MARKER:
        raise DatasetError(where, f"field 'format' is {marker!r:.40}, expected {FORMAT_MARKER!r}; not a store")


def _check_geometry(m: dict[str, Any], where: Path) -> list[int]:
    """``image_shape`` [C, H, W] of positive integers, and one channel name per channel."""
    shape = _field(m, "image_shape", list, where)
    if len(shape) != 3 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in shape):
        raise DatasetError(
            where,
            f"field 'image_shape' is {shape!r:.60}, expected [C, H, W] positive integers; {REBUILD}",
        )
    channels = _field(m, "channels", list, where)
    if len(channels) != shape[0] or not all(isinstance(c, str) for c in channels):
        raise DatasetError(where, f"field 'channels' has {len(channels)} names for {shape[0]} channels; {REBUILD}")
    return shape


def _check_layout(m: dict[str, Any], where: Path) -> str:
    layout = _field(m, "layout", str, where)
    if layout not in ("sparse", "dense"):
        raise DatasetError(where, f"field 'layout' is {layout!r:.40}, expected 'sparse' or 'dense'; {REBUILD}")
    return layout


def _check_labels_and_source(m: dict[str, Any], where: Path) -> None:
    """Task, class and scalar names, the source's format, and the label and scalar files."""
    task = m.get("task", "binary")
    if task not in ("binary", "multiclass", "regression"):
        raise DatasetError(where, f"field 'task' is {task!r:.40}, expected binary, multiclass or regression")
    for key in ("class_names", "scalars"):
        value = m.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DatasetError(where, f"field {key!r} must be a list of names; {REBUILD}")
    source = _field(m, "source", dict, where)
    if not isinstance(source.get("format"), str):
        raise DatasetError(where, f"field 'source.format' must be a string; {REBUILD}")
    _file_entry(_field(m, "label_file", dict, where), "label_file", where)
    _file_entry(_field(m, "scalar_file", dict, where), "scalar_file", where)


def _check_chunks(m: dict[str, Any], where: Path, n: int, layout: str, chunk_size: int) -> None:
    """Every chunk holds the layout's files and ``chunk_size`` rows (the last may hold fewer);
    together they hold ``n_samples``."""
    chunks = _field(m, "chunks", list, where)
    parts = 3 if layout == "sparse" else 1
    for i, ch in enumerate(chunks):
        if not isinstance(ch, dict) or not isinstance(ch.get("files"), list) or len(ch["files"]) != parts:
            raise DatasetError(
                where,
                f"field 'chunks[{i}]' must hold {parts} file(s) for the {layout} layout; {REBUILD}",
            )
        rows = _count(ch.get("n"), f"chunks[{i}].n", where, 1)
        if rows != (chunk_size if i < len(chunks) - 1 else rows) or rows > chunk_size:
            raise DatasetError(
                where,
                f"field 'chunks[{i}].n' is {rows}, inconsistent with chunk_size {chunk_size}; {REBUILD}",
            )
        for j, f in enumerate(ch["files"]):
            _file_entry(f, f"chunks[{i}].files[{j}]", where)
    if sum(ch["n"] for ch in chunks) != n:
        raise DatasetError(
            where,
            f"field 'chunks': sizes add up to {sum(ch['n'] for ch in chunks)}, n_samples is {n}; {REBUILD}",
        )


def _check_channel_stats(m: dict[str, Any], where: Path, n_channels: int) -> None:
    """The raw moments the reader rebuilds its channel statistics from, one per channel."""
    stats = _field(m, "channel_stats", dict, where)
    raw = stats.get("raw")
    if not isinstance(raw, dict) or any(
        not isinstance(raw.get(k), list)
        or len(raw[k]) != n_channels
        or not all(isinstance(v, (int, float)) for v in raw[k])
        for k in ("count", "mean", "m2", "minimum", "maximum", "nonzero")
    ):
        raise DatasetError(
            where,
            f"field 'channel_stats.raw' must hold count, mean, m2, minimum, maximum and nonzero per channel; {REBUILD}",
        )


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, after checking it stays inside ``root`` (no link or ``..`` out of it)."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise DatasetError(path, f"resolves to {real}, outside the store {root}; {REBUILD}")
    return real


def verify_file(root: Path, path: Path, entry: dict[str, Any]) -> None:
    """Size and SHA-256 of one store file against its manifest entry."""
    real = inside(root, path)
    if not real.is_file():
        raise DatasetError(path, "file listed in the manifest is missing or not a regular file; " + REBUILD)
    size = real.stat().st_size
    if size != entry["bytes"]:
        raise DatasetError(path, f"size {size} bytes, the manifest says {entry['bytes']} (truncated?); {REBUILD}")
    if file_sha256(real) != entry["sha256"]:
        raise DatasetError(path, f"checksum differs from the manifest (sha256; corrupted file); {REBUILD}")


def check_labels(labels: np.ndarray, task: str, n_classes: int, path: Path) -> None:
    """The source readers' label checks: finite, and 0/1 (binary) or 0..K-1 (multi-class)."""
    finite = np.isfinite(labels)
    if not finite.all():
        raise DatasetError(
            path,
            f"field 'labels' has NaN or infinite values (first at sample {int(np.argmin(finite))}); {REBUILD}",
        )
    if task == "regression":
        return
    k = 2 if task == "binary" else max(n_classes, 2)
    bad = (labels != np.round(labels)) | (labels < 0) | (labels > k - 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DatasetError(
            path,
            f"field 'labels' has {float(labels[i])!r} at sample {i}, outside "
            f"{{0..{k - 1}}} for a {task} task; {REBUILD}",
        )


def check_finite(values: np.ndarray, path: Path) -> None:
    """Refuse NaN/inf pixel values (as the source readers do on every read)."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        flat = np.isfinite(values.reshape(-1))
        raise DatasetError(
            path,
            f"field 'values' has NaN or infinite pixels (first at element {int(np.argmin(flat))}); {REBUILD}",
        )


def is_store_dir(path: Path) -> bool:
    """True only for a directory that provably is an e2evision store and holds nothing else.

    A valid manifest (with our marker, or a version-1 manifest that passes full validation) and
    only the names a store holds: ``manifest.json``, ``labels.npy``, ``scalars.npy``, ``chunks/``
    with ``.npy`` files. Anything else (a user's folder, a folder with data in it) is not ours.
    """
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        read_manifest(path)
    except DatasetError:
        return False
    names = set(os.listdir(path))
    if not names <= TOP_LEVEL:
        return False
    chunks = path / "chunks"
    if chunks.exists():
        if chunks.is_symlink() or not chunks.is_dir():
            return False
        for q in chunks.iterdir():
            if q.is_symlink() or not q.is_file() or not q.name.endswith(".npy"):
                return False
    return True
