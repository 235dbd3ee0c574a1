"""Work layout of the jet simulators: rows, classes, blocks and shards, and the workers.

Row i of a data set holds class i % k; each class is cut into blocks of ``block_size`` jets, one
worker task per (class, block). A shard generates a contiguous range of blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from e2evision.simulate.common import class_counts, shard_blocks
from e2evision.simulate.jet_config import JetSimConfig
from e2evision.simulate.jet_datasets import _CHANNELS, _CLASSES
from e2evision.simulate.jet_generator import _run_task


def _shard_blocks(n: int, dataset: str, block_size: int, shard: int, num_shards: int) -> range:
    """A shard's blocks of an ``n``-row data set (class 0, which has the most rows, sets the count)."""
    n_first = class_counts(n, len(_CLASSES[dataset]))[0]
    return shard_blocks(n_first, block_size, shard, num_shards)


def _iter_row_blocks(
    n: int, seed: int, cfg: JetSimConfig, blocks: range, workers: int
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield (first row, columns in row order) for each row block, generating in ``workers``."""
    classes = _CLASSES[cfg.dataset]
    k = len(classes)
    counts = class_counts(n, k)
    bs = cfg.block_size
    tasks = [(cfg, seed, c, b, min(bs, counts[c] - b * bs)) for b in blocks for c in range(k) if counts[c] - b * bs > 0]
    per_block = [sum(1 for t in tasks if t[3] == b) for b in blocks]
    results = _ordered_results(tasks, workers)
    try:
        for b, n_tasks in zip(blocks, per_block):
            parts = [next(results) for _ in range(n_tasks)]
            images = _dense_images(parts, len(_CHANNELS[cfg.dataset]), cfg.image_size)
            sparse = ("image_index", "image_value", "image_count")
            merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0] if key not in sparse}
            merged["images"] = images
            # rows of this block: event j of class c is row (b * bs + j) * k + c
            local = np.concatenate([np.arange(len(p["pt"])) for p in parts])
            rows = (b * bs + local) * k + merged["class_index"]
            order = np.argsort(rows, kind="stable")
            n_events = int(merged.pop("n_events").sum())
            cpu = float(merged.pop("cpu_seconds").sum())
            out = {key: v[order] for key, v in merged.items()}
            out["n_events"] = np.array([n_events])
            out["cpu_seconds"] = np.array([cpu])
            yield int(rows[order][0]), out
    finally:
        results.close()


def _dense_images(parts: list[dict[str, np.ndarray]], n_channels: int, size: int) -> np.ndarray:
    """Rebuild the block's dense ``(rows, C, S, S)`` images from the tasks' sparse pixels."""
    per_image = n_channels * size * size
    counts = [int(p["image_count"][0]) for p in parts]
    out = np.zeros(sum(counts) * per_image, dtype=np.float64)
    start = 0
    for p, count in zip(parts, counts):
        out[start + p["image_index"]] = p["image_value"]
        start += count * per_image
    return out.reshape(sum(counts), n_channels, size, size)


def _ordered_results(
    tasks: list[tuple[JetSimConfig, int, int, int, int]], workers: int
) -> Iterator[dict[str, np.ndarray]]:
    """Run the tasks (in ``workers`` spawned processes if > 1) and yield results in task order.

    At most ``2 * workers`` tasks are in flight, so memory stays bounded when the consumer
    (the Parquet writer) is slower than the workers. A worker that dies raises
    ``BrokenProcessPool`` instead of hanging (as ``multiprocessing.Pool`` would).
    """
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_task(task)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # spawn: fork would copy a parent's Pythia instance and threads; spawn is safe everywhere
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as pool:
        pending: deque[Any] = deque()
        queue = iter(tasks)
        try:
            for task in queue:
                pending.append(pool.submit(_run_task, task))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                result = pending.popleft().result()
                for task in queue:
                    pending.append(pool.submit(_run_task, task))
                    break
                yield result
        finally:
            for fut in pending:
                fut.cancel()
