"""GPU training throughput: precision, memory format and torch.compile side by side, with MFU.

    .venv/bin/python benchmarks/gpu_throughput.py --models resnet15,vit_tiny --geometries 3x125 --steps 30

For every model and geometry, the same model definition and the same on-device images (so data
loading is out of the picture) train in a bare loop (AdamW, BCE-with-logits, batch ``--batch``)
under each mode:

- ``fp32``         float32, full-precision matmuls (``highest``);
- ``tf32``         float32 tensors, TF32 tensor-core matmuls and convolutions (``high``);
- ``bf16``         bf16 autocast (Lightning's ``bf16-mixed``), NCHW;
- ``bf16+cl``      bf16 autocast, channels-last images and weights;
- ``default``      what e2evision's trainer picks on a GPU for this model (training.performance);
- ``default+compile``  the same, with ``torch.compile`` (its compile time reported apart).

Each mode gets ``--warmup`` untimed steps, then ``--steps`` timed ones. Printed per mode: images/s,
the ratio to fp32, model FLOP utilisation (training FLOPs counted by ``torch.utils.flop_counter``
× steps/s ÷ the GPU's dense peak for that math; override with ``--peak-tflops``) and peak memory.
A last table says, per model, whether the trainer's default was the fastest eager mode, so a
default that loses shows up at once.

On a CPU only ``fp32`` and ``fp32+cl`` run by default (bf16 autocast is ~20× slower there).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from e2evision.config import TrainConfig
from e2evision.models import count_parameters, create_model
from e2evision.training.performance import (
    channels_last_hazard,
    mfu,
    peak_tflops,
    resolve_performance,
    training_step_flops,
)

GPU_MODES = ("fp32", "tf32", "bf16", "bf16+cl", "default", "default+compile")
CPU_MODES = ("fp32", "fp32+cl")


def mode_settings(mode: str, model: nn.Module, image_shape: tuple[int, int, int], on_gpu: bool) -> dict:
    """Precision, memory format, matmul precision and compile flag of one named mode."""
    if mode.startswith("default"):
        perf = resolve_performance(TrainConfig(compile=mode.endswith("+compile")), model, image_shape, on_gpu=on_gpu)
        bf16 = perf.precision.startswith("bf16")
        return {"bf16": bf16, "channels_last": perf.channels_last, "compile": perf.compile,
                "matmul": perf.matmul_precision or "highest",
                "math": "bf16" if bf16 else ("tf32" if perf.matmul_precision in ("high", "medium") else "fp32")}
    parts = mode.split("+")
    base = parts[0]
    if base not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"unknown mode {mode!r}: use fp32, tf32, bf16 (+cl, +compile) or default(+compile)")
    return {"bf16": base == "bf16", "channels_last": "cl" in parts, "compile": "compile" in parts,
            "matmul": "highest" if base == "fp32" else "high", "math": base}


def images(n: int, c: int, s: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector-like sparse images (a few hundred hits near the centre) and balanced labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, c, s, s)
    k = max(8, s * s // 60)
    for i in range(n):
        ch = torch.randint(0, c, (k,), generator=g)
        rc = (torch.randn(2, k, generator=g) * s / 8 + s / 2).round().long().clamp(0, s - 1)
        x[i].index_put_((ch, rc[0], rc[1]), torch.empty(k).exponential_(generator=g), accumulate=True)
    return x.to(device), (torch.arange(n) % 2).float().to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_mode(name: str, c: int, s: int, mode: str, x: torch.Tensor, y: torch.Tensor, warmup: int, steps: int,
             device: str) -> dict:
    """Train a fresh model under ``mode``; images/s over the timed steps and the compile time."""
    on_gpu = device.startswith("cuda")
    torch.manual_seed(0)
    model = create_model(name, in_chans=c, img_size=s, num_outputs=1).to(device)
    st = mode_settings(mode, model, (c, s, s), on_gpu)
    if st["channels_last"] and not on_gpu and channels_last_hazard(model):
        raise RuntimeError(f"skipped: {channels_last_hazard(model)}")
    torch.set_float32_matmul_precision(st["matmul"])
    torch.backends.cudnn.allow_tf32 = st["matmul"] != "highest"
    if st["channels_last"]:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if st["compile"]:
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    dev_type = "cuda" if on_gpu else "cpu"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=st["bf16"]):
            out = model(x).squeeze(-1)
        loss_fn(out.float(), y).backward()
        opt.step()

    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    step()  # the first step pays for compilation and cuDNN's algorithm search
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    return {"mode": mode, **st, "images_per_s": steps * x.shape[0] / dt, "steps_per_s": steps / dt,
            "first_step_s": first, "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet15,vit_tiny,vit_sd_tiny,swin_tiny,coatnet_0")
    ap.add_argument("--geometries", default="2x32,3x125,8x125,1x150", help="comma-separated CxS")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode (the size knob)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    ap.add_argument("--modes", default=None, help=f"comma-separated; default {','.join(GPU_MODES)} on GPU, "
                                                  f"{','.join(CPU_MODES)} on CPU")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's peak for every mode, when it is not in e2evision's table")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    on_gpu = args.device.startswith("cuda")
    modes = args.modes.split(",") if args.modes else list(GPU_MODES if on_gpu else CPU_MODES)
    modes.sort(key=lambda m: m != "fp32")  # fp32 first: the other modes' ratios are to it
    dev_name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    print(f"device {dev_name}, torch {torch.__version__}, batch {args.batch}, {args.warmup} warm-up + "
          f"{args.steps} timed steps per mode")
    rows, verdicts = [], []
    for geo in args.geometries.split(","):
        c, s = (int(v) for v in geo.lower().split("x"))
        x, y = images(args.batch, c, s, args.device)
        for name in args.models.split(","):
            torch.manual_seed(0)
            probe = create_model(name, in_chans=c, img_size=s, num_outputs=1).to(args.device)
            flops = training_step_flops(probe, x)
            params = count_parameters(probe)
            default = resolve_performance(TrainConfig(), probe, (c, s, s), on_gpu=True)
            del probe
            print(f"\n{name} {geo}: {params:,} parameters, {flops / args.batch / 1e9:.2f} GFLOP per image "
                  f"(training step), GPU default: {default.precision}"
                  f"{', channels-last' if default.channels_last else ''} (convolutions: "
                  f"{default.conv_share:.0%} of the forward FLOPs)")
            print(f"  {'mode':<17}{'img/s':>10}{'× fp32':>8}{'MFU':>8}{'first step s':>14}{'peak GB':>9}")
            base = None
            results = {}
            for mode in modes:
                try:
                    r = run_mode(name, c, s, mode, x, y, args.warmup, args.steps, args.device)
                except Exception as exc:  # noqa: BLE001 - a mode that fails is reported, the rest still run
                    msg = (str(exc).splitlines() or [""])[0]
                    print(f"  {mode:<17} " + (msg if msg.startswith("skipped")
                                               else f"failed: {type(exc).__name__}: {msg[:160]}"))
                    continue
                peak = args.peak_tflops or (peak_tflops(dev_name, r["math"]) if on_gpu else None)
                r["mfu"] = mfu(flops, r["steps_per_s"], peak)
                base = base or (r["images_per_s"] if mode == "fp32" else None)
                ratio = r["images_per_s"] / base if base else float("nan")
                mfu_txt = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
                mem = f"{r['peak_mem_gb']:.2f}" if r["peak_mem_gb"] is not None else "n/a"
                print(f"  {mode:<17}{r['images_per_s']:>10.1f}{ratio:>8.2f}{mfu_txt:>8}{r['first_step_s']:>14.1f}"
                      f"{mem:>9}", flush=True)
                results[mode] = r
                rows.append({"model": name, "input": geo, "params": params, "flops_per_step": flops,
                             "batch": args.batch, "device": dev_name, **r})
            eager = {m: r for m, r in results.items() if not r["compile"] and m != "default"}
            if "default" in results and eager:
                best = max(eager, key=lambda m: eager[m]["images_per_s"])
                gain = eager[best]["images_per_s"] / results["default"]["images_per_s"]
                comp = results.get("default+compile")
                verdicts.append((name, geo, best, gain,
                                 comp["images_per_s"] / results["default"]["images_per_s"] if comp else None))
    if verdicts:
        print(f"\nDoes the trainer's default on {args.device} pick what helps?")
        print(f"  {'model':<14}{'input':>8}  {'fastest eager mode':<20}{'its speed / default':>21}"
              f"{'compile / default':>19}")
        for name, geo, best, gain, comp in verdicts:
            flag = "ok" if gain < 1.05 else "DEFAULT LOSES"
            comp_txt = f"{comp:.2f}" if comp is not None else "n/a"
            print(f"  {name:<14}{geo:>8}  {best:<20}{gain:>15.2f} {flag:<5}{comp_txt:>19}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
