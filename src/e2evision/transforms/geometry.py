"""Resize, centre-crop and pad images to the size a model expects (deterministic, train and eval).

These run after normalisation, inside the model's forward pass, so that an exported model carries
them and a C++ consumer only applies the per-pixel ``preprocess.json`` steps to raw images. Zero
padding therefore pads with the normalised value 0 (the training mean for z-scored inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"an image size is (H, W) with positive entries, got {tuple(size)}")
    return (int(size[0]), int(size[1]))


class CenterCrop(nn.Module):
    """Keep the central ``size`` pixels (the jet axis / lens centre sits in the middle)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _size(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = self.size
        if th > h or tw > w:
            raise ValueError(f"cannot crop {h}×{w} images to {th}×{tw}")
        top, left = (h - th) // 2, (w - tw) // 2
        return x[..., top : top + th, left : left + tw]


class PadTo(nn.Module):
    """Zero-pad symmetrically (extra pixel at the end) up to ``size``, e.g. 125 → 128."""

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _size(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = self.size
        if th < h or tw < w:
            raise ValueError(f"cannot pad {h}×{w} images to the smaller {th}×{tw}")
        top, left = (th - h) // 2, (tw - w) // 2
        return F.pad(x, (left, tw - w - left, top, th - h - top))


class Resize(nn.Module):
    """Bilinear resize (antialiased when shrinking); linear, so it commutes with per-channel affine maps."""

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _size(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        shrink = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrink)


def build_geometry(
    resize: Sequence[int] | None = None, crop: Sequence[int] | None = None, pad: Sequence[int] | None = None
) -> nn.Module:
    """Crop, then pad, then resize (each optional); identity when none is set."""
    steps: list[nn.Module] = []
    if crop is not None:
        steps.append(CenterCrop(crop))
    if pad is not None:
        steps.append(PadTo(pad))
    if resize is not None:
        steps.append(Resize(resize))
    return nn.Sequential(*steps) if steps else nn.Identity()


def output_size(
    in_size: tuple[int, int],
    resize: Sequence[int] | None = None,
    crop: Sequence[int] | None = None,
    pad: Sequence[int] | None = None,
) -> tuple[int, int]:
    """The (H, W) that :func:`build_geometry` produces from ``in_size`` (to build the model for it)."""
    size = tuple(in_size)
    if crop is not None:
        size = _size(crop)
    if pad is not None:
        size = _size(pad)
    if resize is not None:
        size = _size(resize)
    return size  # type: ignore[return-value]
