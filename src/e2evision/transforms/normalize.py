"""Per-channel normalisation with statistics from the training folds only.

Kept as a ``torch.nn.Module`` with buffers so that it runs on the accelerator inside the training
step, travels with the weights, and can be written out as the ``preprocess.json`` contract for
deployment. It fixes the seed pipeline's quirks (datasets.md): statistics are global over the
training split, not per batch, and the clip is symmetric in normalised units, keeping negatives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from e2evision.datasets.base import ChannelStats


class ChannelNormalizer(nn.Module):
    """``x → clip((zs(x) − centre) / scale, ±clip)`` per channel, where ``zs`` is zero suppression.

    ``mode="zscore"`` centres at the mean and scales by the std; ``"scale"`` only divides by the
    std (keeps zeros at zero, which suits sparse detector images); ``"none"`` is the identity.
    """

    def __init__(
        self,
        n_channels: int,
        mode: str = "zscore",
        clip: float | None = None,
        zero_suppression: float | None = None,
    ) -> None:
        super().__init__()
        if mode not in {"zscore", "scale", "none"}:
            raise ValueError(f"unknown normalisation mode {mode!r}")
        self.mode = mode
        self.clip = clip
        self.zero_suppression = zero_suppression
        self.register_buffer("centre", torch.zeros(n_channels))
        self.register_buffer("scale", torch.ones(n_channels))

    def fit(self, stats: ChannelStats) -> ChannelNormalizer:
        """Set centre/scale from streaming statistics of the training split."""
        std = np.where(stats.std > 0, stats.std, 1.0)
        if self.mode == "zscore":
            self.centre.copy_(torch.as_tensor(stats.mean, dtype=torch.float32))
        if self.mode in {"zscore", "scale"}:
            self.scale.copy_(torch.as_tensor(std, dtype=torch.float32))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.zero_suppression is not None:
            x = torch.where(x.abs() < self.zero_suppression, torch.zeros_like(x), x)
        x = (x - self.centre.view(1, -1, 1, 1)) / self.scale.view(1, -1, 1, 1)
        if self.clip is not None:
            x = x.clamp(-self.clip, self.clip)
        return x

    def to_dict(self) -> dict[str, Any]:
        """The normalisation as data (what a C++ or ONNX consumer must apply)."""
        return {
            "mode": self.mode,
            "zero_suppression": self.zero_suppression,
            "centre": self.centre.tolist(),
            "scale": self.scale.tolist(),
            "clip": self.clip,
        }
