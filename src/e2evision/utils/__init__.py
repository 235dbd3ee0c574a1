"""Small helpers shared by every layer: atomic files, seeding, provenance."""

from e2evision.utils.io import atomic_path, atomic_write_json, atomic_write_text, open_npz
from e2evision.utils.provenance import data_fingerprint, package_versions
from e2evision.utils.seeding import seed_everything

__all__ = [
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "data_fingerprint",
    "open_npz",
    "package_versions",
    "seed_everything",
]
