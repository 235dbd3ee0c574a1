"""How a fold's model runs on its device: precision, memory format, compilation, matmul precision.

The choices are resolved once per run from ``train`` and the model, recorded in ``run.json`` and
applied to each fold's module before Lightning sees it. Defaults follow what pays on a tensor-core GPU and stay
out of the way on a CPU (where bf16 autocast is ~20× slower and ``torch.compile`` gains nothing):

- ``precision``: on a GPU, ``bf16-mixed`` for convolutional models of at least
  :data:`BF16_MIN_FORWARD_GFLOPS` per image and ``32-true`` with TF32 matmuls for the rest: measured
  on an H200 (docs/benchmarks.md), bf16 trained ResNet-15 on 3 × 125 × 125 jets 1.6–2.0× faster
  than TF32 and CoAtNet-0 1.8×, but ViT, ViT-SD and Swin ran 1.14–1.37× faster in TF32 and
  ResNet-15 on 32 × 32 crops 1.16× (too little work per launch for bf16's casts to pay); ``32-true``
  on CPU;
- ``channels_last``: for models whose forward FLOPs are mostly convolutions (cuDNN's tensor-core
  kernels want NHWC, and oneDNN's CPU kernels measured 1.07–1.3× faster with it; a ViT's only
  convolution is its patch embedding), except on a CPU for models that hit a oneDNN bug;
- ``matmul_precision``: ``high`` (TF32 for the float32 matmuls left outside autocast) on GPU;
- ``compile``: off unless asked, since compiling costs minutes that short folds never win back.

``benchmarks/gpu_throughput.py`` measures every one of these side by side and flags a default
that loses to an alternative.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from e2evision.config import TrainConfig

#: share of a model's forward FLOPs spent in convolutions above which channels-last is the default
CONV_SHARE_FOR_CHANNELS_LAST = 0.5
#: forward GFLOP per image from which a convolutional model trains in bf16 on a GPU by default
#: (ResNet-15: 0.017 at 2 × 32 × 32, bf16 0.86× TF32; 0.29 at 3 × 125 × 125, bf16 1.6× TF32)
BF16_MIN_FORWARD_GFLOPS = 0.1


@dataclass(frozen=True)
class Performance:
    """The resolved settings of one fold (what ``run.json`` records under ``performance``)."""

    on_gpu: bool
    precision: str
    channels_last: bool
    compile: bool
    matmul_precision: str | None
    conv_share: float
    forward_gflops: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def conv_share(model: nn.Module, image_shape: tuple[int, int, int]) -> float:
    """Fraction of the model's forward FLOPs spent in convolutions, on one ``image_shape`` image."""
    total, conv = forward_flops(model, image_shape)
    return conv / total if total else 0.0


def forward_flops(model: nn.Module, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """Forward FLOPs of one ``image_shape`` image: all of them, and those in convolutions.

    ``model`` is a network or an :class:`~e2evision.training.module.ImageModule` (which takes raw
    images, before any lens crop); models with scalar inputs get zeros for them.

    FLOPs, not parameters: a small CNN whose weights sit mostly in its fully connected layer
    still spends its time in convolutions, and channels-last is about where the time goes.
    """
    from torch.utils.flop_counter import FlopCounterMode

    n_scalars = int(getattr(model, "num_scalars", 0) or getattr(getattr(model, "head", None), "num_scalars", 0) or 0)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, *image_shape, device=device)
    extra = (torch.zeros(1, n_scalars, device=device),) if n_scalars else ()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, *extra)
    finally:
        model.train(was_training)
    total = int(counter.get_total_flops())
    conv = sum(n for op, n in counter.get_flop_counts().get("Global", {}).items() if "convolution" in str(op))
    return total, int(conv)


#: oneDNN's CPU kernel for the weight gradient of a strided 1 × 1 convolution in NHWC writes past
#: its workspace when the input has fewer channels than its block (8 on AVX2, 16 on AVX-512):
#: wrong gradients or a corrupted heap (uxlfoundation/oneDNN#6035, reproduced here with torch 2.14.1)
_ONEDNN_NHWC_BLOCK = 16


def channels_last_hazard(model: nn.Module) -> str | None:
    """Why channels-last must not train ``model`` on a CPU, or None when it may."""
    for name, m in model.named_modules():
        if (
            isinstance(m, nn.Conv2d)
            and tuple(m.kernel_size) == (1, 1)
            and max(m.stride) > 1
            and m.in_channels < _ONEDNN_NHWC_BLOCK
        ):
            return (
                f"layer {name!r} is a 1×1 convolution with stride {tuple(m.stride)} on {m.in_channels} "
                f"input channels, whose channels-last backward on CPU gives wrong gradients or corrupts "
                f"memory (oneDNN issue 6035; fewer than {_ONEDNN_NHWC_BLOCK} channels)"
            )
    return None


def uses_gpu(train: TrainConfig) -> bool:
    """Whether Lightning will put this run on CUDA devices."""
    return torch.cuda.is_available() and train.accelerator not in ("cpu",)


def resolve_performance(
    train: TrainConfig, model: nn.Module, image_shape: tuple[int, int, int], on_gpu: bool | None = None
) -> Performance:
    """The settings ``train`` asks for, with ``None`` fields filled by the device's defaults."""
    gpu = uses_gpu(train) if on_gpu is None else bool(on_gpu)
    total, conv = forward_flops(model, image_shape)
    share = conv / total if total else 0.0
    gflops = total / 1e9
    channels_last = train.channels_last
    if channels_last is None:
        # measured: NHWC trains CNNs 1.07–1.3× faster on this CPU too (docs/benchmarks.md), except
        # where oneDNN's NHWC kernel for strided 1×1 convolutions on few channels is broken
        channels_last = share > CONV_SHARE_FOR_CHANNELS_LAST and (gpu or channels_last_hazard(model) is None)
    elif channels_last and not gpu:
        hazard = channels_last_hazard(model)
        if hazard is not None:
            raise ValueError(f"train.channels_last: true on a CPU: {hazard}; leave it unset (NCHW on CPU)")
    return Performance(
        on_gpu=gpu,
        precision=train.precision or default_precision(gpu, share, gflops),
        channels_last=bool(channels_last),
        compile=bool(train.compile),
        matmul_precision=train.matmul_precision or ("high" if gpu else None),
        conv_share=round(share, 4),
        forward_gflops=round(gflops, 4),
    )


def default_precision(gpu: bool, share: float, forward_gflops: float) -> str:
    """bf16 where it measured faster on a GPU (convolution-heavy, enough work per image), else float32."""
    if gpu and share > CONV_SHARE_FOR_CHANNELS_LAST and forward_gflops >= BF16_MIN_FORWARD_GFLOPS:
        return "bf16-mixed"
    return "32-true"


def apply_performance(module: nn.Module, perf: Performance) -> None:
    """Put ``module.model`` in the resolved memory format and compile it if asked.

    ``nn.Module.compile`` compiles in place, so parameter names (and saved weights) do not change.
    ``module`` is an :class:`~e2evision.training.module.ImageModule`; its ``channels_last`` flag
    makes it hand NHWC images to the model.
    """
    if perf.matmul_precision is not None:
        torch.set_float32_matmul_precision(perf.matmul_precision)
    model = module.model
    if perf.channels_last:
        model.to(memory_format=torch.channels_last)
    module.channels_last = perf.channels_last
    if perf.compile:
        model.compile()


# ---------------------------------------------------------------------------------------- MFU
#: dense peak TFLOP/s by GPU and math: tensor-core bf16/fp16, tensor-core TF32, plain fp32 (no
#: structured sparsity). Sources: NVIDIA's H100/A100 datasheets; H200 has H100 SXM's compute.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},  # SXM5 (and the name "H100 80GB HBM3")
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def peak_tflops(device_name: str, math: str) -> float | None:
    """Peak TFLOP/s of ``device_name`` (as ``torch.cuda.get_device_name`` spells it) for ``math``
    (``bf16``, ``tf32`` or ``fp32``); None for a device not in :data:`PEAK_TFLOPS`."""
    if math not in ("bf16", "tf32", "fp32"):
        raise ValueError(f"math must be bf16, tf32 or fp32, got {math!r}")
    name = device_name.upper()
    for key in PEAK_TFLOPS:  # most specific first: "H100 PCIe" before "H100"
        if all(part.upper() in name for part in key.split()):
            return PEAK_TFLOPS[key][math]
    return None


def training_step_flops(model: nn.Module, x: torch.Tensor, *extra: torch.Tensor) -> int:
    """Floating-point operations of one forward and backward pass on ``x`` (matmuls, convolutions
    and attention, as ``torch.utils.flop_counter`` counts them): the numerator of model FLOP
    utilisation. The optimiser's element-wise update is not counted, as is the convention."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.train()
    with FlopCounterMode(display=False) as counter:
        out = model(x, *extra)
        out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return int(counter.get_total_flops())


def mfu(flops_per_step: float, steps_per_second: float, peak: float | None) -> float | None:
    """Model FLOP utilisation: achieved FLOP/s over the device's peak (``peak`` in TFLOP/s)."""
    if peak is None or peak <= 0:
        return None
    return flops_per_step * steps_per_second / (peak * 1e12)
