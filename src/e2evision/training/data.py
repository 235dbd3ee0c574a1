"""From a reader to DataLoaders: in RAM when the images fit, streamed from the files otherwise.

Training batches come from :class:`EpochBatchSampler`: the order of an epoch is a function of
``(seed, epoch)`` only, each *global* batch is split over the DDP processes, and the position in
the epoch is part of the checkpoint (:class:`ResumableLoader`), so an interrupted run continues
with exactly the batches it would have seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from e2evision.datasets.base import ChannelStats, ImageDataset


class ReaderDataset(Dataset):
    """Lazy view of ``indices`` of a reader; ``__getitems__`` reads a whole batch in one call.

    ``scalars`` (one row per index, held in memory: they are small) make every sample
    ``(image, scalars, label)`` instead of ``(image, label)``.
    """

    def __init__(
        self, reader: ImageDataset, indices: Sequence[int] | np.ndarray, scalars: np.ndarray | None = None
    ) -> None:
        self.reader = reader
        self.indices = np.asarray(indices, dtype=np.int64)
        self.scalars = None if scalars is None else torch.as_tensor(np.asarray(scalars, dtype=np.float32))
        if self.scalars is not None and self.scalars.shape[0] != self.indices.size:
            raise ValueError(f"{self.scalars.shape[0]} rows of scalars for {self.indices.size} samples")

    def __len__(self) -> int:
        return int(self.indices.size)

    def read_batch(self, positions: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, ...]:
        """The stacked batch of the given positions (into ``indices``)."""
        pos = np.asarray(positions, dtype=np.int64)
        x, y = self.reader.read(self.indices[pos])
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        if self.scalars is None:
            return xt, yt
        return xt, self.scalars[torch.from_numpy(pos)], yt

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.read_batch([i]))

    def __getitems__(self, items: list[int]) -> list[tuple[torch.Tensor, ...]]:
        return list(zip(*self.read_batch(items)))


def load_in_memory(
    reader: ImageDataset, indices: np.ndarray, batch_size: int = 4096, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``indices`` (in that order) into two tensors, batch by batch.

    The tensors are allocated once at their final size and filled in place: collecting the
    batches and concatenating them would hold the data twice at the end of the load.
    """
    indices = np.asarray(indices, dtype=np.int64)
    x = torch.empty((indices.size, *reader.image_shape), dtype=torch.float32)
    y: torch.Tensor | None = None
    chunks = range(0, len(indices), batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="loading", unit="batch")
    for start in chunks:
        xb, yb = reader.read(indices[start : start + batch_size])
        x[start : start + xb.shape[0]] = torch.from_numpy(xb)
        if y is None:
            y = torch.empty(indices.size, dtype=torch.from_numpy(yb).dtype)
        y[start : start + yb.shape[0]] = torch.from_numpy(yb)
    if y is None:  # no samples
        y = torch.from_numpy(reader.read(indices)[1])
    return x, y


class TensorRows(Dataset):
    """Rows ``rows`` of in-memory tensors, without copying them (a fold is a list of positions).

    Indexing gathers from the shared tensors, so the training, validation and test splits of
    every fold cost their index arrays only, not a copy of their images each.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], rows: Sequence[int] | np.ndarray | torch.Tensor) -> None:
        self.tensors = tuple(tensors)
        self.rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        n = int(self.tensors[0].shape[0])
        if self.rows.numel() and (int(self.rows.min()) < 0 or int(self.rows.max()) >= n):
            raise IndexError(f"rows outside [0, {n}) of the in-memory samples")

    def __len__(self) -> int:
        return int(self.rows.numel())

    def read_batch(self, positions: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The stacked batch of the given positions (into ``rows``)."""
        idx = self.rows[torch.as_tensor(positions, dtype=torch.long)]
        return tuple(t[idx] for t in self.tensors)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        r = int(self.rows[i])
        return tuple(t[r] for t in self.tensors)

    def __getitems__(self, items: list[int]) -> list[tuple[torch.Tensor, ...]]:
        return list(zip(*self.read_batch(items)))


class SampleSource:
    """The selected samples of a reader, held in RAM if they fit within ``limit_gb``.

    ``scalar_columns`` picks the reader's scalars that the model takes as inputs; they are read
    once (always in RAM) and every sample then comes as ``(image, scalars, label)``.
    """

    def __init__(
        self,
        reader: ImageDataset,
        indices: np.ndarray,
        limit_gb: float,
        progress: bool = False,
        scalar_columns: Sequence[int] | None = None,
    ) -> None:
        self.reader = reader
        self.indices = np.asarray(indices, dtype=np.int64)
        c, h, w = reader.image_shape
        self.bytes_needed = int(self.indices.size) * c * h * w * 4
        self.in_memory = self.bytes_needed <= limit_gb * 1e9
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self.scalars: np.ndarray | None = None
        if scalar_columns:
            cols = np.asarray(list(scalar_columns), dtype=np.int64)
            self.scalars = np.ascontiguousarray(reader.read_scalars(self.indices)[:, cols], dtype=np.float32)
            bad = ~np.isfinite(self.scalars).all(axis=1)
            if bad.any():
                names = [reader.scalar_names[i] for i in cols]
                raise ValueError(
                    f"{reader.paths[0]}: scalar inputs {names} are not finite for sample "
                    f"{int(self.indices[np.argmax(bad)])} ({int(bad.sum())} sample(s))"
                )
        self._scalars_t = None if self.scalars is None else torch.from_numpy(self.scalars)
        if self.in_memory:
            self._x, self._y = load_in_memory(reader, self.indices, progress=progress)

    def labels(self) -> np.ndarray:
        return self.reader.labels()[self.indices]

    def subset(self, rows: np.ndarray) -> Dataset:
        """A dataset of the given positions (into ``self.indices``)."""
        if self.in_memory:  # a view: no copy of the images per fold or split
            assert self._x is not None and self._y is not None
            if self._scalars_t is None:
                return TensorRows((self._x, self._y), rows)
            return TensorRows((self._x, self._scalars_t, self._y), rows)
        scalars = None if self.scalars is None else self.scalars[rows]
        return ReaderDataset(self.reader, self.indices[rows], scalars)

    def channel_stats(
        self,
        rows: np.ndarray,
        batch_size: int | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> ChannelStats:
        """Streaming per-channel statistics over the given positions (the training split).

        ``transform`` maps a raw batch to what the statistics describe (zero suppression and scale
        factors come before the fitted affine map).
        """
        c, h, w = self.reader.image_shape
        # 8 MB of float32 per batch: the statistics work in float64 with a few temporaries, and
        # with the images in memory a larger batch would be a visible share of the peak
        batch_size = batch_size or max(1, min(4096, (8 << 20) // (c * h * w * 4)))
        stats = ChannelStats(c)
        for start in range(0, len(rows), batch_size):
            part = np.sort(rows[start : start + batch_size])
            if self.in_memory:
                assert self._x is not None
                x = self._x[torch.as_tensor(part)].numpy()
            else:
                x = self.reader.read(self.indices[part])[0]
            stats.update(transform(x) if transform is not None else x)
        return stats


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
) -> DataLoader:
    """A DataLoader whose order depends only on ``seed`` (deterministic across runs and worker counts).

    Streamed datasets (:class:`ReaderDataset`) are read a whole batch per call: the sampler hands
    each worker a list of indices and the reader decodes them in one request (sorted by file and
    chunk inside), so workers never split and re-stack single samples. Workers read in parallel
    while the model trains (``prefetch_factor`` batches each), memory holds only those batches,
    and batches arrive in pinned memory for asynchronous host-to-GPU copies when ``pin_memory``.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = dict(
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )
    if isinstance(dataset, (ReaderDataset, TensorRows)):
        base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        sampler = BatchSampler(base, batch_size=batch_size, drop_last=False)
        return DataLoader(batch_view(dataset), batch_size=None, sampler=sampler, **workers)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=False, **workers)


class _BatchView(Dataset):
    """Index with a list of positions, get the stacked batch (for ``batch_size=None`` loaders)."""

    def __init__(self, dataset: ReaderDataset | TensorRows) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, items: list[int]) -> tuple[torch.Tensor, ...]:
        return self.dataset.read_batch(items)


# ----------------------------------------------------------------------------- resumable batches
class EpochBatchSampler:
    """Batches of positions ``0..n-1`` in an order that depends only on ``(seed, epoch)``.

    The permutation of epoch ``e`` is drawn from a generator seeded with ``seed + e`` (no global
    RNG), cut into *global* batches of ``batch_size``, and process ``rank`` of ``num_replicas``
    takes its contiguous slice of every global batch. One process and N processes therefore step
    through the same global batches, which is what makes a DDP run comparable with a
    single-process one (gradients are averaged over the same samples). A trailing global batch
    smaller than ``num_replicas`` is dropped so every process has a non-empty slice.

    ``skip_batches`` (set when resuming) skips the first batches of the next iteration only.
    """

    def __init__(
        self, n: int, batch_size: int, *, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if n < 1:
            raise ValueError("EpochBatchSampler needs at least one sample")
        if batch_size < num_replicas:
            raise ValueError(f"batch size {batch_size} is smaller than the number of processes {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.n, self.batch_size, self.shuffle, self.seed = int(n), int(batch_size), bool(shuffle), int(seed)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch; a pending skip belongs to one epoch only."""
        if int(epoch) != self.epoch:
            self.skip_batches = 0
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.num_replicas else 0)

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """All global batches of an epoch, before the split over processes."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=g).numpy()
        else:
            order = np.arange(self.n)
        return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]

    def __iter__(self) -> Iterator[list[int]]:
        start, self.skip_batches = self.skip_batches, 0
        for batch in self.global_batches()[start:]:
            part = np.array_split(batch, self.num_replicas)[self.rank]
            yield part.tolist()


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochBatchSampler` that Lightning can checkpoint.

    Lightning saves ``state_dict()`` of stateful training loaders in its checkpoints and calls
    ``load_state_dict`` when resuming. The state is the epoch and the number of batches this
    loader has handed to the training loop; Lightning does not prefetch from loaders with a
    length, so at a checkpoint that is the number of batches trained on (the resume test checks
    it). Workers prefetch ahead, but their batches are re-created from the sampler, so nothing
    is lost or repeated.
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: EpochBatchSampler,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int = 4,
        generator_seed: int = 0,
    ) -> None:
        generator = torch.Generator()
        generator.manual_seed(generator_seed)  # iterator seeds never draw from the global RNG
        super().__init__(
            dataset,
            batch_size=None,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            generator=generator,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
        )
        self.batches_done = 0
        #: seconds this epoch's training loop waited inside ``next()`` for a batch (read by
        #: :class:`~e2evision.training.callbacks.LoaderWait`), and how many batches it waited for
        self.wait_s = 0.0
        self.waits = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler: EpochBatchSampler = self.sampler  # type: ignore[assignment]
        self.batches_done = sampler.skip_batches
        self.wait_s, self.waits = 0.0, 0
        clock = time.perf_counter
        start = clock()  # creating the iterator (starting workers) is waiting too
        it = super().__iter__()
        for batch in it:
            self.wait_s += clock() - start
            self.waits += 1
            self.batches_done += 1
            yield batch
            start = clock()

    def state_dict(self) -> dict[str, int]:
        s: EpochBatchSampler = self.sampler  # type: ignore[assignment]
        return {
            "epoch": s.epoch,
            "batches_done": int(self.batches_done),
            "num_batches": len(s),
            "num_samples": s.n,
            "batch_size": s.batch_size,
            "seed": s.seed,
            "shuffle": int(s.shuffle),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        s: EpochBatchSampler = self.sampler  # type: ignore[assignment]
        mine = self.state_dict()
        for key in ("num_samples", "batch_size", "seed", "shuffle"):
            if int(state.get(key, -1)) != mine[key]:
                raise ValueError(
                    f"checkpoint's training order does not match this run: {key} was {state.get(key)}, "
                    f"now {mine[key]} (same config and data are needed to resume)"
                )
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= int(state["num_batches"]):  # saved at the end of an epoch: continue with the next
            epoch, done = epoch + 1, 0
        s.epoch, s.skip_batches = epoch, done
        self.batches_done = done


class _TensorBatches(Dataset):
    """Index with a list of positions, get the stacked batch of in-memory tensors."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def __getitem__(self, items: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(items, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


def batch_view(dataset: Dataset) -> Dataset:
    """A dataset indexed by lists of positions (what ``batch_size=None`` loaders hand out)."""
    if isinstance(dataset, TensorDataset):
        return _TensorBatches(*dataset.tensors)
    if isinstance(dataset, (ReaderDataset, TensorRows)):
        return _BatchView(dataset)
    raise TypeError(f"no batch view for {type(dataset).__name__}")


class FoldData(pl.LightningDataModule):
    """Training and validation loaders of one fold, built once the process's rank is known.

    ``batch_size`` is the global batch: under DDP each of the W processes gets ``batch_size / W``
    samples of every global batch (a clear error if it does not divide). Validation is split in
    contiguous, disjoint shards without padding; the metrics gather them back exactly.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset,
        *,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        val_batch_size: int = 256,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.val_batch_size = val_batch_size

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def train_dataloader(self) -> ResumableLoader:
        world, rank = self._world()
        if self.batch_size % world:
            raise ValueError(
                f"train.batch_size={self.batch_size} is the global batch and must be divisible by the "
                f"number of processes ({world})"
            )
        sampler = EpochBatchSampler(
            len(self.train_set), self.batch_size, shuffle=True, seed=self.seed, num_replicas=world, rank=rank
        )
        return ResumableLoader(
            batch_view(self.train_set),
            sampler,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            generator_seed=self.seed,
        )

    def val_dataloader(self) -> DataLoader:
        world, rank = self._world()
        n = len(self.val_set)
        lo, hi = rank * n // world, (rank + 1) * n // world
        rows = list(range(lo, hi))
        batches = [rows[i : i + self.val_batch_size] for i in range(0, len(rows), self.val_batch_size)]
        generator = torch.Generator()
        generator.manual_seed(0)
        return DataLoader(
            batch_view(self.val_set),
            batch_size=None,
            sampler=batches,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            generator=generator,
            persistent_workers=self.num_workers > 0,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )
