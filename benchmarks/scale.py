"""Data at the public files' scale: synthesise, convert to the store, train streaming, watch memory.

    .venv/bin/python benchmarks/scale.py                                  # 139,306 jets (the public size)
    .venv/bin/python benchmarks/scale.py --n 600 --steps 3 --batch 8      # smoke run, seconds

Three phases, each but the first in its own process so that its peak resident memory is its own
(``os.wait4``'s ``ru_maxrss``):

1. **synthesise** ``--n`` quark/gluon jets (3 × 125 × 125) as Parquet in the public layout
   (``docs/datasets.md`` §2: columns ``X_jets`` as ``list<list<list<double>>>``, ``pt``, ``m0``,
   ``y``; one row per row group; files of ``--rows-per-file`` rows named like the public ones).
   A fast vectorised generator, not the Pythia simulator (which makes ~100 jets/s per core):
   Poisson numbers of hits per channel (tracks, ECAL, HCAL), Gaussian around the jet axis, gluons
   with more and wider hits than quarks, exponential energies; ``pt`` and ``m0`` computed from them.
2. **convert** with ``e2evision convert`` (the CLI a user runs) into the training store.
3. **train** ResNet-15 streaming from the store (never held in memory) with e2evision's trainer
   (``ImageModule`` under Lightning, the resumable loader, the history callback) for ``--steps``
   optimizer steps (``0``: a whole epoch, as on a GPU), recording the images/s of every step and
   how long each step waited for its batch. Before training, the loader alone reads
   ``--loader-batches`` batches (images/s the store can deliver, without the model).

Prints one table and writes ``--json``. The big files live under ``--workdir`` and are deleted at
the end unless ``--keep``; at the public size the Parquet files take about 1 GB and the store
about 0.3 GB (``df -h`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np

SIDE = 125
CHANNELS = 3
#: mean hits per channel (tracks, ECAL, HCAL) for quarks and gluons, and the Gaussian width of
#: their spread around the jet axis in pixels: gluon jets have more, wider constituents
HITS = {0: (18.0, 110.0, 35.0), 1: (28.0, 150.0, 50.0)}
WIDTH = {0: 5.0, 1: 7.5}
PIXEL_RAD = 0.0174  # one ECAL crystal in η and φ


# ------------------------------------------------------------------------------- synthesis
def synth_batch(rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense float64 images ``(B, 3 × 125 × 125)`` and their ``pt``, ``m0`` for ``labels``."""
    b = labels.size
    hits = np.array([HITS[int(v)] for v in labels])  # (B, 3)
    width = np.array([WIDTH[int(v)] for v in labels])  # (B,)
    k_max = int(np.ceil(hits.max() * 2))
    counts = rng.poisson(hits)  # (B, 3)
    keep = np.arange(k_max)[None, None, :] < np.minimum(counts, k_max)[:, :, None]  # (B, 3, K)
    r = rng.normal(0.0, 1.0, (2, b, CHANNELS, k_max)) * width[None, :, None, None]
    eta = np.clip(np.round(SIDE // 2 + r[0]).astype(np.int64), 0, SIDE - 1)
    phi = np.clip(np.round(SIDE // 2 + r[1]).astype(np.int64), 0, SIDE - 1)
    energy = rng.exponential(1.0, (b, CHANNELS, k_max)) * np.array([0.8, 1.5, 2.5])[None, :, None]
    energy *= keep
    flat = ((np.arange(b)[:, None, None] * CHANNELS + np.arange(CHANNELS)[None, :, None]) * SIDE + eta) * SIDE + phi
    dense = np.bincount(flat.reshape(-1), weights=energy.reshape(-1), minlength=b * CHANNELS * SIDE * SIDE)
    pt = energy.sum(axis=(1, 2))
    dr2 = ((eta - SIDE // 2) ** 2 + (phi - SIDE // 2) ** 2) * PIXEL_RAD**2
    m0 = np.sqrt(np.maximum(pt * (energy * dr2).sum(axis=(1, 2)), 0.0))
    return dense.reshape(b, -1), pt, m0


def jets_table(dense: np.ndarray, pt: np.ndarray, m0: np.ndarray, y: np.ndarray) -> Any:
    """An Arrow table in the public schema: nested lists built from offsets, no Python objects."""
    import pyarrow as pa

    b = dense.shape[0]
    flat = np.ascontiguousarray(dense, dtype=np.float64).reshape(-1)
    level = pa.Array.from_buffers(pa.float64(), flat.size, [None, pa.py_buffer(flat)])  # no copy
    # innermost first: 125 values per η row, 125 rows per channel, 3 channels per jet; built from
    # offset buffers directly (pa.array on the offsets took ~1 ms per jet)
    for count, width in ((b * CHANNELS * SIDE, SIDE), (b * CHANNELS, SIDE), (b, CHANNELS)):
        offsets = np.arange(0, count * width + 1, width, dtype=np.int32)
        level = pa.ListArray.from_buffers(pa.list_(level.type), count, [None, pa.py_buffer(offsets)], children=[level])
    chans = level
    return pa.table({"X_jets": chans, "pt": pa.array(pt), "m0": pa.array(m0), "y": pa.array(y.astype(np.float64))})


def synthesise(out: Path, n: int, seed: int, rows_per_file: int, batch: int = 128) -> list[Path]:
    """Write ``n`` jets into Parquet files of ``rows_per_file`` rows, one row per row group."""
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    files = []
    for f, lo in enumerate(range(0, n, rows_per_file)):
        hi = min(n, lo + rows_per_file)
        path = out / f"QCDToGGQQ_IMGjet_RH1all_jet0_run{f}_n{hi - lo}.synth.snappy.parquet"
        writer = None
        for start in range(lo, hi, batch):
            y = labels[start : min(hi, start + batch)]
            table = jets_table(*synth_batch(rng, y), y)
            if writer is None:
                # snappy as the public files; plain encoding: dictionary encoding of the images
                # wrote 1.6× slower for 6× smaller files, and the conversion reads them either way
                writer = pq.ParquetWriter(path, table.schema, compression="snappy", use_dictionary=["pt", "m0", "y"])
            writer.write_table(table, row_group_size=1)  # the public files: one row per row group
        assert writer is not None
        writer.close()
        files.append(path)
    return files


# ------------------------------------------------------------------------------- child processes
def run_child(cmd: list[str], log: Path) -> tuple[float, int, int]:
    """Run ``cmd``; its wall seconds, exit status and peak resident memory in bytes (Linux ru_maxrss)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, proc.returncode, int(usage.ru_maxrss) * 1024


def train_streaming(store: Path, steps: int, batch: int, workers: int, loader_batches: int, out: Path) -> None:
    """Child process: the loader alone, then ResNet-15 trained streaming from ``store``; writes JSON."""
    import logging
    import warnings

    import torch

    from e2evision.config import load_config
    from e2evision.store import TrainingStore
    from e2evision.training.build import build_module
    from e2evision.training.callbacks import History, LoaderWait
    from e2evision.training.data import FoldData, ReaderDataset
    from e2evision.training.performance import apply_performance, resolve_performance

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    reader = TrainingStore(store)
    shape = reader.image_shape
    rows = np.arange(reader.n_samples)
    train = ReaderDataset(reader, rows)
    data = FoldData(train, ReaderDataset(reader, rows[:batch]), batch_size=batch, seed=0, num_workers=workers)
    loader_rate = loader_alone(data, loader_batches, batch)
    data = FoldData(train, ReaderDataset(reader, rows[:batch]), batch_size=batch, seed=0, num_workers=workers)

    cfg = load_config(
        data={
            "name": "scale",
            "model": {"name": "resnet15"},
            "train": {"batch_size": batch, "max_epochs": 1, "progress": False},
        }
    )
    module = build_module(cfg, shape, "binary")
    module.normalizer.fit(reader.channel_stats())  # from the manifest: no pass over the data
    perf = resolve_performance(cfg.train, module, shape)
    apply_performance(module, perf)
    clock = StepClock()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator=cfg.train.accelerator,
        devices=1,
        precision=perf.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        limit_train_batches=steps if steps > 0 else 1.0,
        use_distributed_sampler=False,
        callbacks=[History(0), LoaderWait(), clock],
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    fit_s = time.perf_counter() - t0
    result = {
        "image_shape": list(shape),
        "n_samples": reader.n_samples,
        "batch": batch,
        "workers": workers,
        "steps": len(clock.seconds),
        "fit_s": fit_s,
        "step_s": clock.seconds,
        "wait_s": clock.waits,
        "loader_alone": loader_rate,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "performance": perf.to_dict(),
    }
    out.write_text(json.dumps(result))


def loader_alone(data: Any, batches: int, batch: int) -> dict[str, float]:
    """Images/s of the training loader without a model: what the store and decoding deliver."""
    loader = data.train_dataloader()
    it = iter(loader)
    next(it)  # first batch: iterator and worker start-up, chunk checks
    t0 = time.perf_counter()
    seen = 0
    for _ in range(batches):
        try:
            seen += int(next(it)[0].shape[0])
        except StopIteration:
            break
    secs = time.perf_counter() - t0
    return {"batches": seen // batch, "images": seen, "seconds": secs, "images_per_s": seen / max(secs, 1e-9)}


class StepClock(pl.Callback):
    """Per step: seconds since the previous step's end (or the epoch's start) and the loader's wait."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.waits: list[float] = []
        self._mark = 0.0
        self._wait_before = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = time.perf_counter()
        self._wait_before = 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._mark)
        self._mark = now
        waited = float(getattr(trainer.train_dataloader, "wait_s", 0.0))  # this epoch's total so far
        self.waits.append(waited - self._wait_before)
        self._wait_before = waited


# ------------------------------------------------------------------------------- driver
def summary(steps: list[float], batch: int) -> dict[str, float]:
    rates = sorted(batch / s for s in steps)
    q = lambda f: rates[min(len(rates) - 1, int(f * len(rates)))]  # noqa: E731
    return {"median": statistics.median(rates), "p10": q(0.1), "p90": q(0.9), "min": rates[0], "max": rates[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=139_306, help="jets to synthesise (the public HDF5 variant: 139,306)")
    ap.add_argument("--rows-per-file", type=int, default=36_272, help="rows per Parquet file (as the public files)")
    ap.add_argument("--steps", type=int, default=50, help="optimizer steps to train (0: one whole epoch)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (train.num_workers)")
    ap.add_argument("--loader-batches", type=int, default=200, help="batches the loader reads alone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/e2evision_scale"))
    ap.add_argument("--keep", action="store_true", help="keep the Parquet files and the store")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--train-child", nargs=2, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.train_child:
        train_streaming(
            Path(args.train_child[0]),
            args.steps,
            args.batch,
            args.workers,
            args.loader_batches,
            Path(args.train_child[1]),
        )
        return 0
    work = args.workdir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        return drive(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def drive(args: argparse.Namespace, work: Path) -> int:
    t0 = time.perf_counter()
    files = synthesise(work / "parquet", args.n, args.seed, args.rows_per_file)
    synth_s = time.perf_counter() - t0
    parquet_bytes = sum(f.stat().st_size for f in files)
    print(
        f"synthesised {args.n:,} jets in {len(files)} Parquet files ({parquet_bytes / 1e9:.2f} GB) in {synth_s:.0f} s",
        flush=True,
    )
    store = work / "store"
    py = sys.executable
    conv_s, rc, conv_rss = run_child(
        [
            py,
            "-m",
            "e2evision",
            "convert",
            str(work / "parquet"),
            "--out",
            str(store),
            "--format",
            "quark-gluon",
            "--no-progress",
        ],
        work / "convert.log",
    )
    if rc:
        print((work / "convert.log").read_text()[-3000:], file=sys.stderr)
        return rc
    manifest = json.loads((store / "manifest.json").read_text())
    store_bytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    print(
        f"converted in {conv_s:.0f} s ({args.n / conv_s:,.0f} jets/s), peak RSS {conv_rss / 1e9:.2f} GB, "
        f"store {store_bytes / 1e9:.3f} GB ({manifest['layout']})",
        flush=True,
    )
    result_path = work / "train.json"
    train_s, rc, train_rss = run_child(
        [
            py,
            str(Path(__file__).resolve()),
            "--train-child",
            str(store),
            str(result_path),
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--workers",
            str(args.workers),
            "--loader-batches",
            str(args.loader_batches),
        ],
        work / "train.log",
    )
    if rc:
        print((work / "train.log").read_text()[-3000:], file=sys.stderr)
        return rc
    tr = json.loads(result_path.read_text())
    steps = tr["step_s"][1:] or tr["step_s"]  # the first step includes start-up
    rate = summary(steps, args.batch)
    wait_share = sum(tr["wait_s"][1:] or tr["wait_s"]) / max(sum(steps), 1e-12)
    report = {
        "n": args.n,
        "files": len(files),
        "parquet_bytes": parquet_bytes,
        "synth_s": synth_s,
        "convert_s": conv_s,
        "convert_peak_rss_bytes": conv_rss,
        "store_bytes": store_bytes,
        "store_layout": manifest["layout"],
        "train_process_s": train_s,
        "train_peak_rss_bytes": train_rss,
        "step_images_per_s": rate,
        "loader_wait_fraction": wait_share,
        **tr,
    }
    print(
        f"training: {tr['steps']} steps of {args.batch} on {tr['device']} ({tr['threads']} threads, "
        f"{args.workers} workers): images/s per step median {rate['median']:.1f} "
        f"(10–90 %: {rate['p10']:.1f}–{rate['p90']:.1f}); waited for data {100 * wait_share:.1f} % of step time; "
        f"peak RSS {train_rss / 1e9:.2f} GB"
    )
    la = tr["loader_alone"]
    print(f"loader alone: {la['images_per_s']:,.0f} images/s ({la['batches']} batches of {args.batch})")
    print(
        "per step (images/s, wait ms): "
        + ", ".join(f"{args.batch / s:.0f}/{1e3 * w:.0f}" for s, w in zip(tr["step_s"], tr["wait_s"]))
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
