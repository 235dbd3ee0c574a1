"""The store's manifest checks, kept importable here; they live in :mod:`e2evision.datasets.store_manifest`.

The reader (in :mod:`e2evision.datasets`) and the writer (here) share them, and the readers' layer
must not import this package.
"""

from e2evision.datasets.store_manifest import (
    FORMAT_MARKER,
    MANIFEST,
    REBUILD,
    STORE_VERSION,
    TOP_LEVEL,
    check_finite,
    check_labels,
    file_sha256,
    inside,
    is_store_dir,
    manifest_digest,
    read_manifest,
    validate_manifest,
    verify_file,
)

__all__ = [
    "FORMAT_MARKER",
    "MANIFEST",
    "REBUILD",
    "STORE_VERSION",
    "TOP_LEVEL",
    "check_finite",
    "check_labels",
    "file_sha256",
    "inside",
    "is_store_dir",
    "manifest_digest",
    "read_manifest",
    "validate_manifest",
    "verify_file",
]
