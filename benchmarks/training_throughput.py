"""Training throughput over real epochs: e2evision's trainer against a bare PyTorch loop.

    .venv/bin/python benchmarks/training_throughput.py                       # 2x32 × 20,000 and 3x125 × 2,000
    .venv/bin/python benchmarks/training_throughput.py --geometries 2x32 --n 512 --rounds 1   # smoke run

For every model and geometry, on the same model definition, the same images and the same device
settings (memory format, precision), side by side in one process:

1. **bare loop** — the model in a plain PyTorch loop over an in-memory ``TensorDataset``
   (``DataLoader(shuffle=True)``, AdamW, BCE-with-logits, batch ``--batch``), plus a forward pass
   over the validation images after every epoch: the floor any framework adds to;
2. **e2evision** — the same model as the runner trains a fold: ``ImageModule`` (normaliser,
   augmentation hooks, validation AUC, logged loss) under Lightning with the runner's callbacks
   (best weights, history, step and epoch checkpoints written to disk), its CSV logger, the
   resumable batch sampler and, with ``--progress``, the progress bar. Its ratio to the bare loop
   is the trainer's overhead.
3. optionally (``--png``) **seed pipeline** — the seed projects' 8-bit PNG files read by
   torchvision's ``ImageFolder`` into the bare loop (1–4 channels only).

Both contenders train whole epochs of ``--n`` images (one value per geometry, or one for all);
the clock covers the whole ``fit`` (every epoch, its validation and checkpoints) for the trainer
and the same epochs plus validation forwards for the bare loop. Before the timed rounds each
contender trains a few batches untimed (kernel selection, allocator warm-up). The contenders then
alternate, ``--rounds`` times, and the median round counts: on a machine shared with other jobs a
busy spell falls on both. The CPU-time ratio is printed beside the wall-time one: with one thread
(``OMP_NUM_THREADS=1``) it barely moves when other jobs share the cores, while wall times do. Geometries are ``CxS`` (channels × side), e.g. ``2x32`` (e/γ), ``3x125``
(quark/gluon). On a GPU pass ``--device cuda``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def sparse_images(n: int, c: int, s: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector-like images: a few hundred non-zero pixels near the centre, labels balanced (vectorised)."""
    rng = np.random.default_rng(seed)
    k = max(8, s * s // 60)
    x = np.zeros((n, c * s * s), np.float32)
    for start in range(0, n, 4096):  # bounded temporaries
        m = min(4096, n - start)
        ch = rng.integers(0, c, (m, k))
        r = np.clip(np.round(rng.normal(s / 2, s / 8, (2, m, k))).astype(np.int64), 0, s - 1)
        flat = (ch * s + r[0]) * s + r[1]
        rows = np.repeat(np.arange(start, start + m), k)
        np.add.at(x, (rows, flat.reshape(-1)), rng.exponential(1.0, m * k).astype(np.float32))
    y = (np.arange(n) % 2).astype(np.float32)
    return torch.from_numpy(x.reshape(n, c, s, s)), torch.from_numpy(y)


# ------------------------------------------------------------------------------------ bare loop
def bare_loop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    xv: torch.Tensor,
    batch: int,
    epochs: int,
    device: str,
    channels_last: bool,
    max_batches: int | None = None,
) -> tuple[float, float]:
    """Wall and CPU seconds for ``epochs`` epochs of a plain loop (train, then a forward pass over ``xv``)."""
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        model.train()
        for i, (xb, yb) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            opt.zero_grad(set_to_none=True)
            out = model(xb.to(device, non_blocking=True).contiguous(memory_format=fmt)).squeeze(-1)
            loss = loss_fn(out, yb.to(device, non_blocking=True))
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for start in range(0, xv.shape[0], max(256, batch)):
                xb = xv[start : start + max(256, batch)].to(device).contiguous(memory_format=fmt)
                torch.sigmoid(model(xb)).cpu()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


# ------------------------------------------------------------------------------------ e2evision
def e2evision_trainer(
    model_name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    batch: int,
    epochs: int,
    device: str,
    workdir: Path,
    progress: bool,
    max_batches: int | None = None,
) -> tuple[float, float, dict[str, Any]]:
    """Wall and CPU seconds of ``trainer.fit`` for ``epochs`` epochs, set up as the runner sets up a fold, and
    what the trainer recorded (history rows, checkpoints saved, loader wait)."""
    import lightning.pytorch as pl

    from e2evision.datasets.base import ChannelStats
    from e2evision.training.build import build_module
    from e2evision.training.callbacks import BestWeights, History, LoaderWait, RunCheckpoint
    from e2evision.training.data import FoldData
    from e2evision.training.loggers import build_loggers
    from e2evision.training.performance import apply_performance

    cfg = trainer_config(model_name, batch, epochs, progress)
    c, h, w = x.shape[1:]
    module = build_module(cfg, (c, h, w), "binary")
    stats = ChannelStats(c)
    for start in range(0, x.shape[0], 4096):
        stats.update(x[start : start + 4096].numpy())
    module.normalizer.fit(stats)
    perf = performance(cfg, module, (c, h, w), device)
    apply_performance(module, perf)
    best, hist = BestWeights(module.monitor, module.monitor_mode), History(0, module.monitor)
    ckpt = RunCheckpoint(workdir / "checkpoints", cfg.train.checkpoint_every_n_steps)
    wait = LoaderWait()
    trainer = pl.Trainer(
        default_root_dir=workdir,
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=perf.precision,
        deterministic="warn" if cfg.train.deterministic else False,
        callbacks=[best, hist, ckpt, wait],
        logger=build_loggers(list(cfg.train.loggers), workdir, run_name="bench", fold=0, run_dir=workdir),
        enable_checkpointing=True,
        use_distributed_sampler=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
        limit_train_batches=max_batches if max_batches is not None else 1.0,
    )
    data = FoldData(
        TensorDataset(x, y),
        TensorDataset(xv, yv),
        batch_size=batch,
        seed=0,
        num_workers=cfg.train.num_workers,
        val_batch_size=max(256, batch),
    )
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=data)
    _sync(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, cpu, {"history": hist.rows, "checkpoints": ckpt.saves, "loader_wait": wait.rows}


def trainer_config(model_name: str, batch: int, epochs: int, progress: bool) -> Any:
    """The shipped training defaults (checkpoints every 1,000 steps, CSV logger, deterministic),
    without early stopping and augmentation, so both contenders do the same work per image."""
    from e2evision.config import load_config

    return load_config(
        data={
            "name": "bench",
            "model": {"name": model_name},
            "train": {"batch_size": batch, "max_epochs": epochs, "progress": progress, "early_stopping_patience": None},
        }
    )


def performance(cfg: Any, module: nn.Module, shape: tuple[int, int, int], device: str) -> Any:
    from e2evision.training.performance import resolve_performance

    return resolve_performance(cfg.train, module, shape, on_gpu=device == "cuda")


# ------------------------------------------------------------------------------------ seed PNGs
def png_folder(x: torch.Tensor, y: torch.Tensor, root: Path) -> Path:
    """8-bit PNGs in ImageFolder layout, scaled per image by its maximum, as the seed projects do."""
    from PIL import Image

    modes = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    c = x.shape[1]
    for i in range(x.shape[0]):
        img = x[i].numpy()
        img = np.clip(img / max(float(img.max()), 1e-12) * 255, 0, 255).astype(np.uint8)
        d = root / f"class{int(y[i])}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0) if c > 1 else img[0], mode=modes[c]).save(d / f"{i:06d}.png")
    return root


def seed_pipeline(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, device: str) -> float:
    """Images/s of the bare loop fed by PNG files through torchvision's ImageFolder."""
    from torchvision import datasets, transforms

    c = x.shape[1]
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with tempfile.TemporaryDirectory() as tmp:
        root = png_folder(x, y, Path(tmp))
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
        ds = datasets.ImageFolder(
            str(root),
            transform=transforms.ToTensor(),
            loader=lambda p: __import__("PIL.Image").Image.open(p).convert(mode),
        )
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0)
        t0 = time.perf_counter()
        for _ in range(epochs):
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                out = model(xb.to(device)).squeeze(-1)
                nn.functional.binary_cross_entropy_with_logits(out, yb.to(device).float()).backward()
                opt.step()
        _sync(device)
        return x.shape[0] * epochs / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _quiet() -> None:
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)  # keep the table readable
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


# ------------------------------------------------------------------------------------ one cell
def measure(name: str, geo: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Alternate bare and trainer rounds for one model and geometry; medians and spread."""
    from e2evision.models import count_parameters, create_model

    c, s = (int(v) for v in geo.lower().split("x"))
    x, y = sparse_images(n, c, s, seed=0)
    xv, yv = sparse_images(args.val, c, s, seed=1)
    cfg = trainer_config(name, args.batch, args.epochs, args.progress)

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return create_model(name, in_chans=c, img_size=s, num_outputs=1)

    from e2evision.training.build import build_module

    cl = performance(cfg, build_module(cfg, (c, s, s), "binary"), (c, s, s), args.device).channels_last
    bare_t, e2e_t, bare_c, e2e_c, extra = [], [], [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        # untimed warm-up of both (oneDNN primitives, allocator, Lightning imports)
        bare_loop(fresh(), x, y, xv[:8], args.batch, 1, args.device, cl, max_batches=3)
        e2evision_trainer(
            name, x, y, xv[:8], yv[:8], args.batch, 1, args.device, Path(tmp) / "warm", False, max_batches=3
        )
        for r in range(args.rounds):
            order = ("bare", "e2e") if r % 2 == 0 else ("e2e", "bare")
            for who in order:
                if who == "bare":
                    wall, cpu = bare_loop(fresh(), x, y, xv, args.batch, args.epochs, args.device, cl)
                    bare_t.append(wall)
                    bare_c.append(cpu)
                else:
                    wall, cpu, extra = e2evision_trainer(
                        name, x, y, xv, yv, args.batch, args.epochs, args.device, Path(tmp) / f"round{r}", args.progress
                    )
                    e2e_t.append(wall)
                    e2e_c.append(cpu)
            print(
                f"  round {r + 1}: bare {n * args.epochs / bare_t[-1]:.1f} img/s, "
                f"e2evision {n * args.epochs / e2e_t[-1]:.1f} img/s, ratio {bare_t[-1] / e2e_t[-1]:.3f} "
                f"(CPU time {bare_c[-1] / e2e_c[-1]:.3f})",
                flush=True,
            )
    images = n * args.epochs
    ratios = [b / e for b, e in zip(bare_t, e2e_t)]
    cpu_ratios = [b / e for b, e in zip(bare_c, e2e_c)]  # one thread: robust to other jobs
    seed = seed_pipeline(fresh(), x, y, args.batch, args.epochs, args.device) if args.png and c <= 4 else float("nan")
    waits = [row["loader_wait_fraction"] for row in extra.get("loader_wait", [])]
    return {
        "model": name,
        "input": geo,
        "n": n,
        "epochs": args.epochs,
        "batch": args.batch,
        "params": count_parameters(fresh()),
        "channels_last": cl,
        "plain": images / statistics.median(bare_t),
        "e2evision": images / statistics.median(e2e_t),
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "cpu_ratios": cpu_ratios,
        "plain_rounds": [images / t for t in bare_t],
        "e2evision_rounds": [images / t for t in e2e_t],
        "loader_wait_fraction": waits,
        "checkpoints": extra.get("checkpoints"),
        "seed_png": seed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet15")
    ap.add_argument("--geometries", default="2x32,3x125", help="comma-separated CxS, e.g. 2x32,3x125")
    ap.add_argument(
        "--n", default="20000,2000", help="training images per epoch, one per geometry or one for all (the size knob)"
    )
    ap.add_argument("--val", type=int, default=512, help="validation images, forwarded after every epoch")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/e2evision rounds (median counts)")
    ap.add_argument("--progress", action="store_true", help="show the trainer's progress bar (its default)")
    ap.add_argument("--png", action="store_true", help="also time the seed projects' PNG pipeline")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    _quiet()
    from e2evision.utils.seeding import seed_everything

    seed_everything(0, deterministic=True)  # what the runner asks for; process-wide, so both contenders get it
    geos = args.geometries.split(",")
    sizes = [int(v) for v in str(args.n).split(",")]
    sizes = sizes * len(geos) if len(sizes) == 1 else sizes
    if len(sizes) != len(geos):
        ap.error(f"--n gives {len(sizes)} sizes for {len(geos)} geometries")
    print(
        f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.epochs} epoch(s) per round, {args.rounds} alternating rounds, median"
    )
    rows = []
    for geo, n in zip(geos, sizes):
        for name in args.models.split(","):
            print(f"{name} {geo} × {n:,}", flush=True)
            rows.append(measure(name, geo, n, args))
    print(
        f"\n{'model':<12}{'input':>7}{'images':>8}{'bare img/s':>12}{'e2evision':>11}{'e2e/bare':>10}"
        f"{'ratio range':>15}{'CPU-time ratio':>16}{'PNG seed':>10}"
    )
    for r in rows:
        print(
            f"{r['model']:<12}{r['input']:>7}{r['n']:>8,}{r['plain']:>12.1f}{r['e2evision']:>11.1f}"
            f"{r['ratio_median']:>10.3f}{min(r['ratios']):>8.3f}–{max(r['ratios']):.3f}{r['cpu_ratio_median']:>16.3f}"
            f"{r['seed_png']:>10.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
