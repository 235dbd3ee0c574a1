"""Input handling shared by the lens transforms: validated (N, H, W) batches, per-image parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Batch:
    """A validated (N, H, W) float batch, and what is needed to hand results back in kind."""

    x: torch.Tensor
    numpy: bool
    channel: bool  # the input had a channel axis of 1

    def out(self, y: torch.Tensor) -> Array:
        """``y`` (N, H', W') back in the caller's kind and rank."""
        if self.channel:
            y = y.unsqueeze(1)
        return y.cpu().numpy() if self.numpy else y


def as_batch(images: Array, name: str = "images") -> Batch:
    """Check shape and values; NaN or infinite pixels are an error naming the sample."""
    is_numpy = isinstance(images, np.ndarray)
    if not is_numpy and not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(images).__name__}")
    shape = tuple(images.shape)
    channel = len(shape) == 4
    if not (len(shape) == 3 or (channel and shape[1] == 1)):
        hint = " (one image: pass image[None])" if len(shape) == 2 else ""
        raise ValueError(f"{name} must be (N, H, W) or (N, 1, H, W), got shape {shape}{hint}")
    if shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if shape[-1] < 3 or shape[-2] < 3:
        raise ValueError(f"{name} must be at least 3×3 pixels, got {shape[-2]}×{shape[-1]}")
    if is_numpy:
        if images.dtype.kind not in "fiu":
            raise ValueError(f"{name} must hold numbers, got dtype {images.dtype}")
        arr = images if images.dtype == np.float64 else images.astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        numeric = images.is_floating_point() or images.dtype in _INT_TYPES
        if images.dtype == torch.bool or not numeric:
            raise ValueError(f"{name} must hold numbers, got dtype {images.dtype}")
        x = images if images.dtype == torch.float64 else images.float()
    if channel:
        x = x[:, 0]
    bad = ~torch.isfinite(x).flatten(1).all(dim=1)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"{name} has NaN or infinite pixels in sample {first} ({int(bad.sum())} of {x.shape[0]} samples affected)"
        )
    return Batch(x, is_numpy, channel)


_INT_TYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def per_image(values: Array | float | None, n: int, name: str, like: torch.Tensor) -> torch.Tensor:
    """A per-image parameter as an (n,) float64 tensor on ``like``'s device (scalars broadcast)."""
    t = torch.as_tensor(
        np.asarray(values, dtype=np.float64) if not isinstance(values, torch.Tensor) else values,
        dtype=torch.float64,
        device=like.device,
    ).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} has {t.numel()} values for {n} images")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has NaN or infinite values")
    return t


def check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"crop size must be an integer >= 1, got {size!r}")
    return int(size)
