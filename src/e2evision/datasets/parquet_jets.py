"""CMS jet images in Parquet: quark/gluon, boosted top vs QCD, and top-quark mass regression.

Schemas (``docs/datasets.md``), all channels-first nested lists of 125 × 125:

============  ==============================  ====================  =========================
format        image column                    label / target        scalars (default)
============  ==============================  ====================  =========================
quark-gluon   ``X_jets`` 3 × 125 × 125        ``y`` (quark 0)       ``pt``, ``m0``
top           ``X_jets`` 8 × 125 × 125        ``y`` (top 1)         ``pt``, ``m0``
top-mass      ``X_jet``  8 × 125 × 125        ``m`` (GeV)           ``pt``, ``ieta``, ``iphi``
============  ==============================  ====================  =========================

The public files hold one row per row group and nested ``list<list<list<double>>>`` columns
whose list items are named ``item`` or ``element``. Reading them through pandas and per-element
Python lists is what makes the seed projects slow and memory-hungry; here a read decodes only the
row groups that hold the requested rows, with pyarrow, and flattens the nested lists into one
contiguous array through the list offsets (checking every level's lengths on the way), so memory
is bounded by the request, never by the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from e2evision.datasets.base import (
    ColumnsInMemory,
    DatasetError,
    ImageDataset,
    check_finite,
    select_channels,
)
from e2evision.datasets.paths import PathArg, expand_paths
from e2evision.datasets.registry import Sniffer, register_reader

JET_CHANNELS_QG = ["tracks", "ecal", "hcal"]
JET_CHANNELS_TOP = ["track_pt", "track_d0", "track_dz", "ecal", "hcal", "bpix1", "bpix2", "bpix3"]
TARGET_ALIASES = ("m", "am", "mass", "genM")


@dataclass(frozen=True)
class ParquetSchema:
    """What one public Parquet format looks like."""

    format: str
    image_column: str
    channels: tuple[str, ...]
    label_column: str
    scalars: tuple[str, ...]
    task: str
    class_names: tuple[str, ...] = ()
    label_aliases: tuple[str, ...] = field(default=())


SCHEMAS: dict[str, ParquetSchema] = {
    "quark-gluon": ParquetSchema(
        "quark-gluon", "X_jets", tuple(JET_CHANNELS_QG), "y", ("pt", "m0"), "binary", ("quark", "gluon")
    ),
    "top": ParquetSchema("top", "X_jets", tuple(JET_CHANNELS_TOP), "y", ("pt", "m0"), "binary", ("qcd", "top")),
    "top-mass": ParquetSchema(
        "top-mass", "X_jet", tuple(JET_CHANNELS_TOP), "m", ("pt", "ieta", "iphi"), "regression", (), TARGET_ALIASES
    ),
}


class JetParquet(ColumnsInMemory, ImageDataset):
    """Jet images from one or more Parquet files, delivered as ``(N, C, H, W)`` float32.

    Args:
        paths: files, directories (every ``*.parquet`` in them, sorted) or glob patterns.
        schema: ``"quark-gluon"``, ``"top"`` or ``"top-mass"``.
        image_column / label_column: override the schema's column names (e.g. ``label_column="am"``
            for a top-mass variant; by default the regression target is the first of ``m``, ``am``,
            ``mass``, ``genM`` that exists).
        scalars: scalar columns to deliver (default: the schema's); ``[]`` for none.
        channel_names: names of the file's channels in file order (the public order is not fully
            verified; see datasets.md); ``channels``: which to deliver, by name or index, in order.
        image_size: expected (H, W).
        memory_budget_mb: bound on the decoded bytes held at once while streaming.
    """

    def __init__(
        self,
        paths: PathArg,
        *,
        schema: str | ParquetSchema = "quark-gluon",
        image_column: str | None = None,
        label_column: str | None = None,
        scalars: Sequence[str] | None = None,
        channel_names: Sequence[str] | None = None,
        channels: Sequence[str | int] | None = None,
        image_size: tuple[int, int] = (125, 125),
        memory_budget_mb: float = 256.0,
    ) -> None:
        self.schema = SCHEMAS[schema] if isinstance(schema, str) else schema
        self.format = self.schema.format
        self.task = self.schema.task
        self._paths = expand_paths(paths, (".parquet", ".pq"), kind="Parquet")
        self.image_column = image_column or self.schema.image_column
        self._label_request = label_column
        self._file_channels = list(channel_names or self.schema.channels)
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self.memory_budget_bytes = int(memory_budget_mb * 2**20)
        self._scalar_names = list(self.schema.scalars if scalars is None else scalars)
        self._files: dict[int, pq.ParquetFile] = {}
        self._pid = os.getpid()

        file_rows, rg_offsets, labels, scalar_cols = [], [], [], []
        self.label_column = ""
        for f, path in enumerate(self._paths):
            pf = self._open(f)
            label_col = self._check_schema(path, pf)
            if self.label_column and label_col != self.label_column:
                raise DatasetError(
                    path, f"target column {label_col!r} differs from {self.label_column!r} in {self._paths[0]}"
                )
            self.label_column = label_col
            md = pf.metadata
            counts = np.fromiter(
                (md.row_group(i).num_rows for i in range(md.num_row_groups)), np.int64, md.num_row_groups
            )
            if counts.sum() == 0:
                raise DatasetError(path, "file holds no rows (empty)")
            rg_offsets.append(np.concatenate([[0], np.cumsum(counts)]))
            file_rows.append(int(counts.sum()))
            table = self._read_columns(f, [label_col, *self._scalar_names])
            labels.append(self._labels_from(table.column(label_col), path))
            scalar_cols.append(self._scalars_from(table, path))
            if f == 0:
                self._check_first_image(f)
        self._rg_offsets = rg_offsets
        self._offsets = np.concatenate([[0], np.cumsum(file_rows)]).astype(np.int64)
        self._labels = np.concatenate(labels).astype(np.float32)
        self._scalars = np.concatenate(scalar_cols).astype(np.float32)
        self._select = select_channels(self._file_channels, channels, self._paths[0])
        self._channel_names = [self._file_channels[i] for i in self._select]

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
        return list(self._channel_names)

    @property
    def class_names(self) -> list[str]:
        return list(self.schema.class_names)

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self.checked_indices(indices)
        out = np.empty((idx.size, *self.image_shape), dtype=np.float32)
        file_of = np.searchsorted(self._offsets, idx, side="right") - 1
        for f in np.unique(file_of):
            sel = np.nonzero(file_of == f)[0]
            local = idx[sel] - self._offsets[f]
            offsets = self._rg_offsets[f]
            rg_of = np.searchsorted(offsets, local, side="right") - 1
            groups = np.unique(rg_of)
            # Decode row groups in batches whose size stays within the memory budget.
            for batch in self._row_group_batches(int(f), groups):
                rows = self._read_row_groups(int(f), batch)  # (rows in batch, C, H, W)
                base = np.concatenate([[0], np.cumsum(offsets[batch + 1] - offsets[batch])])
                in_batch = np.isin(rg_of, batch)
                pos = np.searchsorted(batch, rg_of[in_batch])
                row_in = base[pos] + (local[in_batch] - offsets[rg_of[in_batch]])
                out[sel[in_batch]] = rows[row_in]
        return out, self._labels[idx]

    def default_batch_size(self) -> int:
        """Samples per streamed batch so that decoded doubles plus the float32 copy fit the budget."""
        row = int(np.prod((len(self._file_channels), *self._image_size))) * (8 + 4 + 4)
        return max(1, min(4096, self.memory_budget_bytes // row))

    def close(self) -> None:
        self._files.clear()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = {}  # reopened lazily in DataLoader workers
        return state

    # ----------------------------------------------------------------------------- internals
    def _open(self, f: int) -> pq.ParquetFile:
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if f not in self._files:
            path = self._paths[f]
            try:
                self._files[f] = pq.ParquetFile(path, memory_map=False)
            except (pa.ArrowInvalid, OSError) as err:
                raise DatasetError(path, f"cannot open as Parquet (truncated or not a Parquet file): {err}") from err
        return self._files[f]

    def _check_schema(self, path: Path, pf: pq.ParquetFile) -> str:
        arrow = pf.schema_arrow
        names = arrow.names
        if self.image_column not in names:
            raise DatasetError(
                path, f"missing column {self.image_column!r} (the {self.format} image column); columns are {names}"
            )
        typ = arrow.field(self.image_column).type
        depth = 0
        while pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
            typ = typ.value_type
            depth += 1
        if depth != 3 or not pa.types.is_floating(typ):
            raise DatasetError(
                path,
                f"column {self.image_column!r} has type {arrow.field(self.image_column).type}, expected "
                "a 3-level nested list of float or double (channels × rows × columns)",
            )
        if self._label_request:
            label = self._label_request
        elif self.schema.label_aliases:
            label = next((a for a in self.schema.label_aliases if a in names), "")
        else:
            label = self.schema.label_column
        if not label or label not in names:
            wanted = repr(label) if label else " or ".join(repr(a) for a in self.schema.label_aliases)
            raise DatasetError(
                path,
                f"missing {'target' if self.task == 'regression' else 'label'} column {wanted}; columns are {names}",
            )
        for s in self._scalar_names:
            if s not in names:
                raise DatasetError(
                    path,
                    f"missing scalar column {s!r}; columns are {names} (choose scalars=[...] to change which are read)",
                )
        return label

    def _read_columns(self, f: int, columns: list[str]) -> pa.Table:
        try:
            return self._open(f).read(columns=columns, use_threads=False)
        except (pa.ArrowInvalid, OSError) as err:
            raise DatasetError(self._paths[f], f"cannot read columns {columns}: {err}") from err

    def _labels_from(self, col: pa.ChunkedArray, path: Path) -> np.ndarray:
        name = self.label_column
        if col.null_count:
            raise DatasetError(path, f"column {name!r} has {col.null_count} null value(s)")
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            raise DatasetError(path, f"column {name!r} has type {col.type}, expected a number")
        y = col.to_numpy().astype(np.float64)
        if not np.isfinite(y).all():
            raise DatasetError(
                path, f"column {name!r} has NaN or infinite values (first at row {int(np.argmin(np.isfinite(y)))})"
            )
        if self.task == "binary":
            bad = ~np.isin(y, (0.0, 1.0))
            if bad.any():
                raise DatasetError(
                    path,
                    f"column {name!r} has labels outside {{0, 1}}: "
                    f"{np.unique(y[bad])[:5].tolist()} (first at row {int(np.argmax(bad))})",
                )
        return y

    def _scalars_from(self, table: pa.Table, path: Path) -> np.ndarray:
        cols = []
        for s in self._scalar_names:
            col = table.column(s)
            if col.null_count or not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
                raise DatasetError(
                    path, f"scalar column {s!r} must be numeric without nulls (type {col.type}, {col.null_count} nulls)"
                )
            v = col.to_numpy().astype(np.float64)
            if not np.isfinite(v).all():
                raise DatasetError(path, f"scalar column {s!r} has NaN or infinite values")
            cols.append(v)
        return np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0))

    def _check_first_image(self, f: int) -> None:
        self._read_row_groups(f, np.array([0]), select=False)

    def _row_group_batches(self, f: int, groups: np.ndarray) -> Iterator[np.ndarray]:
        offsets = self._rg_offsets[f]
        row_bytes = int(np.prod((len(self._file_channels), *self._image_size))) * 16
        limit = max(1, self.memory_budget_bytes // row_bytes)
        start, rows = 0, 0
        for i, g in enumerate(groups):
            n = int(offsets[g + 1] - offsets[g])
            if rows and rows + n > limit:
                yield groups[start:i]
                start, rows = i, 0
            rows += n
        if start < len(groups):
            yield groups[start:]

    def _read_row_groups(self, f: int, groups: np.ndarray, select: bool = True) -> np.ndarray:
        path = self._paths[f]
        try:
            table = self._open(f).read_row_groups(
                [int(g) for g in groups], columns=[self.image_column], use_threads=False
            )
        except (pa.ArrowInvalid, OSError) as err:
            raise DatasetError(
                path,
                f"cannot read column {self.image_column!r} in row groups "
                f"{int(groups[0])}..{int(groups[-1])} (truncated or corrupt): {err}",
            ) from err
        first_row = int(self._rg_offsets[f][groups[0]]) if hasattr(self, "_rg_offsets") else 0
        x = nested_to_numpy(
            table.column(self.image_column),
            (len(self._file_channels), *self._image_size),
            path,
            self.image_column,
            first_row,
        )
        check_finite(x, path, self.image_column, np.arange(first_row, first_row + x.shape[0]))
        if select and self._select != list(range(len(self._file_channels))):
            x = x[:, self._select]
        return x


def nested_to_numpy(
    column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], path: Path, field_name: str, first_row: int = 0
) -> np.ndarray:
    """Flatten a nested list column into a contiguous ``(rows, *shape)`` float32 array.

    Walks the list levels through their offsets (no Python objects per element) and checks that
    every list at level ``k`` has exactly ``shape[k]`` items and that nothing is null, so a file
    with the wrong nesting or channel count fails with the row and level named.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n_rows = len(arr)
    what = ("channels", "rows (η)", "columns (φ)")
    span = 1
    for level, dim in enumerate(shape):
        if arr.null_count:
            bad = int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))
            raise DatasetError(
                path, f"field {field_name!r} has a null at nesting level {level} (row {first_row + bad // span})"
            )
        if not (
            pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type)
        ):
            raise DatasetError(path, f"field {field_name!r} is nested {level} level(s) deep, expected {len(shape)}")
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        wrong = lengths != dim
        if wrong.any():
            i = int(np.argmax(wrong))
            label = what[level] if level < len(what) else f"items at level {level}"
            raise DatasetError(
                path,
                f"field {field_name!r} row {first_row + i // span} has {int(lengths[i])} "
                f"{label}, expected {dim} (expected shape {tuple(shape)})",
            )
        arr = arr.flatten()
        span *= dim
    if arr.null_count:
        raise DatasetError(path, f"field {field_name!r} has {arr.null_count} null pixel value(s)")
    if not pa.types.is_floating(arr.type):
        raise DatasetError(path, f"field {field_name!r} holds {arr.type}, expected float or double")
    values = arr.to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(n_rows, *shape)


def parquet_schema_guess(path: Path) -> str | None:
    """Which jet-image format a Parquet file holds, from its columns and first image's channel count."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(path, f"cannot open as Parquet (truncated or not a Parquet file): {err}") from err
    names = pf.schema_arrow.names
    if "X_jet" in names and any(a in names for a in TARGET_ALIASES):
        return "top-mass"
    if "X_jets" in names and "y" in names:
        if pf.metadata.num_rows == 0:
            raise DatasetError(path, "file holds no rows (empty)")
        first = pf.read_row_group(0, columns=["X_jets"]).column(0).combine_chunks()
        if len(first) == 0 or not first[0].is_valid:
            raise DatasetError(path, "field 'X_jets' row 0 is null (no image); drop the row or fix the file")
        n_channels = pc.list_value_length(first).to_numpy(zero_copy_only=False)[0]
        return {3: "quark-gluon", 8: "top"}.get(int(n_channels))
    return None


def sniff_parquet(path: Path) -> str:
    """The jet-image format of a Parquet file (:func:`parquet_schema_guess`), or an error."""
    guess = parquet_schema_guess(path)
    if guess is None:
        raise DatasetError(
            path,
            "Parquet columns match no known schema (quark-gluon/top: X_jets + y; top-mass: X_jet + m); pass --format",
        )
    return guess


_PARQUET = Sniffer(sniff_parquet, ".parquet", suffixes=(".parquet", ".pq"))
register_reader("quark-gluon", "qg", sniffer=_PARQUET)(partial(JetParquet, schema="quark-gluon"))
register_reader("top", sniffer=_PARQUET)(partial(JetParquet, schema="top"))
register_reader("top-mass", sniffer=_PARQUET)(partial(JetParquet, schema="top-mass"))
