"""Shared fixtures; the file builders they use live in schema_files.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from schema_files import blob_images, write_egamma_file

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def egamma_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Two single-class files (photons narrow, electrons wide in φ) and the arrays written."""
    rng = np.random.default_rng(0)
    xp, xe = blob_images(60, 1.0, rng), blob_images(60, 1.8, rng)
    p = write_egamma_file(tmp_path / "SinglePhotonPt50_IMGCROPS_n60.hdf5", xp, np.zeros(60, np.float32))
    e = write_egamma_file(tmp_path / "SingleElectronPt50_IMGCROPS_n60.hdf5", xe, np.ones(60, np.float32))
    return p, e, np.concatenate([xp, xe]), np.concatenate([np.zeros(60), np.ones(60)]).astype(np.float32)
