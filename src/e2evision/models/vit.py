"""A Vision Transformer written here (Dosovitskiy et al. 2021), for any channel count and size.

Patch embedding (a strided convolution, computed as one matrix product), a class token, learned
position embeddings, pre-norm blocks of multi-head self-attention (one fused
``scaled_dot_product_attention`` call) and an MLP, and a linear head on the class token. Images whose
side is not a multiple of the patch size are zero-padded symmetrically by the model itself (a zero
pixel is "no deposit" in detector images), with the padding fixed at construction so that
``forward`` has no data-dependent control flow and exports cleanly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from e2evision.models.heads import FusionHead, ImageModel
from e2evision.models.padding import pad_to_multiple
from e2evision.models.registry import register_model


def default_patch_size(img_size: tuple[int, int], tokens_per_side: int = 8) -> int:
    """Patch side giving about ``tokens_per_side``² tokens: 32 → 4, 64 → 8, 125 → 16, 150 → 19."""
    return max(1, math.ceil(max(img_size) / tokens_per_side))


class PatchEmbed(nn.Module):
    """Pad to a multiple of the patch size, then a patch-size-strided convolution to ``dim``."""

    def __init__(self, in_chans: int, img_size: tuple[int, int], patch_size: int, dim: int) -> None:
        super().__init__()
        self.padding, (hp, wp) = pad_to_multiple(img_size, patch_size)
        self.grid = (hp // patch_size, wp // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The strided convolution computed as what it is, one matrix product over flattened patches.

        Same parameters (``proj`` stays a ``Conv2d``, so checkpoints are unchanged) and the same
        numbers within float rounding; at batch 1 a oneDNN convolution call costs tens of µs of
        set-up for almost no arithmetic, the product a few (docs/deployment.md, "Latency").
        """
        if any(self.padding):
            x = F.pad(x, self.padding)
        p, (gh, gw) = self.patch_size, self.grid
        c = x.shape[1]
        patches = x.reshape(-1, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, gh * gw, c * p * p)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # (N, tokens, dim)


class Attention(nn.Module):
    """Multi-head self-attention; keeps the last attention map on request (for saliency plots)."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (b, heads, n, head_dim)
        out = self.attend(q * self.scale, k, v)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``softmax(q kᵀ) v`` with ``q`` already scaled; ``mask`` (bool, True = attend) drops logits.

        One fused ``scaled_dot_product_attention`` call unless the map is kept for saliency plots:
        exported graphs then hold one attention op instead of matmul, mask, softmax and matmul, which
        is what makes the C++ engine's AOTInductor path as fast as onnxruntime at batch 1
        (docs/deployment.md, "Latency"). Same numbers as the explicit path within float rounding.
        """
        if self.keep_attention:
            attn = q @ k.transpose(-2, -1)
            if mask is not None:
                attn = attn.masked_fill(~mask, float("-inf"))
            attn = attn.softmax(dim=-1)
            self.last_attention = attn.detach()
            return self.attn_drop(attn) @ v
        drop = self.attn_drop.p if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, scale=1.0)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample during training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        drop: float,
        attn_drop: float,
        drop_path: float,
        attn_layer: Callable[..., nn.Module] = Attention,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        # ``attn_layer(dim, num_heads, attn_drop=..., proj_drop=...)``, e.g. a variant of Attention
        self.attn = attn_layer(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(ImageModel):
    """ViT with a class token. Variants plug in their own pieces without copying this class:

    ``embed_layer(in_chans, img_size, patch_size, embed_dim)`` builds the tokenizer (any module
    mapping ``(N, C, H, W)`` to ``(N, num_patches, embed_dim)`` with a ``num_patches`` attribute),
    ``attn_layer`` the attention of every block (see :class:`Block`), and subclasses with more
    prefix tokens (e.g. DeiT's distillation token) set ``num_prefix_tokens``.
    """

    num_prefix_tokens = 1  # tokens before the patches (the class token), sizing ``pos_embed``

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        patch_size: int | None = None,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        num_scalars: int = 0,
        embed_layer: Callable[..., nn.Module] = PatchEmbed,
        attn_layer: Callable[..., nn.Module] = Attention,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size or default_patch_size(img_size)
        self.patch_embed = embed_layer(in_chans, img_size, self.patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        num_tokens = self.patch_embed.num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(
            *(Block(embed_dim, num_heads, mlp_ratio, drop_rate, attn_drop_rate, r, attn_layer) for r in rates)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.num_features = embed_dim
        self.head = FusionHead(embed_dim, num_outputs, num_scalars, drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block and norm: ``(N, 1 + patches, dim)``."""
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = self.pos_drop(torch.cat([cls, x], dim=1) + self.pos_embed)
        return self.norm(self.blocks(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x)[:, 0]

    def no_weight_decay(self) -> set[str]:
        """Position embeddings and the class token are not decayed (as in DeiT/timm)."""
        return {"pos_embed", "cls_token"}


_VIT_SOURCE = "Dosovitskiy et al. 2021; seeds 000/001 (ViT from scratch)"


@register_model(
    "vit_tiny",
    description="ViT-Tiny (192 wide, 12 blocks, 3 heads), ~8×8 patches",
    family="vit",
    source=_VIT_SOURCE,
    embed_dim=192,
    depth=12,
    num_heads=3,
)
@register_model(
    "vit_small",
    description="ViT-Small (384 wide, 12 blocks, 6 heads), ~8×8 patches",
    family="vit",
    source=_VIT_SOURCE,
    embed_dim=384,
    depth=12,
    num_heads=6,
)
@register_model(
    "vit_micro",
    description="CPU-sized ViT (64 wide, 4 blocks, 4 heads) for demos and tests",
    family="vit",
    source=_VIT_SOURCE,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
)
def vit(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> VisionTransformer:
    return VisionTransformer(in_chans, img_size, num_outputs, **kwargs)
