"""Safe publication of a store: who may write ``--out``, what ``--overwrite`` may replace.

Weeks of grid time sit in the folders users point ``convert`` at, so:

* ``--overwrite`` replaces only a directory that provably is an e2evision store (a valid manifest
  and nothing but store files, see :func:`~e2evision.datasets.store_manifest.is_store_dir`), never a file,
  a link, any other folder, or a folder that holds one of the conversion's inputs;
* one writer per store at a time: an exclusive ``flock`` on ``.NAME.lock`` beside the store is
  held from the first check to the final rename, so a second conversion to the same ``--out``
  stops at once instead of racing; the kernel drops the lock when a writer dies (even by
  ``kill -9``), so a crashed conversion never blocks the next one;
* the rename that publishes refuses to replace anything that appeared or changed at ``--out``
  since the conversion started (a writer that does not take the lock);
* only partial folders whose writer is dead are cleaned up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from e2evision.datasets.base import DatasetError
from e2evision.datasets.store_manifest import FORMAT_MARKER, MANIFEST, is_store_dir


def lock_path(final: Path) -> Path:
    return final.parent / f".{final.name}.lock"


@contextlib.contextmanager
def writer_lock(final: Path) -> Iterator[None]:
    """Hold the store's exclusive writer lock, or refuse at once if another process holds it."""
    path = lock_path(final)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise DatasetError(
                final,
                f"another conversion (pid {holder}) is writing this store (lock {path.name}); "
                "wait for it to finish or choose another --out",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def identity(final: Path) -> tuple[int, int, int] | None:
    """What is at ``final`` (device, inode, manifest mtime), or None; compared before publishing."""
    try:
        st = os.lstat(final)
    except FileNotFoundError:
        return None
    try:
        mt = os.stat(final / MANIFEST).st_mtime_ns
    except OSError:
        mt = -1
    return (st.st_dev, st.st_ino, mt)


def check_target(final: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse an ``--out`` that is not ours to replace (see the module docstring)."""
    exists = final.exists() or final.is_symlink()
    if not exists:
        return
    if not overwrite:
        raise FileExistsError(f"{final}: already exists (pass --overwrite to replace an e2evision store there)")
    if final.is_symlink():
        raise DatasetError(
            final,
            "is a symbolic link; --overwrite never replaces a link (remove it or choose another --out)",
        )
    if not final.is_dir():
        raise DatasetError(
            final,
            "is a file, not an e2evision store; --overwrite replaces only a store directory (choose another --out)",
        )
    real = final.resolve()
    for p in inputs:
        q = Path(p).resolve()
        if q == real or q.is_relative_to(real):
            raise DatasetError(
                final,
                f"holds the input {p}; --overwrite never replaces a folder that holds an input (choose another --out)",
            )
    if not is_store_dir(final):
        raise DatasetError(
            final,
            f"is not an e2evision store (it needs a valid {MANIFEST} with format "
            f"{FORMAT_MARKER!r} and nothing but store files); --overwrite replaces only a "
            "store, so choose another --out",
        )


def replace_store(tmp: Path, final: Path) -> None:
    """Put the finished store ``tmp`` at ``final`` in place of the old one, then delete the old.

    On Linux one ``renameat2(RENAME_EXCHANGE)`` swaps the two atomically, so ``final`` is never
    missing; elsewhere (or on a file system without it) the old store is renamed aside first.
    """
    if _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old store
        return
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def new_partial(final: Path) -> Path:
    """A fresh hidden work folder beside ``final``, named after this process."""
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}-{os.urandom(4).hex()}"
    (tmp / "chunks").mkdir(parents=True)
    return tmp


def remove_dead_partials(final: Path) -> None:
    """Delete partial (and replaced ``.old-*``) folders left by conversions whose process is gone,
    never a live one's."""
    stale_dirs = [
        *final.parent.glob(f".{final.name}.partial-*"),
        *final.parent.glob(f".{final.name}.old-*"),
    ]
    for stale in stale_dirs:
        pid_text = stale.name.rsplit(".", 1)[1].split("-")[1]
        if pid_text.isdigit() and (int(pid_text) == os.getpid() or _alive(int(pid_text))):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
