"""Classic CNN baselines: the seeds' simple CNN, LeNet-5, AlexNet, VGG, GoogLeNet-style Inception,
and timm's ResNet / EfficientNet wrapped in the shared :class:`FusionHead`.

These are the seed projects' baselines and seed 003's five-CNN regression ensemble (LeNet-5,
AlexNet, VGG, ResNet, Inception) for 8 × 125 × 125 top-quark images with extra scalar inputs.
Every model takes any channel count; each class docstring states how it copes with image sizes.

Small images. Where a chain of unpadded convolutions / pools needs a minimum input, the model
zero-pads the input symmetrically up to that minimum (zero is "no deposit" in detector images);
the padding is computed once in ``__init__`` from ``img_size``, so ``forward`` has no
data-dependent control flow and the models trace and export. AlexNet, Inception and the timm
models also pick a reduced-stride stem for small images (documented in their classes;
``stem_stride`` / ``reduced_stem`` override the automatic choice).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from e2evision.models.heads import FusionHead, ImageModel
from e2evision.models.registry import register_model

SEED_BASELINES = "seed evaluation baselines (references.md: small CNN, Vishak-Bhat30/ML4SCI)"
SEED_003 = "seed 003: five-CNN top-quark mass regression ensemble (LeNet-5, AlexNet, VGG, ResNet, Inception)"


# ---------------------------------------------------------------------------------------------
# Size helpers
# ---------------------------------------------------------------------------------------------


def _as_pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


_Pair = tuple[int, int]


def _spatial_ops(module: nn.Module) -> list[tuple[_Pair, _Pair, _Pair, _Pair]]:
    """(kernel, stride, padding, dilation) of every conv / pool of a plain chain, in forward order."""
    ops = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            if getattr(m, "ceil_mode", False):
                raise ValueError("ceil_mode pools are not supported by the size helper")
            if isinstance(m.padding, str):
                raise ValueError("string padding is not supported by the size helper")
            dilation = getattr(m, "dilation", 1)
            ops.append((_as_pair(m.kernel_size), _as_pair(m.stride), _as_pair(m.padding), _as_pair(dilation)))
    return ops


def chain_output_size(module: nn.Module, img_size: tuple[int, int]) -> tuple[int, int] | None:
    """Spatial output size of a plain conv/pool chain for ``img_size``; ``None`` if too small."""
    size = list(img_size)
    for kernel, stride, padding, dilation in _spatial_ops(module):
        for ax in range(2):
            eff = dilation[ax] * (kernel[ax] - 1) + 1
            span = size[ax] + 2 * padding[ax]
            if span < eff:
                return None
            size[ax] = (span - eff) // stride[ax] + 1
    return (size[0], size[1])


def chain_min_input(module: nn.Module, limit: int = 4096) -> int:
    """Smallest square side a plain conv/pool chain accepts (each axis is independent)."""
    for n in range(1, limit + 1):
        if chain_output_size(module, (n, n)) is not None:
            return n
    raise ValueError(f"no input up to {limit} pixels fits this chain")


class PadToMin(nn.Module):
    """Zero-pad the input symmetrically up to ``min_size`` on each axis (no-op when large enough).

    The padding is computed once from ``img_size``; inputs are assumed to have that size.
    """

    def __init__(self, img_size: tuple[int, int], min_size: int | tuple[int, int]) -> None:
        super().__init__()
        min_h, min_w = _as_pair(min_size)
        dh, dw = max(0, min_h - img_size[0]), max(0, min_w - img_size[1])
        # F.pad order for the last two dims: (left, right, top, bottom)
        self.padding = (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)
        self.active = dh > 0 or dw > 0
        self.out_size = (img_size[0] + dh, img_size[1] + dw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active:  # fixed at construction
            return F.pad(x, self.padding)
        return x

    def extra_repr(self) -> str:
        return f"padding={self.padding}"


def _init_cnn(modules: nn.Module) -> None:
    """He init for convolutions and hidden linear layers (ReLU follows both), unit/zero batch norm.

    Applied before the head is built: the :class:`FusionHead` keeps its own small initialisation.
    """
    for m in modules.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# Simple CNN (seed baseline)
# ---------------------------------------------------------------------------------------------


class SimpleCNN(ImageModel):
    """The seeds' small CNN: ``len(widths)`` blocks of conv3×3 (padding 1) – ReLU – max-pool 2,
    an adaptive average pool to a fixed ``grid`` × ``grid`` map, then two fully-connected layers:
    ``FC(widths[-1]·grid² → hidden)`` – ReLU, and the :class:`FusionHead` (``hidden → outputs``).

    Sizes: the FC input does not depend on the image size (adaptive pool). Each max-pool halves
    the map, so sides below ``2 ** len(widths)`` (8 by default) are zero-padded to it.
    """

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        widths: Sequence[int] = (32, 64, 64),
        hidden: int = 128,
        grid: int = 4,
        num_scalars: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) < 1:
            raise ValueError("widths must hold at least one conv width")
        self.img_size = img_size
        layers: list[nn.Module] = []
        prev = in_chans
        for w in widths:
            layers += [nn.Conv2d(prev, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            prev = w
        self.features = nn.Sequential(*layers)
        self.pad = PadToMin(img_size, chain_min_input(self.features))
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.fc = nn.Sequential(nn.Linear(prev * grid * grid, hidden), nn.ReLU(inplace=True))
        _init_cnn(self)
        self.num_features = hidden
        self.head = FusionHead(hidden, num_outputs, num_scalars, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(self.pad(x))).flatten(1))


# ---------------------------------------------------------------------------------------------
# LeNet-5
# ---------------------------------------------------------------------------------------------


class LeNet5(ImageModel):
    """LeNet-5 (LeCun et al. 1998), modernised: conv5×5 (→ 6) – ReLU – max-pool 2 – conv5×5 (→ 16)
    – ReLU – max-pool 2 – adaptive average pool to 5×5 – FC 400 → 120 – ReLU – FC 120 → 84 – ReLU –
    :class:`FusionHead` (84 → outputs). ReLU and max-pooling replace the original tanh and
    trainable sub-sampling (as in most modern LeNet-5 baselines).

    Sizes: the convolutions are unpadded, as published. Sides below 32 (LeNet-5's own input size,
    for which the last map is exactly 5×5) are zero-padded to 32, just as LeCun padded 28×28 MNIST
    digits to 32×32. Larger detector images (125, 150) go through the adaptive pool to 5×5.
    """

    MIN_SIZE = 32

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        num_scalars: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.pad = PadToMin(img_size, max(self.MIN_SIZE, chain_min_input(self.features)))
        self.pool = nn.AdaptiveAvgPool2d(5)
        self.fc = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True)
        )
        self.num_features = 84
        self.head = FusionHead(84, num_outputs, num_scalars, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(self.pad(x))).flatten(1))


# ---------------------------------------------------------------------------------------------
# AlexNet
# ---------------------------------------------------------------------------------------------

# stem stride -> (kernel, padding) of the first convolution
_ALEXNET_STEMS = {4: (11, 2), 2: (7, 3), 1: (5, 2)}


def alexnet_stem_stride(img_size: tuple[int, int]) -> int:
    """4 (the original 11×11/4 stem) for sides ≥ 192, 2 for sides ≥ 96, else 1."""
    side = min(img_size)
    return 4 if side >= 192 else 2 if side >= 96 else 1


class AlexNet(ImageModel):
    """AlexNet (Krizhevsky et al. 2012) with a size-aware stem.

    conv (→ 64) – ReLU – max-pool 3/2 – conv5×5 (→ 192) – ReLU – max-pool 3/2 – conv3×3 384, 256,
    256 (ReLU each) – max-pool 3/2 – adaptive average pool to 6×6 – dropout – FC(9216 → fc_dim) –
    ReLU – dropout – FC(fc_dim → fc_dim) – ReLU – :class:`FusionHead`. No local response norm.

    Sizes: the first convolution depends on the image (``stem_stride``, automatic by default, see
    :func:`alexnet_stem_stride`): 11×11 stride 4 (as published, for ImageNet-sized inputs, shorter
    side ≥ 192), 7×7 stride 2 (shorter side 96–191: 125 and 150 detector/lensing images) or 5×5
    stride 1 (smaller images: 32×32 crops, 64×64 lensing). The last map before the 6×6 adaptive
    pool is then 3–11 pixels wide (32 → 3, 64 → 7, 125 → 7, 150 → 8) where the original stem would
    leave 2–3 pixels at 125–150 and fail below 63. Inputs still too small for the three max-pools
    are zero-padded to the minimum the chain needs (15 with the stride-1 stem).
    ``fc_dim`` defaults to 1024 rather than the original 4096 to keep the count near 13 M
    (``fc_dim=4096`` gives the original 58 M-parameter classifier).
    """

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        stem_stride: int | None = None,
        fc_dim: int = 1024,
        fc_dropout: float = 0.5,
        num_scalars: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.stem_stride = alexnet_stem_stride(img_size) if stem_stride is None else stem_stride
        if self.stem_stride not in _ALEXNET_STEMS:
            raise ValueError(f"stem_stride must be one of {sorted(_ALEXNET_STEMS)}, got {stem_stride}")
        k, p = _ALEXNET_STEMS[self.stem_stride]
        widths = (64, 192, 384, 256, 256)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], k, stride=self.stem_stride, padding=p),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(widths[0], widths[1], 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(widths[1], widths[2], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(widths[2], widths[3], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(widths[3], widths[4], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.pad = PadToMin(img_size, chain_min_input(self.features))
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.fc = nn.Sequential(
            nn.Dropout(fc_dropout),
            nn.Linear(widths[4] * 6 * 6, fc_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(fc_dropout),
            nn.Linear(fc_dim, fc_dim),
            nn.ReLU(inplace=True),
        )
        _init_cnn(self)
        self.num_features = fc_dim
        self.head = FusionHead(fc_dim, num_outputs, num_scalars, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(self.pad(x))).flatten(1))


# ---------------------------------------------------------------------------------------------
# VGG
# ---------------------------------------------------------------------------------------------

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(ImageModel):
    """VGG (Simonyan & Zisserman 2015) conv stacks with batch norm: conv3×3 (padding 1) – BN –
    ReLU per layer, max-pool 2 after each of the five stages; then a global average pool and a
    small head, FC(512 → fc_dim) – ReLU – dropout – :class:`FusionHead`.

    The two 4096-wide FC layers of the original (≈ 120 M parameters on 7×7×512 features) are
    replaced by the global pool and one ``fc_dim``-wide layer (default 256), so vgg11 has ≈ 9.4 M
    and vgg16 ≈ 14.9 M parameters, almost all in the convolutions.

    Sizes: the five max-pools halve the map, so sides below 32 are zero-padded to 32 (a 32×32
    crop ends as a 1×1 map, as in the usual CIFAR VGG); larger images keep their size.
    """

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        config: str | Sequence[int | str] = "vgg11",
        fc_dim: int = 256,
        fc_dropout: float = 0.5,
        num_scalars: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        cfg = VGG_CONFIGS[config] if isinstance(config, str) else list(config)
        self.img_size = img_size
        layers: list[nn.Module] = []
        prev = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(prev, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                prev = int(v)
        self.features = nn.Sequential(*layers)
        self.pad = PadToMin(img_size, chain_min_input(self.features))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(prev, fc_dim), nn.ReLU(inplace=True), nn.Dropout(fc_dropout))
        _init_cnn(self)
        self.num_features = fc_dim
        self.head = FusionHead(fc_dim, num_outputs, num_scalars, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(self.pad(x))).flatten(1))


# ---------------------------------------------------------------------------------------------
# Inception (GoogLeNet-style)
# ---------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class InceptionModule(nn.Module):
    """Four parallel branches concatenated on channels: 1×1; 1×1 → 3×3; 1×1 → 5×5;
    max-pool 3×3/1 → 1×1 ("pool projection"). Every branch keeps the spatial size."""

    def __init__(self, in_ch: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = ConvBNReLU(in_ch, c1, 1)
        self.b3 = nn.Sequential(ConvBNReLU(in_ch, c3r, 1), ConvBNReLU(c3r, c3, 3))
        self.b5 = nn.Sequential(ConvBNReLU(in_ch, c5r, 1), ConvBNReLU(c5r, c5, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), ConvBNReLU(in_ch, cp, 1))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


# GoogLeNet's modules (Szegedy et al. 2015, table 1): (1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool proj)
_INCEPTION_STAGES: dict[int, list[tuple[int, int, int, int, int, int]]] = {
    3: [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)],
    4: [
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ],
    5: [(256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)],
}


class Inception(ImageModel):
    """GoogLeNet-style network (Szegedy et al. 2015) with batch norm after every convolution.

    Stem: conv7×7 (→ 64) – [max-pool 3/2] – conv1×1 (→ 64) – conv3×3 (→ 192) – max-pool 3/2; then
    Inception stages 3 (3a, 3b), max-pool 3/2, 4 (4a–4e) and, with ``last_stage=5``, max-pool 3/2
    and 5 (5a, 5b), with GoogLeNet's branch widths; global average pool. No auxiliary classifiers
    and no local response norm. The default stops after stage 4 (832 features, ≈ 3.5 M
    parameters); ``last_stage=5`` gives the full GoogLeNet trunk (1024 features, ≈ 6.0 M).

    Sizes: every convolution and pool is padded, so any size works without padding. The stem
    adapts to small images (``stem_stride``, automatic): for a shorter side ≥ 64 it is the
    original (conv stride 2 and a max-pool: the Inception stages see 1/8 of the image); below 64
    the first convolution has stride 1 and its max-pool is dropped (stages see 1/2), so a 32×32
    crop reaches stage 3 at 16×16 rather than 4×4. ``stem_stride`` (4 or 1) is the stride of that
    first convolution and max-pool together.
    """

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        last_stage: int = 4,
        stem_stride: int | None = None,
        num_scalars: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if last_stage not in (3, 4, 5):
            raise ValueError(f"last_stage must be 3, 4 or 5, got {last_stage}")
        self.img_size = img_size
        self.stem_stride = (4 if min(img_size) >= 64 else 1) if stem_stride is None else stem_stride
        if self.stem_stride not in (1, 4):
            raise ValueError(f"stem_stride must be 1 or 4, got {stem_stride}")
        stem: list[nn.Module] = [ConvBNReLU(in_chans, 64, 7, stride=2 if self.stem_stride == 4 else 1)]
        if self.stem_stride == 4:
            stem.append(nn.MaxPool2d(3, 2, padding=1))
        stem += [ConvBNReLU(64, 64, 1), ConvBNReLU(64, 192, 3), nn.MaxPool2d(3, 2, padding=1)]
        self.stem = nn.Sequential(*stem)
        blocks: list[nn.Module] = []
        prev = 192
        for stage in range(3, last_stage + 1):
            if stage > 3:
                blocks.append(nn.MaxPool2d(3, 2, padding=1))
            for spec in _INCEPTION_STAGES[stage]:
                module = InceptionModule(prev, *spec)
                blocks.append(module)
                prev = module.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        _init_cnn(self)
        self.num_features = prev
        self.head = FusionHead(prev, num_outputs, num_scalars, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(x))).flatten(1)


# ---------------------------------------------------------------------------------------------
# timm backbones
# ---------------------------------------------------------------------------------------------


class TimmCNN(ImageModel):
    """A timm CNN (random init, ``pretrained=False``) as a pooled feature extractor, with our
    :class:`FusionHead` on top (``num_classes=0`` removes timm's classifier).

    ``drop_rate`` is the dropout before the head, applied once, by the :class:`FusionHead` (it is
    not also passed to timm, which would apply a second dropout at the same place); other kwargs
    (e.g. ``drop_path_rate``) go to ``timm.create_model``.

    Sizes: timm's ResNets and EfficientNets reduce the image 32 times, so a 32 × 32 crop would end
    as a 1 × 1 map (where batch norm cannot train on a single image). For a shorter side below 64
    the trunk is made to reduce 16 times (``reduced_stem``, automatic; no parameter changes): the
    ResNet stem's max-pool is dropped, the EfficientNet stem convolution gets stride 1. A 32 × 32
    crop then ends as a 2 × 2 map, 64 × 64 and larger images use the original trunk (2 × 2 and
    up). Sides still too small for a 2 × 2 final map (below ``reduction + 1``: 17, or 33 with the
    original trunk) are zero-padded to that size.
    """

    def __init__(
        self,
        timm_name: str,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        reduced_stem: bool | None = None,
        num_scalars: int = 0,
        drop_rate: float = 0.0,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        import timm  # imported lazily: timm (and torchvision) load only when such a model is built

        self.img_size = img_size
        self.timm_name = timm_name
        backbone = timm.create_model(timm_name, pretrained=False, in_chans=in_chans, num_classes=0, **timm_kwargs)
        self.reduced_stem = min(img_size) < 64 if reduced_stem is None else bool(reduced_stem)
        if self.reduced_stem:
            _halve_reduction(backbone)
        self.reduction = 16 if self.reduced_stem else 32
        self.pad = PadToMin(img_size, self.reduction + 1)  # ceil(side / reduction) >= 2
        self.backbone = backbone
        self.num_features = int(backbone.num_features)
        self.head = FusionHead(self.num_features, num_outputs, num_scalars, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.pad(x))


def _halve_reduction(backbone: nn.Module) -> None:
    """Stride 32 → 16 for timm's ResNet (drop the stem max-pool) or EfficientNet (stem stride 1)."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet

    if isinstance(backbone, ResNet) and isinstance(backbone.maxpool, nn.MaxPool2d):
        backbone.maxpool = nn.Identity()
    elif (
        isinstance(backbone, EfficientNet)
        and type(backbone.conv_stem) is nn.Conv2d
        and backbone.conv_stem.stride == (2, 2)
        and backbone.conv_stem.padding == (1, 1)
    ):
        backbone.conv_stem.stride = (1, 1)
    else:
        raise ValueError(f"reduced_stem is not supported for {type(backbone).__name__}")


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


@register_model(
    "simple_cnn",
    description="seeds' small CNN: 3 × (conv3×3–ReLU–max-pool), adaptive pool 4×4, FC 128, head",
    family="cnn",
    source=SEED_BASELINES,
)
def simple_cnn(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> SimpleCNN:
    return SimpleCNN(in_chans, img_size, num_outputs, **kwargs)


@register_model(
    "lenet5",
    description="LeNet-5: conv5×5 6 – pool – conv5×5 16 – pool – adaptive 5×5 – FC 120 – FC 84 – head",
    family="cnn",
    source=f"{SEED_003}; LeCun et al. 1998",
)
def lenet5(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> LeNet5:
    return LeNet5(in_chans, img_size, num_outputs, **kwargs)


@register_model(
    "alexnet",
    description="AlexNet: 5 conv, 3 max-pools, size-aware stem, adaptive 6×6, 2 × FC 1024 with dropout",
    family="cnn",
    source=f"{SEED_003}; Krizhevsky et al. 2012",
)
def alexnet(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> AlexNet:
    return AlexNet(in_chans, img_size, num_outputs, **kwargs)


@register_model(
    "vgg11",
    description="VGG-11 with batch norm, global average pool, FC 256 head (no 4096-wide layers)",
    family="cnn",
    source=f"{SEED_003}; Simonyan & Zisserman 2015",
    config="vgg11",
)
def vgg11(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> VGG:
    return VGG(in_chans, img_size, num_outputs, **kwargs)


@register_model(
    "vgg16",
    description="VGG-16 with batch norm, global average pool, FC 256 head (no 4096-wide layers)",
    family="cnn",
    source=f"{SEED_003}; Simonyan & Zisserman 2015",
    config="vgg16",
)
def vgg16(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> VGG:
    return VGG(in_chans, img_size, num_outputs, **kwargs)


@register_model(
    "inception",
    description="GoogLeNet-style: BN stem, Inception 3a–3b, 4a–4e (1×1/3×3/5×5/pool-proj), global avg pool",
    family="cnn",
    source=f"{SEED_003}; Szegedy et al. 2015",
)
def inception(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> Inception:
    return Inception(in_chans, img_size, num_outputs, **kwargs)


def _register_timm(name: str, description: str, source: str) -> None:
    def builder(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> TimmCNN:
        return TimmCNN(name, in_chans, img_size, num_outputs, **kwargs)

    builder.__name__ = name
    builder.__qualname__ = name
    builder.__doc__ = f"timm ``{name}`` (random init) with the shared FusionHead."
    register_model(name, description=description, family="cnn", source=source)(builder)


_register_timm("resnet18", "timm ResNet-18 (random init), global avg pool, fusion head", f"{SEED_003}; He et al. 2016")
_register_timm("resnet50", "timm ResNet-50 (random init), global avg pool, fusion head", f"{SEED_003}; He et al. 2016")
_register_timm(
    "efficientnet_b0",
    "timm EfficientNet-B0 (random init), global avg pool, fusion head",
    f"{SEED_BASELINES}; Tan & Le 2019",
)
_register_timm(
    "efficientnet_b3",
    "timm EfficientNet-B3 (random init), global avg pool, fusion head",
    "dc250601/GSOC: the CNN half of Hybrid EffSwin (references.md); Tan & Le 2019",
)
