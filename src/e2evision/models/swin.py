"""Swin Transformer (Liu et al. 2021) for detector images of any channel count and size.

Built from timm's Swin pieces (``timm.layers.PatchEmbed`` and
``timm.models.swin_transformer.SwinTransformerStage``) with module names as in timm
(``patch_embed``, ``layers``, ``norm``), so a timm Swin state dict without its head loads with
``strict=False`` where the window sizes agree.

Geometry rule (fixed at construction, so ``forward`` has no data-dependent control flow):

* The image is zero-padded symmetrically (zero = "no deposit") to a multiple of
  ``patch_size * 2 ** (num_stages - 1)`` per axis -- 32 for Swin-T -- so that every patch-merging
  step halves an even grid: 32 → 32, 64 → 64, 125 → 128, 150 → 160.
* Each stage then picks, per axis, a window for its token grid ``g`` and the target window ``t``
  (``window_size``, 7 as published): ``g`` itself when ``g <= t`` (global attention, no shift);
  otherwise the largest divisor of ``g`` not above ``t`` when it is at least ``ceil(t / 2)``
  (windows tile the grid exactly); otherwise ``ceil(g / ceil(g / t))``, and timm's block
  zero-pads the token grid by fewer than ``ceil(g / t)`` tokens (e.g. 352 px: stage grids
  88/44/22/11, windows 4/4/6/6). For the detector geometries 32/64/125/150 the windows divide the
  grids: 125 → 128 gives grids 32/16/8/4 and windows 4/4/4/4; 150 → 160 gives
  40/20/10/5 and 5/5/5/5; 32 gives 8/4/2/1 and 4/4/2/1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed as TimmPatchEmbed
from timm.models.swin_transformer import SwinTransformerStage
from torch import nn

from e2evision.models.heads import FusionHead, ImageModel
from e2evision.models.padding import Pair, pad_to_multiple
from e2evision.models.registry import register_model

SWIN_SOURCE = (
    "Liu et al. 2021 (Swin Transformer); dc250601/GSOC (Swin-Tiny, quark/gluon AUC 0.8083, boosted top 0.9858)"
)


def stage_window(grid: int, target: int) -> int:
    """Window side for a token-grid side ``grid`` and a target window (see the module doc)."""
    if grid <= target:
        return grid
    divisor = max(d for d in range(1, target + 1) if grid % d == 0)
    if 2 * divisor >= target:
        return divisor
    n_windows = math.ceil(grid / target)
    return math.ceil(grid / n_windows)


def stage_grids(first_grid: Pair, num_stages: int) -> list[Pair]:
    """Token grid of each stage: the first, then halved (rounding up) by each patch merging."""
    grids = [tuple(first_grid)]
    for _ in range(num_stages - 1):
        grids.append(tuple((g + 1) // 2 for g in grids[-1]))
    return grids  # type: ignore[return-value]


def stage_windows(grids: Sequence[Pair], window_size: int | Sequence[int]) -> list[Pair]:
    """Per-stage ``(wh, ww)`` windows; ``window_size``: one target for all stages or one each."""
    targets = [window_size] * len(grids) if isinstance(window_size, int) else list(window_size)
    if len(targets) != len(grids):
        raise ValueError(f"window_size needs one value per stage ({len(grids)}), got {window_size}")
    return [(stage_window(g[0], t), stage_window(g[1], t)) for g, t in zip(grids, targets)]


def drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic-depth rates rising linearly over all blocks, split per stage (as in Swin)."""
    total = sum(depths)
    flat = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(flat[start : start + d])
        start += d
    return out


def build_swin_stages(
    *,
    dims: Sequence[int],
    depths: Sequence[int],
    num_heads: Sequence[int],
    grids: Sequence[Pair],
    windows: Sequence[Pair],
    drop_paths: Sequence[Sequence[float]],
    first: int,
    in_dim: int,
    mlp_ratio: float,
    qkv_bias: bool,
    proj_drop: float,
    attn_drop: float,
) -> nn.Sequential:
    """timm Swin stages ``first .. len(dims) - 1``; stage ``i > 0`` opens with a patch merging.

    ``grids[i]`` is stage ``i``'s token grid (after its merging), ``windows[i]`` its window.
    """
    stages = []
    for i in range(first, len(dims)):
        downsample = i > 0
        in_res = grids[i - 1] if downsample else grids[i]
        stages.append(
            SwinTransformerStage(
                dim=in_dim,
                out_dim=dims[i],
                input_resolution=tuple(in_res),
                depth=depths[i],
                downsample=downsample,
                num_heads=num_heads[i],
                window_size=windows[i],
                always_partition=False,
                dynamic_mask=False,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop,
                attn_drop=attn_drop,
                drop_path=list(drop_paths[i]),
            )
        )
        in_dim = dims[i]
    return nn.Sequential(*stages)


def init_linear_trunc_normal(module: nn.Module) -> None:
    """Swin/ViT initialisation of linear layers: truncated normal (std 0.02), zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_stage_config(embed_dim: int, depths: Sequence[int], num_heads: Sequence[int]) -> list[int]:
    """Stage widths (doubling from ``embed_dim``), after checking each divides by its heads
    (shared by the Swin and the hybrid CNN-Swin)."""
    if len(depths) != len(num_heads):
        raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ")
    dims = [embed_dim * 2**i for i in range(len(depths))]
    for d, h in zip(dims, num_heads):
        if d % h:
            raise ValueError(f"stage width {d} is not divisible by its {h} heads")
    return dims


class SwinTransformer(ImageModel):
    """Swin: patch embedding, four stages of (shifted-)window attention, LayerNorm, mean pooling."""

    def __init__(
        self,
        in_chans: int,
        img_size: Pair,
        num_outputs: int = 1,
        *,
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
        self.img_size = tuple(img_size)
        self.patch_size = patch_size
        self.pad_multiple = patch_size * 2 ** (len(depths) - 1)
        self.padding, self.padded_size = pad_to_multiple(self.img_size, self.pad_multiple)
        self.patch_embed = TimmPatchEmbed(
            img_size=self.padded_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=nn.LayerNorm,
            output_fmt="NHWC",
        )
        first = (self.padded_size[0] // patch_size, self.padded_size[1] // patch_size)
        self.grid_sizes = stage_grids(first, len(depths))
        self.window_sizes = stage_windows(self.grid_sizes, window_size)
        self.layers = build_swin_stages(
            dims=dims,
            depths=depths,
            num_heads=num_heads,
            grids=self.grid_sizes,
            windows=self.window_sizes,
            drop_paths=drop_path_rates(drop_path_rate, depths),
            first=0,
            in_dim=embed_dim,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            proj_drop=proj_drop_rate,
            attn_drop=attn_drop_rate,
        )
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(self.num_features)
        init_linear_trunc_normal(self)
        self.head = FusionHead(self.num_features, num_outputs, num_scalars, drop_rate)

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normed last-stage tokens, ``(N, H/32, W/32, num_features)`` (NHWC) for Swin-T."""
        if any(self.padding):
            x = F.pad(x, self.padding)
        x = self.layers(self.patch_embed(x))
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_feature_map(x).mean(dim=(1, 2))

    def no_weight_decay(self) -> set[str]:
        """Relative position bias tables are not decayed (as in Swin/timm)."""
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}


@register_model(
    "swin_tiny",
    description="Swin-T (96 wide, depths 2-2-6-2, heads 3-6-12-24, patch 4, window ≤ 7), pads to ×32",
    family="swin",
    source=SWIN_SOURCE,
    embed_dim=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    drop_path_rate=0.1,
)
@register_model(
    "swin_micro",
    description="CPU-sized Swin (32 wide, depths 1-1-2-1, heads 1-2-4-8) for demos and tests",
    family="swin",
    source=SWIN_SOURCE,
    embed_dim=32,
    depths=[1, 1, 2, 1],
    num_heads=[1, 2, 4, 8],
    drop_path_rate=0.0,
)
def swin(in_chans: int, img_size: Pair, num_outputs: int = 1, **kwargs) -> SwinTransformer:
    return SwinTransformer(in_chans, img_size, num_outputs, **kwargs)
