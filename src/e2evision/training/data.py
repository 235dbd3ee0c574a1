"""From a reader to DataLoaders: in RAM when the images fit, streamed from the files otherwise."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

from e2evision.datasets.base import ChannelStats, ImageDataset


class ReaderDataset(Dataset):
    """Lazy view of ``indices`` of a reader; ``__getitems__`` reads a whole batch in one call."""

    def __init__(self, reader: ImageDataset, indices: Sequence[int] | np.ndarray) -> None:
        self.reader = reader
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.reader.read(self.indices[[i]])
        return torch.from_numpy(x[0]), torch.tensor(y[0])

    def __getitems__(self, items: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.reader.read(self.indices[np.asarray(items)])
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        return list(zip(xt, yt))


def load_in_memory(reader: ImageDataset, indices: np.ndarray, batch_size: int = 4096,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``indices`` (in that order) into two tensors, batch by batch."""
    xs, ys = [], []
    chunks = range(0, len(indices), batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="loading", unit="batch")
    for start in chunks:
        x, y = reader.read(indices[start:start + batch_size])
        xs.append(torch.from_numpy(x))
        ys.append(torch.from_numpy(y))
    return torch.cat(xs), torch.cat(ys)


class SampleSource:
    """The selected samples of a reader, held in RAM if they fit within ``limit_gb``."""

    def __init__(self, reader: ImageDataset, indices: np.ndarray, limit_gb: float, progress: bool = False) -> None:
        self.reader = reader
        self.indices = np.asarray(indices, dtype=np.int64)
        c, h, w = reader.image_shape
        self.bytes_needed = int(self.indices.size) * c * h * w * 4
        self.in_memory = self.bytes_needed <= limit_gb * 1e9
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        if self.in_memory:
            self._x, self._y = load_in_memory(reader, self.indices, progress=progress)

    def labels(self) -> np.ndarray:
        return self.reader.labels()[self.indices]

    def subset(self, rows: np.ndarray) -> Dataset:
        """A dataset of the given positions (into ``self.indices``)."""
        if self.in_memory:
            assert self._x is not None and self._y is not None
            rows_t = torch.as_tensor(rows)
            return TensorDataset(self._x[rows_t], self._y[rows_t])
        return ReaderDataset(self.reader, self.indices[rows])

    def channel_stats(self, rows: np.ndarray, batch_size: int | None = None,
                      transform: Callable[[np.ndarray], np.ndarray] | None = None) -> ChannelStats:
        """Streaming per-channel statistics over the given positions (the training split).

        ``transform`` maps a raw batch to what the statistics describe (zero suppression and scale
        factors come before the fitted affine map).
        """
        c, h, w = self.reader.image_shape
        batch_size = batch_size or max(1, min(4096, (64 << 20) // (c * h * w * 4)))
        stats = ChannelStats(c)
        for start in range(0, len(rows), batch_size):
            part = np.sort(rows[start:start + batch_size])
            if self.in_memory:
                assert self._x is not None
                x = self._x[torch.as_tensor(part)].numpy()
            else:
                x = self.reader.read(self.indices[part])[0]
            stats.update(transform(x) if transform is not None else x)
        return stats


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int = 0,
                pin_memory: bool = False, prefetch_factor: int = 4) -> DataLoader:
    """A DataLoader whose order depends only on ``seed`` (deterministic across runs and worker counts).

    Streamed datasets (:class:`ReaderDataset`) are read a whole batch per call: the sampler hands
    each worker a list of indices and the reader decodes them in one request (sorted by file and
    chunk inside), so workers never split and re-stack single samples. Workers read in parallel
    while the model trains (``prefetch_factor`` batches each), memory holds only those batches,
    and batches arrive in pinned memory for asynchronous host-to-GPU copies when ``pin_memory``.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = dict(num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0,
                   prefetch_factor=prefetch_factor if num_workers > 0 else None)
    if isinstance(dataset, ReaderDataset):
        base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        sampler = BatchSampler(base, batch_size=batch_size, drop_last=False)
        return DataLoader(_BatchView(dataset), batch_size=None, sampler=sampler, **workers)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=False,
                      **workers)


class _BatchView(Dataset):
    """Index with a list of positions, get the stacked batch (for ``batch_size=None`` loaders)."""

    def __init__(self, dataset: ReaderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, items: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset.reader.read(self.dataset.indices[np.asarray(items, dtype=np.int64)])
        return torch.from_numpy(x), torch.from_numpy(y)
