"""``e2evision predict``: score files of any supported format, batch by batch, into a table.

Memory holds one batch of images at a time (plus one label per sample); the data is checked
against the model's contract (channels, image shape, scalar inputs, task, classes) before the
first batch is scored, and every problem is one line naming the file, the field and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.datasets.task import get_task
from e2evision.inference.scorers import (
    ExportScorer,
    ModelContract,
    RunScorer,
    ScorerError,
    open_scorer,
)
from e2evision.inference.writers import open_sink


class PredictError(ValueError):
    """The data does not fit the model, or the model cannot be read (one line: file, field, fix)."""


@dataclass
class PredictSummary:
    """What ``predict`` wrote."""

    path: Path
    rows: int
    columns: list[str]
    model: str
    task: str


def open_data(
    contract: ModelContract,
    paths: Sequence[str | os.PathLike[str]],
    data_format: str | None = None,
    **reader_kwargs: Any,
) -> Any:
    """The reader of ``paths`` with the run's format and feature table unless told otherwise."""
    from e2evision.datasets import DatasetError
    from e2evision.datasets.feature_table import open_with_features

    fmt = data_format or contract.data_format or "auto"
    kwargs = {**contract.reader_kwargs, **reader_kwargs}
    features = contract.data_features
    if features is None and contract.scalar_names:  # an export: its lens features beside the data
        from e2evision.datasets import open_dataset

        with open_dataset([str(p) for p in paths], fmt, **kwargs) as probe:
            if not set(contract.scalar_names) <= set(probe.scalar_names):
                features = "auto"
    try:
        return open_with_features([str(p) for p in paths], fmt, features, **kwargs)
    except (DatasetError, FileNotFoundError) as err:
        raise PredictError(str(err)) from None


def check_data(reader: Any, contract: ModelContract) -> list[int]:
    """Raise :class:`PredictError` unless ``reader`` delivers what the model was trained on;
    returns the positions of the model's scalar inputs among the reader's scalars."""
    where = reader.paths[0] if reader.paths else "data"
    shape = tuple(int(s) for s in reader.image_shape)
    if shape != contract.image_shape:
        raise PredictError(
            f"{where}: images are {shape} (C, H, W), the model takes "
            f"{contract.image_shape} ({contract.source}); score data of the "
            "geometry it was trained on"
        )
    names = list(reader.channel_names)
    if contract.channel_names and names != contract.channel_names:
        raise PredictError(
            f"{where}: channels are {names}, the model takes "
            f"{contract.channel_names} in that order ({contract.source}); pass "
            "--data-format for the reader that delivers them"
        )
    missing = [s for s in contract.scalar_names if s not in reader.scalar_names]
    if missing:
        raise PredictError(
            f"{where}: the model takes scalar inputs {contract.scalar_names} "
            f"({contract.source}); this data has no {missing} (it has "
            f"{list(reader.scalar_names) or 'none'}; lens features: "
            "`e2evision features DATA`)"
        )
    if reader.task != contract.task:
        raise PredictError(
            f"{where}: the data is a {reader.task} dataset, the model a "
            f"{contract.task} one ({contract.source}); pass the data it was trained "
            "for, or --data-format"
        )
    classes = list(reader.class_names)
    if get_task(contract.task).is_multiclass and contract.class_names and classes != contract.class_names:
        raise PredictError(
            f"{where}: classes are {classes}, the model's are "
            f"{contract.class_names} ({contract.source}); name the class folders "
            "alike"
        )
    return [list(reader.scalar_names).index(s) for s in contract.scalar_names]


def locate(reader: Any, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source file and row inside it of global sample indices (best effort per reader layout)."""
    base = getattr(reader, "reader", reader)  # a features-table wrapper
    paths = [str(p) for p in base.paths]
    offsets = getattr(base, "_offsets", None)
    files = getattr(base, "_files", None)
    if offsets is not None and len(offsets) == len(paths) + 1:
        f = np.searchsorted(offsets, index, side="right") - 1
        return np.asarray(paths, dtype=object)[f].astype(str), index - np.asarray(offsets)[f]
    if files is not None and len(files) == base.n_samples:
        return np.asarray([str(files[i]) for i in index]), np.zeros(index.size, np.int64)
    return np.full(index.size, paths[0] if paths else ""), index.copy()


def score_columns(contract: ModelContract, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Binary: ``score`` (probability of label 1); multi-class: ``score_<class>``; regression:
    ``value`` (target units)."""
    task = get_task(contract.task)
    if task.is_multiclass:
        names = contract.class_names or [str(i) for i in range(scores.shape[1])]
        return {f"score_{n}": scores[:, i].astype(np.float64) for i, n in enumerate(names)}
    key = "value" if task.is_regression else "score"
    return {key: scores.astype(np.float64)}


def score_batches(
    scorer: RunScorer | ExportScorer,
    reader: Any,
    indices: np.ndarray | None = None,
    batch_size: int = 512,
    progress: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Column batches (source, row, index, label, scores) of ``indices`` (default: every sample)."""
    cols = check_data(reader, scorer.contract)
    idx = np.arange(reader.n_samples) if indices is None else np.asarray(indices, dtype=np.int64)
    labels = np.asarray(reader.labels())
    starts = range(0, idx.size, batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(idx.size), desc="predict", unit="sample")
    try:
        for start in starts:
            part = idx[start : start + batch_size]
            images, _ = reader.read(part)
            scalars = None
            if cols:
                scalars = np.asarray(reader.read_scalars(part), dtype=np.float32)[:, cols]
            scores = scorer.score(images, scalars)
            source, row = locate(reader, part)
            label = labels[part]
            regression = get_task(scorer.contract.task).is_regression
            label = label.astype(np.float64) if regression else label.astype(np.int64)
            yield {
                "source": source,
                "row": row.astype(np.int64),
                "index": part,
                "label": label,
                **score_columns(scorer.contract, scores),
            }
            if bar is not None:
                bar.update(part.size)
    finally:
        if bar is not None:
            bar.close()


def predict(
    model: str | os.PathLike[str],
    data: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    fold: int | None = None,
    fmt: str | None = None,
    batch_size: int = 512,
    data_format: str | None = None,
    indices: np.ndarray | None = None,
    progress: bool = False,
    device: str | None = None,
    **reader_kwargs: Any,
) -> PredictSummary:
    """Score ``data`` with ``model`` (a run directory or an exported file) into ``out``.

    ``fmt``: parquet (default), csv or root; ``indices``: only these samples of ``data``.
    """
    if batch_size < 1:
        raise PredictError("--batch-size must be at least 1")
    if not data:
        raise PredictError("no data: pass --data PATH (files, patterns or directories)")
    try:
        scorer = open_scorer(model, fold, device)
    except ScorerError as err:
        raise PredictError(str(err)) from None
    reader = open_data(scorer.contract, data, data_format, **reader_kwargs)
    sink = open_sink(out, fmt)
    rows, columns, ok = 0, [], False
    try:
        with reader:
            for batch in score_batches(scorer, reader, indices, batch_size, progress):
                sink.write(batch)
                rows += batch["index"].size
                columns = list(batch)
        if rows == 0:
            raise PredictError(f"{list(map(str, data))}: no samples to score")
        ok = True
    finally:
        sink.close(ok and rows > 0)
    contract = scorer.contract
    return PredictSummary(Path(out), rows, columns, contract.description, contract.task)
