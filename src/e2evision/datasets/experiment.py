"""The data an experiment config names: its reader (with the features table) and its model's scalars.

Used by everything that reads an experiment's data again — training, ensembles (scalar features),
export checks and saliency — so they all open it the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def open_experiment_data(cfg: Any, paths: list[str] | None = None) -> Any:
    """The reader of ``cfg.data`` (or of ``paths``), with its features table when one is configured."""
    from e2evision.datasets.feature_table import open_with_features

    return open_with_features(
        list(paths) if paths else cfg.data.paths, cfg.data.format, cfg.data.features, **cfg.data.kwargs
    )


def model_scalars(reader: Any, cfg: Any, indices: np.ndarray) -> np.ndarray | None:
    """The raw scalar inputs (``data.scalars``) of ``indices``, or None for an image-only model."""
    if not cfg.data.scalars:
        return None
    from e2evision.datasets.feature_table import scalar_columns

    cols = scalar_columns(reader, cfg.data.scalars)
    return np.asarray(reader.read_scalars(indices), dtype=np.float32)[:, cols]
