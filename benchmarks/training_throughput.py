"""Training throughput: e2evision's trainer against a plain PyTorch loop and the seed projects' pipeline.

    .venv/bin/python benchmarks/training_throughput.py --models resnet15,vit_tiny --geometries 2x32 --n 512

For every model and geometry, on the same model definition and the same images, side by side in
one process (so the ratios are fair even on a busy machine):

1. **plain loop** — the model in a bare PyTorch loop over an in-memory ``TensorDataset``
   (AdamW, BCE-with-logits, batch ``--batch``): the floor any framework adds to;
2. **e2evision** — the same model inside e2evision's ``ImageModule`` (per-channel normaliser,
   augmentation hooks, metrics) trained by Lightning, reading the in-memory samples through the
   trainer's resumable batch sampler: its ratio to the plain loop is the trainer's overhead;
3. **seed pipeline** — what the seed projects do: images written as 8-bit PNG files (one per
   sample, in class folders) and read back by torchvision's ``ImageFolder`` + ``ToTensor`` into the
   same plain loop (1–4 channels only: PNG has no 8-channel mode).

Each contender trains ``--epochs`` epochs after one warm-up batch; images/s are counted over the
timed epochs. Geometries are ``CxS`` (channels × side), e.g. ``2x32`` (e/γ), ``3x125`` (quark/gluon),
``8x125`` (top), ``1x150`` (lensing). On CPU keep to small sizes; on a GPU pass ``--device cuda``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def sparse_images(n: int, c: int, s: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector-like images: a few hundred non-zero pixels near the centre, labels balanced."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, c, s, s), np.float32)
    k = max(8, s * s // 60)
    for i in range(n):
        ch = rng.integers(0, c, k)
        r = np.clip(np.round(rng.normal(s / 2, s / 8, (2, k))).astype(int), 0, s - 1)
        x[i, ch, r[0], r[1]] += rng.exponential(1.0, k).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def plain_loop(model: nn.Module, loader, epochs: int, device: str) -> float:
    """Images/s of a bare loop (after one warm-up batch)."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x.to(device, non_blocking=True)).squeeze(-1), y.to(device).float())
        loss.backward()
        opt.step()

    x0, y0 = next(iter(loader))
    step(x0, y0)
    _sync(device)
    seen, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            step(x, y)
            seen += x.shape[0]
    _sync(device)
    return seen / (time.perf_counter() - t0)


def e2evision_trainer(model_name: str, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
                      device: str) -> float:
    """Images/s of the same model trained by e2evision's module and Lightning trainer."""
    import logging
    import warnings

    import lightning.pytorch as pl

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)  # keep the table readable
    warnings.filterwarnings("ignore", module="lightning")

    from e2evision.config import load_config
    from e2evision.datasets.base import ChannelStats
    from e2evision.training.build import build_module
    from e2evision.training.data import FoldData

    c, h, w = x.shape[1:]
    cfg = load_config(data={"name": "bench", "model": {"name": model_name},
                            "train": {"batch_size": batch, "max_epochs": epochs + 1, "progress": False,
                                      "early_stopping_patience": None, "deterministic": False}})
    module = build_module(cfg, (c, h, w), "binary")
    stats = ChannelStats(c)
    stats.update(x[:256].numpy())
    module.normalizer.fit(stats)
    data = FoldData(TensorDataset(x, y), TensorDataset(x[:batch], y[:batch]), batch_size=batch, seed=0)

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.start = 0.0
            self.seen = 0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 1:  # epoch 0 is the warm-up
                _sync(device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx) -> None:
            if trainer.current_epoch >= 1:
                self.seen += b[0].shape[0]

    clock = Clock()
    trainer = pl.Trainer(max_epochs=epochs + 1, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[clock], num_sanity_val_steps=0,
                         limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    _sync(device)
    return clock.seen / (time.perf_counter() - clock.start)


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
    from torchvision import datasets, transforms

    c = x.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        root = png_folder(x, y, Path(tmp))
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
        ds = datasets.ImageFolder(str(root), transform=transforms.ToTensor(),
                                  loader=lambda p: __import__("PIL.Image").Image.open(p).convert(mode))
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0)
        return plain_loop(model, loader, epochs, device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet15,vit_tiny,vit_sd_tiny,swin_tiny,coatnet_0")
    ap.add_argument("--geometries", default="2x32", help="comma-separated CxS, e.g. 2x32,3x125")
    ap.add_argument("--n", type=int, default=512, help="images per epoch (the size knob)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from e2evision.models import count_parameters, create_model

    rows = []
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.n} images × {args.epochs} epoch(s), batch {args.batch}")
    print(f"{'model':<14}{'input':>8}{'params':>11}{'plain img/s':>13}{'e2evision':>11}{'e2e/plain':>10}"
          f"{'PNG seed':>10}{'seed/plain':>11}")
    for geo in args.geometries.split(","):
        c, s = (int(v) for v in geo.lower().split("x"))
        x, y = sparse_images(args.n, c, s, seed=0)
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = create_model(name, in_chans=c, img_size=s, num_outputs=1)
            params = count_parameters(model)
            loader = DataLoader(TensorDataset(x, y), batch_size=args.batch, shuffle=True)
            plain = plain_loop(model, loader, args.epochs, args.device)
            e2e = e2evision_trainer(name, x, y, args.batch, args.epochs, args.device)
            seed = (seed_pipeline(create_model(name, in_chans=c, img_size=s, num_outputs=1), x, y, args.batch,
                                  args.epochs, args.device) if c <= 4 else float("nan"))
            rows.append({"model": name, "input": geo, "params": params, "plain": plain, "e2evision": e2e,
                         "seed_png": seed})
            print(f"{name:<14}{geo:>8}{params:>11,}{plain:>13.1f}{e2e:>11.1f}{e2e / plain:>10.2f}"
                  f"{seed:>10.1f}{seed / plain:>11.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
