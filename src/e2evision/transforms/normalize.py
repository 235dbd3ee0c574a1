"""Per-channel normalisation with statistics from the training folds only.

Kept as a ``torch.nn.Module`` with buffers so that it runs on the accelerator inside the training
step, travels with the weights, and can be written out as the ``preprocess.json`` contract for
deployment. Statistics are global over the training split, not per batch, and the clip is
symmetric in normalised units, keeping negatives.

Detector energies span four orders of magnitude: on a linear scale a network sees the seed crystal
and little else. ``log1p`` (a signed ``log1p(|x| / s)`` per channel) and ``per_sample`` (divide a
channel by the sample's own total or maximum) are the transforms made for that, chosen per channel
because a time or impact-parameter channel is not an energy (docs/training.md has the measurements).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from e2evision.datasets.base import ChannelStats

MODES = ("zscore", "scale", "minmax", "none")
PER_SAMPLE = ("none", "sum", "max")


def per_channel(value: Any, n_channels: int, field: str, default: Any) -> list[Any]:
    """A per-channel setting as a list: one value for every channel, or a list of ``n_channels``."""
    if value is None:
        return [default] * n_channels
    if isinstance(value, (list, tuple)):
        if len(value) != n_channels:
            raise ValueError(
                f"preprocess.{field} has {len(value)} entries for {n_channels} channels "
                f"(give one per channel, or a single value for all)"
            )
        return list(value)
    return [value] * n_channels


class ChannelNormalizer(nn.Module):
    """``x → clip((log(ps(zs(x)·k)) − centre) / scale, ±clip)`` per channel.

    Steps, in order: ``zs`` zero suppression (``|x| < threshold → 0``, on raw values, as the E2E
    code does), ``k`` fixed per-channel scale factors (the E2E ones, e.g. HCAL × 25), ``ps`` the
    per-sample normalisation (``sum``: divide by the sample's total of the channel's positive
    values; ``max``: by its largest value; a channel with nothing positive is left as it is),
    ``log`` the signed ``sign(x)·log1p(|x|/s)`` where a scale ``s`` is set, then the affine map
    fitted on the training split, then a symmetric clip in normalised units.

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
        per_sample: str | list[str] | None = None,
        log1p: float | list[float | None] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown normalisation mode {mode!r}; choose one of {', '.join(MODES)}")
        if channel_scale is not None and len(channel_scale) != n_channels:
            raise ValueError(f"channel_scale has {len(channel_scale)} factors for {n_channels} channels")
        self.per_sample = [str(v) for v in per_channel(per_sample, n_channels, "per_sample", "none")]
        bad = [v for v in self.per_sample if v not in PER_SAMPLE]
        if bad:
            raise ValueError(f"preprocess.per_sample {bad[0]!r} is not one of {', '.join(PER_SAMPLE)}")
        logs = per_channel(log1p, n_channels, "log1p", None)
        if any(v is not None and not float(v) > 0 for v in logs):
            raise ValueError(f"preprocess.log1p scales must be positive or null, got {logs}")
        self.log1p: list[float | None] = [None if v is None else float(v) for v in logs]
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
        if x.ndim == 4 and any(m != "none" for m in self.per_sample):
            x = np.array(x, dtype=np.float32, copy=True)
            for c, m in enumerate(self.per_sample):
                if m != "none":
                    ch = x[:, c]
                    ref = np.clip(ch, 0, None).sum(axis=(1, 2)) if m == "sum" else ch.max(axis=(1, 2))
                    ref = np.where(ref > 0, ref, 1.0).astype(np.float32)
                    x[:, c] = ch / ref[:, None, None]
        if any(s is not None for s in self.log1p):
            x = np.array(x, dtype=np.float32, copy=True)
            for c, s in enumerate(self.log1p):
                if s is not None:
                    ch = x[:, c]
                    x[:, c] = np.sign(ch) * np.log1p(np.abs(ch) / np.float32(s))
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
        if x.ndim == 4:
            x = self._per_sample_and_log(x)
        x = (x - self.centre.view(shape)) / self.scale.view(shape)
        if self.clip is not None:
            x = x.clamp(-self.clip, self.clip)
        return x

    def _per_sample_and_log(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample normalisation and signed log1p of the channels that ask for them."""
        if any(m != "none" for m in self.per_sample):
            chans = []
            for c, m in enumerate(self.per_sample):
                ch = x[:, c]
                if m != "none":
                    ref = ch.clamp(min=0).sum(dim=(1, 2)) if m == "sum" else ch.amax(dim=(1, 2))
                    ch = ch / torch.where(ref > 0, ref, torch.ones_like(ref))[:, None, None]
                chans.append(ch)
            x = torch.stack(chans, dim=1)
        if any(s is not None for s in self.log1p):
            chans = []
            for c, s in enumerate(self.log1p):
                ch = x[:, c]
                chans.append(ch if s is None else torch.sign(ch) * torch.log1p(ch.abs() / s))
            x = torch.stack(chans, dim=1)
        return x

    @property
    def uses_log_or_per_sample(self) -> bool:
        return any(m != "none" for m in self.per_sample) or any(s is not None for s in self.log1p)

    def to_dict(self) -> dict[str, Any]:
        """The normalisation as data (what a C++ or ONNX consumer must apply)."""
        return {
            "mode": self.mode,
            "zero_suppression": self.zero_suppression,
            "channel_scale": self.channel_scale.tolist(),
            "per_sample": list(self.per_sample),
            "log1p": list(self.log1p),
            "centre": self.centre.tolist(),
            "scale": self.scale.tolist(),
            "clip": self.clip,
        }
