"""Index-tracking batches of a single-channel reader, for code that measures or crops every image.

The lens transforms and the lens features read whole readers this way; it lives here, beside the
readers, so that neither has to reach into the other for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from e2evision.datasets.base import ImageDataset

__all__ = ["iter_batches"]


def iter_batches(
    dataset: ImageDataset, indices: Sequence[int] | np.ndarray | None = None, batch_size: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(indices, images, labels)`` of a single-channel reader, ``batch_size`` at a time."""
    if dataset.image_shape[0] != 1:
        raise ValueError(
            f"lens transforms need single-channel images, the dataset has "
            f"{dataset.image_shape[0]} channels ({', '.join(dataset.channel_names)})"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    idx = np.arange(dataset.n_samples) if indices is None else np.asarray(indices, dtype=np.int64)
    for start in range(0, idx.size, batch_size):
        chunk = idx[start : start + batch_size]
        images, labels = dataset.read(chunk)
        yield chunk, images, labels
