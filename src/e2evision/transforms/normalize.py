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


MODES = ("zscore", "scale", "minmax", "none")


class ChannelNormalizer(nn.Module):
    """``x → clip((zs(x)·k − centre) / scale, ±clip)`` per channel.

    Steps, in order: ``zs`` zero suppression (``|x| < threshold → 0``, on raw values, as the E2E
    code does), ``k`` fixed per-channel scale factors (the E2E ones, e.g. HCAL × 25), then the
    affine map fitted on the training split, then a symmetric clip in normalised units.

    ``mode="zscore"`` centres at the mean and scales by the std; ``"scale"`` only divides by the
    std (keeps zeros at zero, which suits sparse detector images); ``"minmax"`` maps the training
    split's global [min, max] to [0, 1]; ``"none"`` leaves the affine map the identity. Statistics
    are those of the images after zero suppression and scale factors.
    """

    def __init__(
        self,
        n_channels: int,
        mode: str = "zscore",
        clip: float | None = None,
        zero_suppression: float | None = None,
        channel_scale: list[float] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown normalisation mode {mode!r}; choose one of {', '.join(MODES)}")
        if channel_scale is not None and len(channel_scale) != n_channels:
            raise ValueError(f"channel_scale has {len(channel_scale)} factors for {n_channels} channels")
        self.mode = mode
        self.clip = clip
        self.zero_suppression = zero_suppression
        self.register_buffer("centre", torch.zeros(n_channels))
        self.register_buffer("scale", torch.ones(n_channels))
        k = torch.ones(n_channels) if channel_scale is None else torch.tensor(channel_scale, dtype=torch.float32)
        self.register_buffer("channel_scale", k)

    def raw_transform(self, x: np.ndarray) -> np.ndarray:
        """The fixed part (zero suppression, scale factors) in NumPy: what statistics are fitted on."""
        if self.zero_suppression is not None:
            x = np.where(np.abs(x) < self.zero_suppression, 0.0, x).astype(np.float32, copy=False)
        k = self.channel_scale.numpy()
        if not np.all(k == 1):
            x = x * k.reshape((1, -1) + (1,) * (x.ndim - 2))
        return x

    def fit(self, stats: ChannelStats) -> ChannelNormalizer:
        """Set centre/scale from streaming statistics of the training split (after ``raw_transform``)."""
        std = np.where(stats.std > 0, stats.std, 1.0)
        if self.mode == "zscore":
            self.centre.copy_(torch.as_tensor(stats.mean, dtype=torch.float32))
        if self.mode in {"zscore", "scale"}:
            self.scale.copy_(torch.as_tensor(std, dtype=torch.float32))
        if self.mode == "minmax":
            span = stats.maximum - stats.minimum
            self.centre.copy_(torch.as_tensor(stats.minimum, dtype=torch.float32))
            self.scale.copy_(torch.as_tensor(np.where(span > 0, span, 1.0), dtype=torch.float32))
        return self

    @property
    def needs_stats(self) -> bool:
        return self.mode != "none"

    def fit_scalars(self, scalars: np.ndarray) -> ChannelNormalizer:
        """Fit on scalar inputs ``(N, S)`` (each scalar is a "channel" of one pixel)."""
        stats = ChannelStats(self.centre.numel())
        stats.update(np.asarray(scalars, dtype=np.float64).reshape(len(scalars), -1, 1, 1))
        return self.fit(stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.zero_suppression is not None:
            x = torch.where(x.abs() < self.zero_suppression, torch.zeros_like(x), x)
        shape = (1, -1) + (1,) * (x.ndim - 2)  # images (N, C, H, W) or scalars (N, S)
        x = x * self.channel_scale.view(shape)
        x = (x - self.centre.view(shape)) / self.scale.view(shape)
        if self.clip is not None:
            x = x.clamp(-self.clip, self.clip)
        return x

    def to_dict(self) -> dict[str, Any]:
        """The normalisation as data (what a C++ or ONNX consumer must apply)."""
        return {
            "mode": self.mode,
            "zero_suppression": self.zero_suppression,
            "channel_scale": self.channel_scale.tolist(),
            "centre": self.centre.tolist(),
            "scale": self.scale.tolist(),
            "clip": self.clip,
        }
