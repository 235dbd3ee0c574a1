"""Shared fixtures: small files in the public schemas, written independently of the simulators."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


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


@pytest.fixture
def egamma_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Two single-class files (photons narrow, electrons wide in φ) and the arrays written."""
    rng = np.random.default_rng(0)
    xp, xe = blob_images(60, 1.0, rng), blob_images(60, 1.8, rng)
    p = write_egamma_file(tmp_path / "SinglePhotonPt50_IMGCROPS_n60.hdf5", xp, np.zeros(60, np.float32))
    e = write_egamma_file(tmp_path / "SingleElectronPt50_IMGCROPS_n60.hdf5", xe, np.ones(60, np.float32))
    return p, e, np.concatenate([xp, xe]), np.concatenate([np.zeros(60), np.ones(60)]).astype(np.float32)
