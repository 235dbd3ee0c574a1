"""One reader interface for every public format.

A reader knows its files, sample count, image shape and labels up front (cheap header reads),
and hands out images in channels-first float32 batches on demand, so that nothing needs a whole
file in memory. Validation problems raise :class:`DatasetError` naming the file and the problem.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from e2evision.errors import DatasetError  # defined with its family; importable here as before


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

    #: ``"binary"``, ``"multiclass"`` (labels 0..K-1) or ``"regression"`` (labels are targets)
    task: str = "binary"

    @property
    def class_names(self) -> list[str]:
        """Names of the label values 0, 1, ... (empty for regression)."""
        return [] if self.task == "regression" else ["0", "1"]

    @property
    def scalar_names(self) -> list[str]:
        """Names of the per-sample scalar features this reader delivers (pt, m0, ieta, ...)."""
        return []

    def read_scalars(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scalar features ``(N, len(scalar_names))`` float32 of the given samples."""
        if self.scalar_names:
            raise NotImplementedError(f"{type(self).__name__} lists scalars but cannot read them")
        return np.zeros((len(np.asarray(indices).reshape(-1)), 0), dtype=np.float32)

    @abc.abstractmethod
    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of the given global sample indices, in the order asked for."""

    def __len__(self) -> int:
        return self.n_samples

    def checked_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """``indices`` as a flat int64 array; an IndexError naming the dataset if one is out of range."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_samples):
            raise IndexError(f"sample index out of range [0, {self.n_samples}) for {self.paths[0]}")
        return idx

    #: bound on the bytes of one streamed batch (readers may hold a decoded copy besides it)
    memory_budget_bytes: int = 256 * 2**20

    def default_batch_size(self) -> int:
        """Samples per streamed batch: as many float32 images as fit the memory budget, ≤ 4096."""
        row = int(np.prod(self.image_shape)) * 4
        return max(1, min(4096, self.memory_budget_bytes // (4 * row)))

    def iter_batches(self, batch_size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream the whole dataset in order, ``batch_size`` samples at a time (default: within budget)."""
        batch_size = batch_size or self.default_batch_size()
        for start in range(0, self.n_samples, batch_size):
            idx = np.arange(start, min(start + batch_size, self.n_samples))
            yield self.read(idx)

    def channel_stats(self, batch_size: int | None = None, progress: bool = False) -> ChannelStats:
        """Per-channel mean/std/min/max in one streaming pass (also checks every value)."""
        stats = ChannelStats(self.image_shape[0])
        batch_size = batch_size or self.default_batch_size()
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

    def label_summary(self) -> dict[str, float | int]:
        """Counts per label for classification; range and moments of the target for regression."""
        if self.task != "regression":
            return self.label_counts()
        y = self.labels().astype(np.float64)
        return {
            "count": int(y.size),
            "mean": float(y.mean()),
            "std": float(y.std()),
            "min": float(y.min()),
            "max": float(y.max()),
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open file handles (readers reopen lazily)."""

    def __enter__(self) -> ImageDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ColumnsInMemory:
    """Labels and scalar features held as arrays (``_labels``, ``_scalars``, ``_scalar_names``).

    Readers of row-wise formats load these small columns once at open time; this mixin serves
    them, so that each reader only implements how images are read.
    """

    _labels: np.ndarray
    _scalars: np.ndarray
    _scalar_names: list[str]

    @property
    def scalar_names(self) -> list[str]:
        return list(self._scalar_names)

    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def read_scalars(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._scalars[self.checked_indices(indices)]  # type: ignore[attr-defined]


def select_channels(available: Sequence[str], wanted: Sequence[str | int] | None, path: Path) -> list[int]:
    """Positions of ``wanted`` channels (names or indices) among ``available``, in the order wanted."""
    if wanted is None:
        return list(range(len(available)))
    out: list[int] = []
    for w in wanted:
        if isinstance(w, int) or (isinstance(w, str) and w.isdigit()):
            i = int(w)
            if not 0 <= i < len(available):
                raise DatasetError(path, f"channel index {i} out of range: the file has {len(available)} channels")
            out.append(i)
        elif w in available:
            out.append(list(available).index(w))
        else:
            raise DatasetError(path, f"no channel named {w!r}; channels are {list(available)}")
    if not out:
        raise DatasetError(path, "no channels selected")
    return out


def _label_key(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def check_finite(x: np.ndarray, path: Path, field_name: str, indices: np.ndarray) -> None:
    """Raise a :class:`DatasetError` naming the first sample with NaN or inf values."""
    bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
    if bad.any():
        first = int(np.asarray(indices)[np.argmax(bad)])
        kind = "NaN" if np.isnan(x[np.argmax(bad)]).any() else "infinite"
        raise DatasetError(
            path,
            f"field '{field_name}' has {kind} values in sample {first} ({int(bad.sum())} bad sample(s) in this read)",
        )
