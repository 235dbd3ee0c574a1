"""Streaming prediction tables: Parquet, CSV or a ROOT TTree, written batch by batch.

Each sink receives column dictionaries of NumPy arrays (``source`` as strings); nothing but the
current batch is held. The file appears at its final path only when the sink closes cleanly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("parquet", "csv", "root")
TREE = "predictions"


class Sink:
    """Write batches to a temporary file beside ``path``; ``close()`` renames it into place."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.part")

    def write(self, columns: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def close(self, ok: bool = True) -> None:
        self._finish()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class ArrowSink(Sink):
    """Parquet or CSV through pyarrow's streaming writers."""

    def __init__(self, path: str | os.PathLike[str], fmt: str) -> None:
        super().__init__(path)
        self.fmt = fmt
        self._writer: Any = None

    def write(self, columns: dict[str, np.ndarray]) -> None:
        import pyarrow as pa

        table = pa.table({k: pa.array(v) for k, v in columns.items()})
        if self._writer is None:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
            else:
                import pyarrow.csv as pcsv

                self._writer = pcsv.CSVWriter(self.tmp, table.schema)
        self._writer.write_table(table)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()


class RootSink(Sink):
    """A flat TTree ``predictions`` through uproot; ROOT branches hold numbers, so ``source`` is
    written as ``source_id`` and the file names as the TObjString ``source_files`` (one a line)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        from e2evision.utils.extras import require

        uproot = require("uproot", "root", "Writing a ROOT file")
        self._file = uproot.recreate(self.tmp)
        self._tree: Any = None
        self._sources: dict[str, int] = {}

    def write(self, columns: dict[str, np.ndarray]) -> None:
        cols = {}
        for key, value in columns.items():
            if key == "source":
                ids = [self._sources.setdefault(str(s), len(self._sources)) for s in value]
                cols["source_id"] = np.asarray(ids, dtype=np.int32)
            else:
                cols[branch_name(key)] = np.ascontiguousarray(value)
        if self._tree is None:
            self._tree = self._file.mktree(TREE, {k: v.dtype for k, v in cols.items()})
        self._tree.extend(cols)

    def _finish(self) -> None:
        self._file["source_files"] = "\n".join(self._sources)
        self._file.close()


def branch_name(name: str) -> str:
    """A ROOT-safe branch name (letters, digits, underscores)."""
    return re.sub(r"\W", "_", name)


def open_sink(path: str | os.PathLike[str], fmt: str | None = None) -> Sink:
    """The sink for ``fmt`` (default: from the suffix, Parquet when it says nothing)."""
    fmt = fmt or {".csv": "csv", ".root": "root"}.get(Path(path).suffix.lower(), "parquet")
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return RootSink(path) if fmt == "root" else ArrowSink(path, fmt)
