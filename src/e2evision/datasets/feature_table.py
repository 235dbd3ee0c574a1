"""Per-sample features stored beside the images (``e2evision features``), joined to a reader.

A model that fuses physics features with the image (seed 004's lensing ViT) reads them as scalar
inputs. :class:`WithFeatureTable` wraps any reader and appends the table's numeric columns to the
reader's own scalars, matching rows by the ``file`` key (``class_folder/name.npy``) when the reader
has one file per sample, else by the ``index`` column. A table that misses a sample, names a
sample twice, disagrees on a label or holds a NaN is an error that names the file and the row:
a feature silently attached to the wrong image would be a wrong answer, not a crash.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from e2evision.datasets.base import DatasetError, ImageDataset
from e2evision.datasets.registry import open_dataset

#: columns of a features table that are keys or labels, not features
KEY_COLUMNS = ("file", "index", "label", "class")
#: key columns that hold text (the others hold numbers)
TEXT_COLUMNS = ("file", "class")
#: the entry of a ``.npz`` table that embeds its JSON sidecar (metadata, not a column)
SIDECAR_ENTRY = "params_json"


def read_table(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Columns of a features table (``.csv`` or ``.npz``), whatever features it holds.

    In a CSV the key columns ``file`` and ``class`` are text; a column whose every value is an
    integer literal (``index``, counts such as ``n_peaks``) is int64, any other float64 (floats are
    written with their ``repr``, so ``1.0`` stays a float). A ``.npz`` keeps its stored dtypes.
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if k != SIDECAR_ENTRY}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: empty features file")
    header, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(header):
        values = [r[i] for r in body]
        out[name] = np.array(values, dtype=str) if name in TEXT_COLUMNS else _numbers(values)
    return out


def _numbers(values: list[str]) -> np.ndarray:
    """int64 when every value is an integer literal (``3``, not ``3.0``), else float64."""
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.array(values, dtype=np.float64)


def default_table_path(reader: ImageDataset) -> Path:
    """Where ``e2evision features`` writes by default: ``DATA/features.csv``."""
    roots = [Path(p) for p in reader.paths]
    if not roots or not roots[0].is_dir():
        raise DatasetError(
            roots[0] if roots else Path("."), "data.features=auto needs the data to be a folder holding features.csv"
        )
    return roots[0] / "features.csv"


class WithFeatureTable(ImageDataset):
    """``reader`` with the numeric columns of a features table appended to its scalars."""

    def __init__(self, reader: ImageDataset, table: str | os.PathLike[str]) -> None:
        self.reader = reader
        self.table_path = Path(table)
        if not self.table_path.is_file():
            raise DatasetError(self.table_path, "features table not found (write it with `e2evision features DATA`)")
        try:
            columns = read_table(self.table_path)
        except (ValueError, KeyError, IndexError) as err:
            raise DatasetError(self.table_path, f"cannot read the features table: {err}") from err
        names = [k for k in columns if k not in KEY_COLUMNS]
        if not names:
            raise DatasetError(self.table_path, "the table has no feature columns")
        n = reader.n_samples
        rows = self._rows(columns, n)
        values = np.stack([np.asarray(columns[k], dtype=np.float64) for k in names], axis=1)[rows]
        bad = ~np.isfinite(values)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DatasetError(self.table_path, f"column '{names[c]}' is not finite for sample {int(r)}")
        if "label" in columns:
            labels = np.asarray(columns["label"], dtype=np.float64)[rows]
            wrong = np.flatnonzero(labels != reader.labels().astype(np.float64))
            if wrong.size:
                raise DatasetError(
                    self.table_path,
                    f"label of sample {int(wrong[0])} disagrees with the data "
                    f"({wrong.size} sample(s)): the table was made from other files",
                )
        self._feature_names = names
        self._features = values.astype(np.float32)
        self.format = reader.format
        self.task = reader.task

    def _rows(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Row of the table for each sample of the reader."""
        files = getattr(self.reader, "files", None)
        if "file" in columns and isinstance(files, (list, tuple)) and len(files) == n:
            keys = [f"{Path(f).parent.name}/{Path(f).name}" for f in files]
            where = {str(k): i for i, k in enumerate(columns["file"])}
            if len(where) != len(columns["file"]):
                raise DatasetError(self.table_path, "a file is listed twice in column 'file'")
            missing = [k for k in keys if k not in where]
            if missing:
                raise DatasetError(
                    self.table_path,
                    f"no row for {missing[0]} ({len(missing)} image(s) missing): recompute the features for this data",
                )
            return np.array([where[k] for k in keys], dtype=np.int64)
        if "index" not in columns:
            raise DatasetError(self.table_path, "the table has neither a 'file' nor an 'index' column to join on")
        index = np.asarray(columns["index"], dtype=np.int64)
        if index.size != n or not np.array_equal(np.sort(index), np.arange(n)):
            raise DatasetError(
                self.table_path, f"column 'index' must list each of the {n} samples once (it has {index.size} rows)"
            )
        rows = np.empty(n, dtype=np.int64)
        rows[index] = np.arange(n)
        return rows

    # -------------------------------------------------------------------------- the interface
    @property
    def paths(self) -> list[Path]:
        return self.reader.paths

    @property
    def n_samples(self) -> int:
        return self.reader.n_samples

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.reader.image_shape

    @property
    def channel_names(self) -> list[str]:
        return self.reader.channel_names

    @property
    def class_names(self) -> list[str]:
        return self.reader.class_names

    @property
    def scalar_names(self) -> list[str]:
        return list(self.reader.scalar_names) + list(self._feature_names)

    @property
    def feature_names(self) -> list[str]:
        return list(self._feature_names)

    def labels(self) -> np.ndarray:
        return self.reader.labels()

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.reader.read(indices)

    def read_scalars(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = self.checked_indices(indices)
        own = self.reader.read_scalars(idx).astype(np.float32)
        return np.hstack([own, self._features[idx]])

    def close(self) -> None:
        self.reader.close()


def scalar_columns(reader: ImageDataset, wanted: Sequence[str]) -> list[int]:
    """Positions of ``wanted`` among the reader's scalars; an error lists what there is."""
    available = list(reader.scalar_names)
    out = []
    for name in wanted:
        if name not in available:
            raise DatasetError(
                reader.paths[0],
                f"data.scalars: no scalar named {name!r}; this data has "
                f"{available or 'none'} (features computed beside the data, such as the lens features, come from data.features)",
            )
        out.append(available.index(name))
    if len(set(out)) != len(out):
        raise ValueError(f"data.scalars lists a name twice: {list(wanted)}")
    return out


def open_with_features(paths: object, format: str | None, features: str | None, **kwargs: object) -> ImageDataset:
    """``open_dataset`` plus, when ``features`` is set, its table (``"auto"``: ``DATA/features.csv``)."""
    reader = open_dataset(paths, format, **kwargs)  # type: ignore[arg-type]
    if not features:
        return reader
    table = default_table_path(reader) if features == "auto" else Path(features)
    return WithFeatureTable(reader, table)
