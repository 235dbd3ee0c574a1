"""Two data-efficient ViT variants built on :class:`~e2evision.models.vit.VisionTransformer`.

**DeiT with a distillation token** (Touvron et al. 2021, "Training data-efficient image
transformers & distillation through attention"). The sequence is ``[class, distillation,
patches]``; the class token feeds ``self.head`` and the distillation token ``self.head_dist``
(both :class:`~e2evision.models.heads.FusionHead`, so both see the scalar inputs).

* ``forward(x, scalars)`` returns the mean of the two heads' logits (DeiT's inference rule), so
  the model has the zoo's uniform interface;
* ``forward_distill(x, scalars)`` returns ``(class_logits, dist_logits)`` for a distillation loss
  (e.g. the class head against the labels and the distillation head against a teacher);
* ``forward_features(x)`` returns the mean of the two tokens' final embeddings (timm's
  pre-logits), ``(N, num_features)``. ``forward_head`` is the base class's (class head only): use
  ``forward`` for predictions.

**ViT with a convolutional stem** (Xiao et al. 2021, "Early convolutions help transformers see
better"; proposed for the E2E images by seed 001). The patchify convolution is replaced by
3×3 stride-2 conv–BN–ReLU layers followed by a small patchify convolution to the embedding width
(Xiao et al.'s 1×1 convolution where the stem already reaches the token grid), then the standard
transformer blocks. With ``k = len(stem_channels)`` stride-2 layers (padding 1) each axis goes
``H → ceil(H/2)``, so the stem's output is ``ceil(H / 2**k)`` per side (2 layers: 32 → 8,
125 → 32, 150 → 38, 64 → 16). The final patchify kernel is ``p' = ceil(patch_size / 2**k)``
(``patch_size`` as for the plain ViT, about 8 tokens per side by default) on that map, zero-padded
to a multiple of ``p'`` as in :class:`~e2evision.models.vit.PatchEmbed`: 32×32 images give 8×8
tokens through a 1×1 conv; 125 → 32 → ``p' = 4`` → 8×8; 150 → 38 → ``p' = 5`` → 8×8 (padded to 40).
``model.patch_size`` is then the effective stride in input pixels, ``2**k · p'``. Following Xiao et
al., who drop one transformer block to pay for the stem, ``vit_convstem_tiny`` has 11 blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from e2evision.models.heads import FusionHead
from e2evision.models.registry import register_model
from e2evision.models.vit import PatchEmbed, VisionTransformer


class DistilledVisionTransformer(VisionTransformer):
    """DeiT: a ViT with a class token *and* a distillation token, each with its own head."""

    num_prefix_tokens = 2

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        num_scalars: int = 0,
        drop_rate: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(in_chans, img_size, num_outputs, num_scalars=num_scalars, drop_rate=drop_rate, **kwargs)
        self.dist_token = nn.Parameter(torch.zeros(1, 1, self.num_features))
        self.head_dist = FusionHead(self.num_features, num_outputs, num_scalars, drop_rate)
        # the same initialisation VisionTransformer gives its class token and head
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        nn.init.trunc_normal_(self.head_dist.fc.weight, std=0.02)
        nn.init.zeros_(self.head_dist.fc.bias)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block and norm: ``(N, 2 + patches, dim)``."""
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        dist = self.dist_token.expand(x.shape[0], -1, -1)
        x = self.pos_drop(torch.cat([cls, dist, x], dim=1) + self.pos_embed)
        return self.norm(self.blocks(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_tokens(x)
        return (tokens[:, 0] + tokens[:, 1]) / 2

    def forward_distill(
        self, x: torch.Tensor, scalars: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(class-head logits, distillation-head logits)``, each ``(N, num_outputs)``."""
        tokens = self.forward_tokens(x)
        return self.head(tokens[:, 0], scalars), self.head_dist(tokens[:, 1], scalars)

    def forward(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        cls_logits, dist_logits = self.forward_distill(x, scalars)
        return (cls_logits + dist_logits) / 2

    def reset_classifier(self, num_outputs: int, num_scalars: int | None = None) -> None:
        """Fresh class and distillation heads (same dropout as before), keeping the rest."""
        n_s = self.head.num_scalars if num_scalars is None else num_scalars
        p = self.head.drop.p if isinstance(self.head.drop, nn.Dropout) else 0.0
        self.head = FusionHead(self.num_features, num_outputs, n_s, p)
        self.head_dist = FusionHead(self.num_features, num_outputs, n_s, p)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"dist_token"}


class ConvStem(nn.Module):
    """3×3 stride-2 conv–BN–ReLU layers, then a ``p'``-strided patchify conv to the width.

    Drop-in for :class:`~e2evision.models.vit.PatchEmbed` (same signature plus ``stem_channels``);
    sizes are fixed at construction (see the module docstring).
    """

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        patch_size: int,
        dim: int,
        stem_channels: Sequence[int] = (16, 32),
    ) -> None:
        super().__init__()
        if not stem_channels:
            raise ValueError("stem_channels must name at least one conv layer")
        layers: list[nn.Module] = []
        c, (h, w) = in_chans, img_size
        for out in stem_channels:
            layers += [
                nn.Conv2d(c, int(out), kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(int(out)),
                nn.ReLU(inplace=True),
            ]
            c, h, w = int(out), (h + 1) // 2, (w + 1) // 2  # ceil(H/2) for k=3, s=2, p=1
        self.stem = nn.Sequential(*layers)
        self.reduction = 2 ** len(stem_channels)
        self.stem_size = (h, w)
        self.patchify = PatchEmbed(c, (h, w), max(1, math.ceil(patch_size / self.reduction)), dim)
        self.effective_patch_size = self.reduction * self.patchify.proj.kernel_size[0]
        self.grid = self.patchify.grid
        self.num_patches = self.patchify.num_patches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patchify(self.stem(x))  # (N, tokens, dim)


class ConvStemVisionTransformer(VisionTransformer):
    """ViT whose patchify stem is a stack of stride-2 3×3 convolutions (Xiao et al. 2021)."""

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        stem_channels: Sequence[int] = (16, 32),
        **kwargs,
    ) -> None:
        embed = partial(ConvStem, stem_channels=tuple(int(c) for c in stem_channels))
        super().__init__(in_chans, img_size, num_outputs, embed_layer=embed, **kwargs)
        self.patch_size = self.patch_embed.effective_patch_size


_DEIT_SOURCE = "Touvron et al. 2021 (DeiT, distillation token)"
_CONVSTEM_SOURCE = "Xiao et al. 2021 (early convolutions help transformers see better); seed 001"


@register_model(
    "deit_tiny_distilled",
    description="DeiT-Tiny with a distillation token (192 wide, 12 blocks, 3 heads)",
    family="vit",
    source=_DEIT_SOURCE,
    embed_dim=192,
    depth=12,
    num_heads=3,
)
@register_model(
    "deit_micro_distilled",
    description="CPU-sized DeiT with a distillation token (64 wide, 4 blocks, 4 heads)",
    family="vit",
    source=_DEIT_SOURCE,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
)
def deit_distilled(
    in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs
) -> DistilledVisionTransformer:
    return DistilledVisionTransformer(in_chans, img_size, num_outputs, **kwargs)


@register_model(
    "vit_convstem_tiny",
    description="ViT-Tiny with a conv stem (3×3 s2 conv-BN-ReLU 48, 96; 192 wide, 11 blocks, 3 heads)",
    family="vit",
    source=_CONVSTEM_SOURCE,
    embed_dim=192,
    depth=11,
    num_heads=3,
    stem_channels=(48, 96),
)
@register_model(
    "vit_convstem_micro",
    description="CPU-sized ViT with a conv stem (3×3 s2 conv-BN-ReLU 16, 32; 64 wide, 4 blocks, 4 heads)",
    family="vit",
    source=_CONVSTEM_SOURCE,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
    stem_channels=(16, 32),
)
def vit_convstem(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> ConvStemVisionTransformer:
    return ConvStemVisionTransformer(in_chans, img_size, num_outputs, **kwargs)
