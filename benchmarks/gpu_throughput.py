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

Each mode gets ``--warmup`` untimed steps; then the modes take turns, ``--rounds`` rounds of
``--steps`` timed steps each, and the median round counts (a busy spell of the machine falls on
every mode, not on one). ``default`` is measured once, as the explicit mode with its settings. Printed per mode: images/s,
the ratio to fp32, model FLOP utilisation (training FLOPs counted by ``torch.utils.flop_counter``
× steps/s ÷ the GPU's dense peak for that math; override with ``--peak-tflops``) and peak memory.
A last table says, per model, whether the trainer's default was the fastest eager mode, so a
default that loses shows up at once.

On a CPU only ``fp32``, ``fp32+cl`` and ``default`` run by default (bf16 autocast is ~20× slower there).
"""

from __future__ import annotations

import argparse
import json
import statistics
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
CPU_MODES = ("fp32", "fp32+cl", "default")


def mode_settings(mode: str, model: nn.Module, image_shape: tuple[int, int, int], on_gpu: bool) -> dict:
    """Precision, memory format, matmul precision and compile flag of one named mode."""
    if mode.startswith("default"):
        perf = resolve_performance(TrainConfig(compile=mode.endswith("+compile")), model, image_shape, on_gpu=on_gpu)
        bf16 = perf.precision.startswith("bf16")
        return {
            "bf16": bf16,
            "channels_last": perf.channels_last,
            "compile": perf.compile,
            "matmul": perf.matmul_precision or "highest",
            "math": "bf16" if bf16 else ("tf32" if perf.matmul_precision in ("high", "medium") else "fp32"),
        }
    parts = mode.split("+")
    base = parts[0]
    if base not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"unknown mode {mode!r}: use fp32, tf32, bf16 (+cl, +compile) or default(+compile)")
    return {
        "bf16": base == "bf16",
        "channels_last": "cl" in parts,
        "compile": "compile" in parts,
        "matmul": "highest" if base == "fp32" else "high",
        "math": base,
    }


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


class Contender:
    """One model trained under one mode: built, warmed up, then timed in interleaved rounds."""

    def __init__(self, name: str, c: int, s: int, mode: str, x: torch.Tensor, y: torch.Tensor, device: str) -> None:
        self.on_gpu = device.startswith("cuda")
        self.device = device
        self.mode = mode
        if self.on_gpu:
            torch.cuda.synchronize()
            self._mem0 = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(0)
        model = create_model(name, in_chans=c, img_size=s, num_outputs=1).to(device)
        self.settings = st = mode_settings(mode, model, (c, s, s), self.on_gpu)
        if st["channels_last"] and not self.on_gpu and channels_last_hazard(model):
            raise RuntimeError(f"skipped: {channels_last_hazard(model)}")
        if st["channels_last"]:
            model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if st["compile"]:
            model.compile()
        self.model, self.x, self.y = model, x, y
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.first_step_s = 0.0
        self.peak_mem_gb: float | None = None

    def _step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda" if self.on_gpu else "cpu", dtype=torch.bfloat16, enabled=self.settings["bf16"]):
            out = self.model(self.x).squeeze(-1)
        self.loss_fn(out.float(), self.y).backward()
        self.opt.step()

    def _run(self, steps: int) -> float:
        # the matmul precision is global: set it for this contender before each of its rounds
        torch.set_float32_matmul_precision(self.settings["matmul"])
        torch.backends.cudnn.allow_tf32 = self.settings["matmul"] != "highest"
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self._step()
        _sync(self.device)
        return time.perf_counter() - t0

    def warm_up(self, steps: int) -> None:
        """The first step pays for compilation and cuDNN's algorithm search: timed apart."""
        self.first_step_s = self._run(1)
        self._run(max(steps - 1, 0))
        if self.on_gpu:
            self.peak_mem_gb = (torch.cuda.max_memory_allocated() - self._mem0) / 2**30

    def time(self, steps: int) -> float:
        return self._run(steps)


def _key(settings: dict) -> tuple:
    return settings["bf16"], settings["channels_last"], settings["compile"], settings["matmul"]


def measure(
    name: str,
    c: int,
    s: int,
    modes: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    warmup: int,
    steps: int,
    rounds: int,
    device: str,
) -> dict[str, dict]:
    """Images/s of every mode: median over ``rounds`` interleaved rounds of ``steps`` steps.

    Interleaving spreads a busy spell of the machine (or a clock change) over every mode instead
    of one. A ``default`` mode whose settings equal an explicit mode's is that mode (measured once),
    so the verdict never compares two runs of the same thing.
    """
    contenders: dict[tuple, Contender] = {}
    alias: dict[str, tuple] = {}
    failed: dict[str, str] = {}
    for mode in sorted(modes, key=lambda m: m.startswith("default")):  # explicit modes own the measurements
        try:
            probe = mode_settings(
                mode, create_model(name, in_chans=c, img_size=s, num_outputs=1), (c, s, s), device.startswith("cuda")
            )
            key = _key(probe)
            if key not in contenders:
                contenders[key] = Contender(name, c, s, mode, x, y, device)
                contenders[key].warm_up(warmup)
            alias[mode] = key
        except Exception as exc:  # noqa: BLE001 - a mode that fails is reported, the others still run
            msg = (str(exc).splitlines() or [""])[0]
            failed[mode] = msg if msg.startswith("skipped") else f"failed: {type(exc).__name__}: {msg[:160]}"
    times: dict[tuple, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for key, con in contenders.items():
            times[key].append(con.time(steps))
    out: dict[str, dict] = {}
    for mode in modes:
        if mode in failed:
            out[mode] = {"mode": mode, "error": failed[mode]}
            continue
        con = contenders[alias[mode]]
        dt = statistics.median(times[alias[mode]])
        out[mode] = {
            "mode": mode,
            "measured_as": con.mode,
            **con.settings,
            "images_per_s": steps * x.shape[0] / dt,
            "steps_per_s": steps / dt,
            "first_step_s": con.first_step_s,
            "peak_mem_gb": con.peak_mem_gb,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet15,vit_tiny,vit_sd_tiny,swin_tiny,coatnet_0")
    ap.add_argument("--geometries", default="2x32,3x125,8x125,1x150", help="comma-separated CxS")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode (the size knob)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per mode (median taken)")
    ap.add_argument(
        "--modes",
        default=None,
        help=f"comma-separated; default {','.join(GPU_MODES)} on GPU, {','.join(CPU_MODES)} on CPU",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak for every mode, when it is not in e2evision's table",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    on_gpu = args.device.startswith("cuda")
    modes = args.modes.split(",") if args.modes else list(GPU_MODES if on_gpu else CPU_MODES)
    modes.sort(key=lambda m: m != "fp32")  # fp32 first: the other modes' ratios are to it
    dev_name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    print(
        f"device {dev_name}, torch {torch.__version__}, batch {args.batch}, {args.warmup} warm-up steps, then "
        f"{args.rounds} interleaved rounds of {args.steps} timed steps per mode (median)"
    )
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
            print(
                f"\n{name} {geo}: {params:,} parameters, {flops / args.batch / 1e9:.2f} GFLOP per image "
                f"(training step), GPU default: {default.precision}"
                f"{', channels-last' if default.channels_last else ''} (convolutions: "
                f"{default.conv_share:.0%} of the forward FLOPs)"
            )
            print(f"  {'mode':<17}{'img/s':>10}{'× fp32':>8}{'MFU':>8}{'first step s':>14}{'peak GB':>9}")
            results = measure(name, c, s, modes, x, y, args.warmup, args.steps, args.rounds, args.device)
            base = results.get("fp32", {}).get("images_per_s")
            for mode, r in results.items():
                if "error" in r:
                    print(f"  {mode:<17} {r['error']}")
                    continue
                peak = args.peak_tflops or (peak_tflops(dev_name, r["math"]) if on_gpu else None)
                r["mfu"] = mfu(flops, r["steps_per_s"], peak)
                ratio = r["images_per_s"] / base if base else float("nan")
                mfu_txt = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
                mem = f"{r['peak_mem_gb']:.2f}" if r["peak_mem_gb"] is not None else "n/a"
                same = f"  (= {r['measured_as']})" if r["measured_as"] != mode else ""
                print(
                    f"  {mode:<17}{r['images_per_s']:>10.1f}{ratio:>8.2f}{mfu_txt:>8}{r['first_step_s']:>14.1f}"
                    f"{mem:>9}{same}",
                    flush=True,
                )
                rows.append(
                    {
                        "model": name,
                        "input": geo,
                        "params": params,
                        "flops_per_step": flops,
                        "batch": args.batch,
                        "device": dev_name,
                        **r,
                    }
                )
            ok = {m: r for m, r in results.items() if "error" not in r}
            eager = {m: r for m, r in ok.items() if not r["compile"] and not m.startswith("default")}
            if "default" in ok and eager:
                best = max(eager, key=lambda m: eager[m]["images_per_s"])
                gain = eager[best]["images_per_s"] / ok["default"]["images_per_s"]
                comp = ok.get("default+compile")
                verdicts.append(
                    (name, geo, best, gain, comp["images_per_s"] / ok["default"]["images_per_s"] if comp else None)
                )
    if verdicts:
        print(f"\nDoes the trainer's default on {args.device} pick what helps?")
        print(
            f"  {'model':<14}{'input':>8}  {'fastest eager mode':<20}{'its speed / default':>21}"
            f"{'compile / default':>19}"
        )
        for name, geo, best, gain, comp in verdicts:
            flag = "ok" if gain < 1.05 else "DEFAULT LOSES"
            comp_txt = f"{comp:.2f}" if comp is not None else "n/a"
            print(f"  {name:<14}{geo:>8}  {best:<20}{gain:>15.2f} {flag:<5}{comp_txt:>19}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
