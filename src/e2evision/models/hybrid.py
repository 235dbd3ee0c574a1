"""Hybrid EffSwin (dc250601/GSOC): EfficientNet stages in place of Swin's first stages.

The first Swin stages (patch embedding, stages 1-2) are replaced by the stem and first stages of
an EfficientNet (B3 for ``hybrid_effswin``), cut where its features reach stride 8
(``self.cnn``), then a 1 × 1 conv + BatchNorm + SiLU to the Swin width at stride 8 (192 for Swin-T;
``self.proj``, as dc250601's "embed matcher"), then Swin stages 3 and 4 and the final LayerNorm
(``self.transformer``, timm's ``SwinTransformerStage`` modules; stage 3 opens with the patch merging
192 → 384, stride 16), mean pooling and the :class:`FusionHead` (``self.head``).

Training in stages, as published: (1) train a plain :class:`~e2evision.models.swin.SwinTransformer`
of the same size and geometry; (2) copy its stages 3-4, norm and head in with
:meth:`HybridEffSwin.load_swin_weights`, freeze them (``set_training_stage(2)``) and train the CNN
and the projection; (3) unfreeze everything (``set_training_stage(3)``). ``parameter_groups()``
gives the four named parts for optimiser parameter groups.

Difference from dc250601's code: there the EfficientNet-B3 stem is swapped for a stride-4 conv so
its stage-3 features come out at stride 16 with 384 channels, which enter Swin stage 3's blocks
directly (the timm Swin of the time closed each stage with its patch merging). Here, as specified, the CNN
keeps its own stem (features at stride 8) and Swin stage 3 keeps its patch merging, so every Swin
weight, the merging included, transfers from step (1).

Geometry rule: as for Swin, the image is zero-padded symmetrically to a multiple of 32 per axis
(125 → 128, 150 → 160), so the CNN output (stride 8; timm's EfficientNet pads its convs by
k // 2, which gives ceil(H / 2) per stride-2 layer) is exactly the padded size / 8, and the window
sizes of stages 3-4 are those of the Swin model of the same geometry (see
:mod:`e2evision.models.swin`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

from e2evision.models.heads import FusionHead, ImageModel
from e2evision.models.padding import pad_to_multiple
from e2evision.models.registry import register_model
from e2evision.models.swin import (
    SwinTransformer,
    build_swin_stages,
    check_stage_config,
    drop_path_rates,
    init_linear_trunc_normal,
    stage_grids,
    stage_windows,
)

HYBRID_SOURCE = (
    "dc250601/GSOC (Hybrid EffSwin: EfficientNet-B3 stages + Swin-Tiny stages 3-4; quark/gluon AUC "
    "0.8144, boosted top 0.9877)"
)

Pair = tuple[int, int]
GROUP_NAMES = ("cnn", "proj", "transformer", "head")


def efficientnet_trunk(name: str, in_chans: int, stride: int, drop_path_rate: float = 0.0) -> tuple[nn.Sequential, int]:
    """Stem and first blocks of a timm EfficientNet, cut at its feature of the given stride.

    Returns the trunk (``conv_stem``, ``bn1``, ``blocks`` as in timm, so timm EfficientNet weights
    load with ``strict=False``) and its output channel count.
    """
    full = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0, drop_path_rate=drop_path_rate)
    taps = [f for f in full.feature_info if f["module"].startswith("blocks.")]
    info = [f for f in taps if f["reduction"] == stride]
    if not info:
        have = sorted({f["reduction"] for f in taps})
        raise ValueError(f"{name} has no block output at stride {stride}; strides: {have}")
    last = int(info[-1]["module"].split(".")[1])
    blocks = nn.Sequential(*full.blocks[: last + 1])
    trunk = nn.Sequential(OrderedDict(conv_stem=full.conv_stem, bn1=full.bn1, blocks=blocks))
    return trunk, int(info[-1]["num_chs"])


class SwinTail(nn.Module):
    """The last Swin stages and the final LayerNorm, on NHWC tokens."""

    def __init__(self, layers: nn.Sequential, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.layers = layers
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(x))


class HybridEffSwin(ImageModel):
    def __init__(
        self,
        in_chans: int,
        img_size: Pair,
        num_outputs: int = 1,
        *,
        cnn: str = "efficientnet_b3",
        cnn_stride: int = 8,
        cnn_drop_path_rate: float = 0.0,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        num_scalars: int = 0,
    ) -> None:
        super().__init__()
        depths, num_heads = tuple(depths), tuple(num_heads)
        dims = check_stage_config(embed_dim, depths, num_heads)
        n_stages = len(depths)
        ratio = cnn_stride // patch_size
        if cnn_stride % patch_size or ratio & (ratio - 1):
            raise ValueError(f"cnn_stride {cnn_stride} must be patch_size {patch_size} times a power of 2")
        # Swin stage i outputs stride patch_size * 2**i; the CNN replaces stages 0 .. replaced - 1.
        replaced = int(math.log2(ratio)) + 1
        if replaced >= n_stages:
            raise ValueError(f"cnn_stride {cnn_stride} leaves no Swin stage of {n_stages}")
        self.img_size = tuple(img_size)
        self.cnn_stride = cnn_stride
        self.first_swin_stage = replaced  # 0-based index of the first kept stage (2: "stage 3")
        self.pad_multiple = patch_size * 2 ** (n_stages - 1)
        self.padding, self.padded_size = pad_to_multiple(self.img_size, self.pad_multiple)
        first = (self.padded_size[0] // patch_size, self.padded_size[1] // patch_size)
        self.grid_sizes = stage_grids(first, n_stages)  # as in the Swin model of this geometry
        self.window_sizes = stage_windows(self.grid_sizes, window_size)
        self.cnn_grid = self.grid_sizes[replaced - 1]

        self.cnn, self.cnn_channels = efficientnet_trunk(cnn, in_chans, cnn_stride, cnn_drop_path_rate)
        width = dims[replaced - 1]
        self.proj = nn.Sequential(
            nn.Conv2d(self.cnn_channels, width, kernel_size=1, bias=False),
            nn.BatchNorm2d(width),
            nn.SiLU(),
        )
        layers = build_swin_stages(
            dims=dims,
            depths=depths,
            num_heads=num_heads,
            grids=self.grid_sizes,
            windows=self.window_sizes,
            drop_paths=drop_path_rates(drop_path_rate, depths),  # the same rates as the full Swin
            first=replaced,
            in_dim=width,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            proj_drop=proj_drop_rate,
            attn_drop=attn_drop_rate,
        )
        self.num_features = dims[-1]
        self.transformer = SwinTail(layers, nn.LayerNorm(self.num_features))
        init_linear_trunc_normal(self.transformer)
        self.head = FusionHead(self.num_features, num_outputs, num_scalars, drop_rate)

    def forward_cnn(self, x: torch.Tensor) -> torch.Tensor:
        """CNN features of the padded image, ``(N, cnn_channels, H_pad / 8, W_pad / 8)``."""
        if any(self.padding):
            x = F.pad(x, self.padding)
        return self.cnn(x)

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normed last-stage tokens ``(N, H_pad / 32, W_pad / 32, num_features)`` (NHWC)."""
        x = self.proj(self.forward_cnn(x))
        return self.transformer(x.permute(0, 2, 3, 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_feature_map(x).mean(dim=(1, 2))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by part: ``cnn``, ``proj``, ``transformer`` (Swin stages + norm), ``head``."""
        return {name: list(getattr(self, name).parameters()) for name in GROUP_NAMES}

    def set_training_stage(self, stage: int) -> None:
        """Published schedule: 2 → train ``cnn`` and ``proj`` with the Swin part and head frozen;
        3 → train everything. (Stage 1 trains the plain Swin model.)"""
        if stage not in (2, 3):
            raise ValueError(f"stage must be 2 or 3 (stage 1 trains a Swin model), got {stage}")
        for name, params in self.parameter_groups().items():
            trainable = stage == 3 or name in ("cnn", "proj")
            for p in params:
                p.requires_grad_(trainable)

    @torch.no_grad()
    def load_swin_weights(self, swin: SwinTransformer, head: bool = True) -> None:
        """Copy Swin stages ``first_swin_stage ..``, the final norm and (optionally) the head from a
        trained :class:`SwinTransformer` of the same width, depths and geometry."""
        kept = list(swin.layers)[self.first_swin_stage :]
        if len(kept) != len(self.transformer.layers) or swin.window_sizes != self.window_sizes:
            raise ValueError("the Swin model's stages or windows do not match this hybrid (same preset and img_size?)")
        for mine, theirs in zip(self.transformer.layers, kept):
            mine.load_state_dict(theirs.state_dict())
        self.transformer.norm.load_state_dict(swin.norm.state_dict())
        if head:
            self.head.load_state_dict(swin.head.state_dict())

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}


@register_model(
    "hybrid_effswin",
    description="Hybrid EffSwin: EfficientNet-B3 to stride 8, 1×1 conv to 192, Swin-T stages 3-4",
    family="hybrid",
    source=HYBRID_SOURCE,
    cnn="efficientnet_b3",
    embed_dim=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    drop_path_rate=0.1,
)
@register_model(
    "hybrid_effswin_micro",
    description="CPU-sized Hybrid EffSwin: EfficientNet-B0 to stride 8, 1×1 conv to 64, swin_micro stages 3-4",
    family="hybrid",
    source=HYBRID_SOURCE,
    cnn="efficientnet_b0",
    embed_dim=32,
    depths=[1, 1, 2, 1],
    num_heads=[1, 2, 4, 8],
    drop_path_rate=0.0,
)
def hybrid_effswin(in_chans: int, img_size: Pair, num_outputs: int = 1, **kwargs) -> HybridEffSwin:
    return HybridEffSwin(in_chans, img_size, num_outputs, **kwargs)
