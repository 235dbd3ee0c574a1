"""Batch augmentation with the detector's symmetries, applied on the accelerator per sample.

For calorimeter images (axis -2 = η, axis -1 = φ) flipping η (z → −z) and φ (charge conjugation
with the field) are symmetries of the physics, so they enlarge the training set without changing
what the classes mean. More (φ roll, lensing rotations) arrive with the preprocessing issue.
"""

from __future__ import annotations

import torch
from torch import nn


class RandomFlips(nn.Module):
    """Flip each sample independently along η and/or φ with probability ``p`` (training only)."""

    def __init__(self, flip_eta: bool = False, flip_phi: bool = False, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.dims = [d for d, on in ((-2, flip_eta), (-1, flip_phi)) if on]
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.dims or self.p == 0.0:
            return x
        for d in self.dims:
            mask = torch.rand(x.shape[0], device=x.device) < self.p
            x = torch.where(mask.view(-1, *([1] * (x.ndim - 1))), x.flip(d), x)
        return x
