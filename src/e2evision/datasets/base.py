"""One reader interface for every public format.

A reader knows its files, sample count, image shape and labels up front (cheap header reads),
and hands out images in channels-first float32 batches on demand, so that nothing needs a whole
file in memory. Validation problems raise :class:`DatasetError` naming the file and the problem.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A data file is unusable; the message names the file, the field and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class ChannelStats:
    """Per-channel statistics accumulated in one streaming pass (Chan et al. parallel update)."""

    n_channels: int
    count: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    minimum: np.ndarray = field(init=False)
    maximum: np.ndarray = field(init=False)
    nonzero: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        c = self.n_channels
        self.count = np.zeros(c, dtype=np.float64)
        self.mean = np.zeros(c, dtype=np.float64)
        self.m2 = np.zeros(c, dtype=np.float64)
        self.minimum = np.full(c, np.inf)
        self.maximum = np.full(c, -np.inf)
        self.nonzero = np.zeros(c, dtype=np.float64)

    def update(self, x: np.ndarray) -> None:
        """Add a batch ``x`` of shape (N, C, H, W)."""
        flat = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1).astype(np.float64, copy=False)
        n_b = flat.shape[1]
        if n_b == 0:
            return
        mean_b = flat.mean(axis=1)
        m2_b = ((flat - mean_b[:, None]) ** 2).sum(axis=1)
        n_a = self.count
        total = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / total
        self.m2 = self.m2 + m2_b + delta**2 * n_a * n_b / total
        self.count = total
        self.minimum = np.minimum(self.minimum, flat.min(axis=1))
        self.maximum = np.maximum(self.maximum, flat.max(axis=1))
        self.nonzero += (flat != 0).sum(axis=1)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(self.count, 1))

    def as_dict(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        return {
            name: {
                "mean": float(self.mean[i]),
                "std": float(self.std[i]),
                "min": float(self.minimum[i]),
                "max": float(self.maximum[i]),
                "nonzero_fraction": float(self.nonzero[i] / max(self.count[i], 1)),
            }
            for i, name in enumerate(names)
        }


class ImageDataset(abc.ABC):
    """The reader interface every public format implements.

    Images come out channels-first ``(N, C, H, W)`` float32 whatever the file's layout, labels (or
    regression targets) as float32 ``(N,)``.
    """

    #: short name of the format, e.g. ``"egamma-hdf5"``
    format: str = ""

    @property
    @abc.abstractmethod
    def paths(self) -> list[Path]: ...

    @property
    @abc.abstractmethod
    def n_samples(self) -> int: ...

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image as delivered."""

    @property
    @abc.abstractmethod
    def channel_names(self) -> list[str]: ...

    @abc.abstractmethod
    def labels(self) -> np.ndarray:
        """All labels at once (small: one float per sample)."""

    @abc.abstractmethod
    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of the given global sample indices, in the order asked for."""

    def __len__(self) -> int:
        return self.n_samples

    def iter_batches(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream the whole dataset in order, ``batch_size`` samples at a time."""
        for start in range(0, self.n_samples, batch_size):
            idx = np.arange(start, min(start + batch_size, self.n_samples))
            yield self.read(idx)

    def channel_stats(self, batch_size: int = 4096, progress: bool = False) -> ChannelStats:
        """Per-channel mean/std/min/max in one streaming pass (also checks every value)."""
        stats = ChannelStats(self.image_shape[0])
        batches = self.iter_batches(batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=-(-self.n_samples // batch_size), desc="scanning", unit="batch")
        for x, _ in batches:
            stats.update(x)
        return stats

    def label_counts(self) -> dict[str, int]:
        values, counts = np.unique(self.labels(), return_counts=True)
        return {_label_key(v): int(c) for v, c in zip(values, counts)}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open file handles (readers reopen lazily)."""

    def __enter__(self) -> ImageDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _label_key(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def check_finite(x: np.ndarray, path: Path, field_name: str, indices: np.ndarray) -> None:
    """Raise a :class:`DatasetError` naming the first sample with NaN or inf values."""
    bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
    if bad.any():
        first = int(np.asarray(indices)[np.argmax(bad)])
        kind = "NaN" if np.isnan(x[np.argmax(bad)]).any() else "infinite"
        raise DatasetError(
            path, f"field '{field_name}' has {kind} values in sample {first} "
            f"({int(bad.sum())} bad sample(s) in this read)"
        )
