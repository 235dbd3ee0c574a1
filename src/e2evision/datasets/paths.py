"""Turn what a user typed (files, directories, glob patterns) into a sorted list of data files."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from e2evision.datasets.base import DatasetError
from e2evision.safety import refuse_duplicates, require_regular_file

#: data files of every format; a folder that mixes them is refused rather than half-read
_DATA_SUFFIXES = (".parquet", ".pq", ".h5", ".hdf5")

PathArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def as_list(paths: PathArg) -> list[str | os.PathLike[str]]:
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def expand_paths(
    paths: PathArg,
    suffixes: Sequence[str],
    *,
    kind: str,
    sort_key: Callable[[Path], object] | None = None,
) -> list[Path]:
    """Files from paths, directories (their files with one of ``suffixes``) and glob patterns.

    A directory contributes its matching files sorted by ``sort_key`` (default: name); a pattern its
    matches in sorted order; explicit files are kept in the order given (sample numbering follows
    it). ``.snappy.parquet`` matches ``.parquet``: suffixes are compared with the name's end.
    """
    items = as_list(paths)
    if not items:
        raise ValueError(f"no {kind} files given")
    lowered = tuple(s.lower() for s in suffixes)
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        p = Path(text)
        if any(ch in text for ch in "*?[") and not p.exists():
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                raise DatasetError(p, f"the pattern matches no {kind} files")
            out.extend(matches)
        elif p.is_dir():
            found = [q for q in p.iterdir() if q.is_file() and q.name.lower().endswith(lowered)]
            other = sorted(
                q.name
                for q in p.iterdir()
                if q.is_file() and q.name.lower().endswith(_DATA_SUFFIXES) and not q.name.lower().endswith(lowered)
            )
            if found and other:
                raise DatasetError(
                    p,
                    f"mixes formats: {other[0]} besides the {kind} files, and only one "
                    "format is read from a folder; put each dataset in its own folder",
                )
            if not found:
                raise DatasetError(p, f"directory holds no {kind} files ({', '.join(suffixes)})")
            out.extend(sorted(found, key=sort_key or (lambda q: q.name)))
        else:
            if not p.exists():
                raise DatasetError(p, "file not found")
            out.append(require_regular_file(p))
    refuse_duplicates(out)
    return out
