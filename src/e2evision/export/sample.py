"""A batch of raw inputs from any dataset, as .npy files the C++ tool reads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2evision.export.cpp import save_npy


@dataclass
class Sample:
    images: np.ndarray  # (N, C, H, W) raw float32
    scalars: np.ndarray  # (N, S)
    labels: np.ndarray  # (N,)
    index: np.ndarray  # global sample indices
    scalar_names: list[str]
    channel_names: list[str]


def sample_dataset(
    paths: list[str | os.PathLike[str]],
    n: int,
    *,
    format: str = "auto",
    seed: int | None = None,
    **reader_kwargs: object,
) -> Sample:
    """``n`` samples of a dataset, raw: the first ``n``, or a sorted random subset when ``seed`` is given."""
    from e2evision.datasets import open_dataset

    if n < 1:
        raise ValueError("n must be at least 1")
    with open_dataset(paths, format, **reader_kwargs) as ds:
        total = ds.n_samples
        if seed is None:
            index = np.arange(min(n, total))
        else:
            index = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
        images, labels = ds.read(index)
        scalars = ds.read_scalars(index)
        return Sample(
            np.ascontiguousarray(images, dtype=np.float32),
            np.asarray(scalars, dtype=np.float32),
            np.asarray(labels, dtype=np.float32),
            index,
            list(ds.scalar_names),
            list(ds.channel_names),
        )


def write_sample(
    sample: Sample,
    out: str | os.PathLike[str],
    scalars_out: str | os.PathLike[str] | None = None,
    labels_out: str | os.PathLike[str] | None = None,
) -> list[Path]:
    written = [save_npy(out, sample.images)]
    if scalars_out is not None:
        written.append(save_npy(scalars_out, sample.scalars))
    if labels_out is not None:
        written.append(save_npy(labels_out, sample.labels))
    return written
