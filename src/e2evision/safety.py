"""Checks made before any data file is opened: it is a regular file, and it is given only once.

Opening a FIFO blocks until someone writes to it, and a device can be endless, so a reader that
trusts a name (``x.hdf5``) can hang forever; :func:`require_regular_file` asks the kernel with
``stat`` (which never blocks) first. The same file given twice (``--data a --data a``, two
spellings, a link, a recursive pattern through a symlink loop) would put the same samples in both
the training and the test split, so :func:`refuse_duplicates` compares device and inode numbers.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from e2evision.errors import DatasetError

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def require_regular_file(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a regular file (after links), else a DatasetError naming what it is."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise DatasetError(p, "file not found (or a broken link); check the path") from None
    except OSError as err:
        raise DatasetError(p, f"cannot stat the file ({err.strerror}); check the path and permissions") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise DatasetError(
            p,
            f"is {kind}, not a regular data file (reading it could block or never end); give a regular file",
        )
    return p


def file_key(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(device, inode): equal for two spellings of one file, hard links and symbolic links."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def refuse_duplicates(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Raise if two of ``paths`` are the same file or folder (or one folder holds another)."""
    seen: dict[tuple[int, int], Path] = {}
    resolved: list[tuple[Path, Path]] = []
    for p in paths:
        p = Path(p)
        try:
            key = file_key(p)
        except OSError:
            continue  # a missing path is reported by the reader with its own message
        if key in seen:
            raise DatasetError(
                p,
                f"is the same file as {seen[key]} (given twice, by another spelling or a link); "
                "give each data file once",
            )
        seen[key] = p
        resolved.append((p, p.resolve()))
    for p, real in resolved:
        for q, other in resolved:
            if p is not q and real != other and other.is_relative_to(real) and real.is_dir():
                raise DatasetError(q, f"is inside {p}, which is also given; give each data file once")
