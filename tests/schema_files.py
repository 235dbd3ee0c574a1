"""Small files in the public schemas, written independently of the simulators and readers.

Test modules import these builders from here (``from schema_files import ...``); conftest.py
holds only fixtures.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def blob_images(n: int, width_phi: float, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Gaussian energy blobs near the centre, channels-last (N, size, size, 2): energy, time."""
    eta = np.arange(size)[None, :, None]
    phi = np.arange(size)[None, None, :]
    c_eta = size / 2 + rng.normal(0, 0.5, (n, 1, 1))
    c_phi = size / 2 + rng.normal(0, 0.5, (n, 1, 1))
    w_phi = width_phi * rng.uniform(0.8, 1.2, (n, 1, 1))
    energy = 50 * np.exp(-0.5 * ((eta - c_eta) / 1.0) ** 2 - 0.5 * ((phi - c_phi) / w_phi) ** 2)
    energy = energy + rng.normal(0, 0.05, energy.shape)
    energy[energy < 0.15] = 0.0
    time = np.where(energy > 0, rng.normal(0, 0.5, energy.shape), 0.0)
    return np.stack([energy, time], axis=-1).astype(np.float32)


def write_egamma_file(path: Path, x: np.ndarray, y: np.ndarray, **overrides: object) -> Path:
    """Write ``X``/``y`` in the public electron/photon schema; ``overrides`` replace datasets."""
    with h5py.File(path, "w") as h5:
        data = {"X": x, "y": y, **overrides}
        for key, value in data.items():
            if value is not None:
                h5.create_dataset(key, data=value)
    return path


def nested_list_array(x: np.ndarray, item_name: str = "item", dtype: str = "double"):
    """A ``list<list<list<dtype>>>`` pyarrow array of ``x`` (N, C, H, W), built through offsets."""
    import pyarrow as pa

    value_type = pa.float64() if dtype == "double" else pa.float32()
    arr = pa.array(x.reshape(-1).astype(np.float64 if dtype == "double" else np.float32), type=value_type)
    for dim, count in zip(x.shape[:0:-1], np.cumprod(x.shape[:-1])[::-1]):
        offsets = pa.array(np.arange(0, count * dim + 1, dim, dtype=np.int32))
        list_type = pa.list_(pa.field(item_name, arr.type))
        arr = pa.ListArray.from_arrays(offsets, arr, type=list_type)
    return arr


def sparse_jets(n: int, channels: int, rng: np.random.Generator, size: int = 125, hits: int = 60) -> np.ndarray:
    """Sparse, jet-like images (N, C, size, size): a few hundred exponential deposits near the centre."""
    x = np.zeros((n, channels, size, size), np.float64)
    for i in range(n):
        k = int(rng.integers(hits // 2, hits * 2))
        c = rng.integers(0, channels, k)
        r = np.clip(np.round(rng.normal(size / 2, size / 10, (2, k))).astype(int), 0, size - 1)
        x[i, c, r[0], r[1]] += rng.exponential(2.0, k).astype(np.float32)
    return x


def write_jet_parquet(
    path: Path, columns: dict, *, item_name: str = "item", dtype: str = "double", row_group_size: int = 1
) -> Path:
    """Write columns in the public Parquet layout: images nested lists, one row per row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {
        k: (nested_list_array(v, item_name, dtype) if isinstance(v, np.ndarray) and v.ndim == 4 else v)
        for k, v in columns.items()
    }
    pq.write_table(pa.table(arrays), path, row_group_size=row_group_size, compression="snappy")
    return path
