"""What a run records so that it can be reproduced: package versions and a data fingerprint."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_PACKAGES = (
    "e2evision",
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "numpy",
    "h5py",
    "scikit-learn",
    "scipy",
    "matplotlib",
    "pydantic",
    "pyarrow",
    "pythia8mc",
    "fastjet",
    "lenstronomy",
)


def package_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Versions of Python, the platform and every installed package a run depends on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in (*_PACKAGES, *extra):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    torch = sys.modules.get("torch")  # importing torch costs seconds: only ask it when it is loaded
    if torch is not None:
        out["torch"] = torch.__version__  # includes the build tag (+cpu, +cu130), unlike the dist version
        out["cuda"] = str(torch.version.cuda)
        out["cuda_available"] = str(torch.cuda.is_available())
    return out


def data_fingerprint(paths: Iterable[str | os.PathLike[str]], *, chunk: int = 1 << 20) -> str:
    """SHA-256 over each file's name, size and full contents, in sorted path order.

    The full content is hashed (not just size/mtime) so that two runs can prove they saw the same
    bytes; for the multi-GB public files this costs one sequential read (~1 s/GB).
    """
    digest = hashlib.sha256()
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    for f in sorted(files):
        digest.update(f.name.encode())
        digest.update(str(f.stat().st_size).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return "sha256:" + digest.hexdigest()
