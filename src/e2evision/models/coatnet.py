"""CoAtNet (Dai et al. 2021): convolution stages, then relative-attention transformer stages.

``coatnet_0`` has the layout dc250601/GSOC trained on quark/gluon and boosted-top jets: blocks
[2, 2, 3, 5, 2] and widths [64, 96, 192, 384, 768] for a two-convolution stem S0 and stages
S1..S4 of types C-C-T-T (MBConv, MBConv, Transformer, Transformer). The blocks are timm's
(``timm.models.maxxvit``), configured as timm's paper-like ``coatnet_0`` (not ``coatnet_0_rw``,
which has depths 2-3-7-2, a 32/64 stem and pool-strided MBConvs); module names as in timm
(``stem``, ``stages``, ``norm``).

Differences from dc250601's own implementation (a from-scratch CoAtNet at 128 × 128 input), which
has the same block counts and widths:

* attention: timm uses 32-channel heads over the full stage width (12 heads at 384, 24 at 768);
  dc250601 uses 8 heads of 32 (a 256-wide attention) in every transformer stage;
* downsampling: timm strides the depthwise conv and uses a 2 × 2 average-pool + 1 × 1 conv
  shortcut; dc250601 strides the 1 × 1 expansion conv and uses a 3 × 3 max-pool shortcut;
* MBConv expansion ×4 of the output width (timm) vs of the input width (dc250601);
* timm's stem has no norm/activation after its second conv (the next block pre-norms), and a final
  LayerNorm before pooling; dc250601 has BN-GELU after both stem convs and no final norm;
* head: :class:`FusionHead` (bias) instead of a bias-free linear layer.

Geometry rule: the transformer stages attend globally over their whole feature map with a
relative-position bias sized by it, and every stage halves the map, so the image is zero-padded
symmetrically (zero = "no deposit") to a multiple of ``2 ** (1 + len(depths))`` (32 for
CoAtNet-0) per axis, fixed at construction: 32 → 32, 64 → 64, 125 → 128, 150 → 160.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models.maxxvit import MaxxVit, model_cfgs

from e2evision.models.heads import FusionHead, ImageModel
from e2evision.models.padding import pad_to_multiple
from e2evision.models.registry import register_model

COATNET_SOURCE = "Dai et al. 2021 (CoAtNet); dc250601/GSOC (CoAtNet-0, quark/gluon AUC 0.8146, boosted top 0.9872)"

Pair = tuple[int, int]


class CoAtNet(ImageModel):
    """Stem (two 3 × 3 convs, stride 2), four stages (C/T blocks), LayerNorm, mean pooling."""

    def __init__(
        self,
        in_chans: int,
        img_size: Pair,
        num_outputs: int = 1,
        *,
        stem_width: int = 64,
        embed_dim: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 3, 5, 2),
        block_types: Sequence[str] = ("C", "C", "T", "T"),
        dim_head: int = 32,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        num_scalars: int = 0,
    ) -> None:
        super().__init__()
        embed_dim, depths, block_types = tuple(embed_dim), tuple(depths), tuple(block_types)
        if not len(embed_dim) == len(depths) == len(block_types):
            raise ValueError("embed_dim, depths and block_types need one entry per stage")
        for w, t in zip(embed_dim, block_types):
            if t == "T" and w % dim_head:
                raise ValueError(f"transformer width {w} is not a multiple of dim_head {dim_head}")
        self.img_size = tuple(img_size)
        self.pad_multiple = 2 ** (1 + len(depths))  # stem stride 2, then ×2 per stage
        self.padding, self.padded_size = pad_to_multiple(self.img_size, self.pad_multiple)
        base = model_cfgs["coatnet_0"]
        cfg = dataclasses.replace(
            base,
            embed_dim=embed_dim,
            depths=depths,
            block_type=block_types,
            stem_width=stem_width,
            head_hidden_size=None,  # our FusionHead replaces timm's pre-logits MLP head
            transformer_cfg=dataclasses.replace(base.transformer_cfg, dim_head=dim_head),
        )
        backbone = MaxxVit(
            cfg,
            img_size=self.padded_size,
            in_chans=in_chans,
            num_classes=0,
            drop_path_rate=drop_path_rate,
        )
        # Keep timm's parts under timm's names; its (parameter-free) head is dropped.
        self.stem = backbone.stem
        self.stages = backbone.stages
        self.norm = backbone.norm
        self.feature_strides = [2] + [2 ** (2 + i) for i in range(len(depths))]
        self.num_features = embed_dim[-1]
        self.head = FusionHead(self.num_features, num_outputs, num_scalars, drop_rate)

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normed last-stage map ``(N, num_features, H/32, W/32)`` (of the padded image)."""
        if any(self.padding):
            x = F.pad(x, self.padding)
        return self.norm(self.stages(self.stem(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_feature_map(x).mean(dim=(2, 3))

    def no_weight_decay(self) -> set[str]:
        """Relative position bias tables are not decayed (as in timm)."""
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}


@register_model(
    "coatnet_0",
    description="CoAtNet-0 (blocks 2-2-3-5-2, widths 64-96-192-384-768, C-C-T-T), pads to ×32",
    family="coatnet",
    source=COATNET_SOURCE,
    stem_width=64,
    embed_dim=[96, 192, 384, 768],
    depths=[2, 3, 5, 2],
)
@register_model(
    "coatnet_micro",
    description="CPU-sized CoAtNet (blocks 2-1-1-2-1, widths 16-32-64-128-256, C-C-T-T) for demos and tests",
    family="coatnet",
    source=COATNET_SOURCE,
    stem_width=16,
    embed_dim=[32, 64, 128, 256],
    depths=[1, 1, 2, 1],
)
def coatnet(in_chans: int, img_size: Pair, num_outputs: int = 1, **kwargs) -> CoAtNet:
    return CoAtNet(in_chans, img_size, num_outputs, **kwargs)
