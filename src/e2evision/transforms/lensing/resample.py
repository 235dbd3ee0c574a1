"""Resampling: crops into the canonical frame and back, as functions and as a module."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from e2evision.datasets.batches import iter_batches
from e2evision.transforms.lensing.batch import Array, as_batch, check_size
from e2evision.transforms.lensing.frame import (
    FrameTensors,
    LensFrame,
    frame_from_tensors,
    frame_tensors,
)
from e2evision.transforms.lensing.light import CENTRE_METHODS, smooth_tensor, threshold_stats

if TYPE_CHECKING:
    from e2evision.datasets.base import ImageDataset

PAD_MODES = ("background", "zeros", "edge")


def _check_frame(frame: LensFrame, n: int, shape: tuple[int, int]) -> None:
    if len(frame) != n:
        raise ValueError(f"the frame describes {len(frame)} images, the batch has {n}")
    if tuple(frame.image_shape) != tuple(shape):
        raise ValueError(
            f"the frame was made for {frame.image_shape[0]}×{frame.image_shape[1]} images, got {shape[0]}×{shape[1]}"
        )


def _check_pad(pad: str) -> None:
    if pad not in PAD_MODES:
        raise ValueError(f"unknown padding {pad!r}; choose one of {', '.join(PAD_MODES)}")


def _fill(x: torch.Tensor, background: torch.Tensor, pad: str) -> torch.Tensor | None:
    """Per-image padding values (N,) in ``x``'s dtype, or None for ``pad="edge"``."""
    _check_pad(pad)
    if pad == "edge":
        return None
    if pad == "zeros":
        return torch.zeros_like(background, dtype=x.dtype)
    return background.to(x.dtype)


def _frame_as_tensors(frame: LensFrame, dev: torch.device) -> tuple[torch.Tensor, ...]:
    """(centre_x, centre_y, angle, background) of a stored frame as (N,) float64 tensors."""
    f64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=dev)  # noqa: E731
    return f64(frame.centre_x), f64(frame.centre_y), f64(frame.angle), f64(frame.background)


def _slice_crop(
    x: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, size: int, fill: torch.Tensor | None
) -> torch.Tensor:
    """Exact integer crop of every image (two gathers), padded with ``fill`` or the edge.

    The crop's corner is ``round(centre − (size−1)/2)`` (``torch.round``: half to even, as
    ``np.round``); shapes depend on ``size`` and the image's shape only.
    """
    h, w = x.shape[-2:]
    half = (size - 1) / 2
    top = torch.round(cy - half).long()
    left = torch.round(cx - half).long()
    ar = torch.arange(size, device=x.device)
    rows = top.unsqueeze(-1) + ar  # (N, S)
    cols = left.unsqueeze(-1) + ar
    rc = rows.clamp(0, h - 1)
    cc = cols.clamp(0, w - 1)
    out = torch.gather(x, 1, rc.unsqueeze(-1).expand(-1, -1, w))  # (N, S, W)
    out = torch.gather(out, 2, cc.unsqueeze(1).expand(-1, size, -1))  # (N, S, S)
    if fill is not None:
        inside = ((rows >= 0) & (rows < h)).unsqueeze(-1) & ((cols >= 0) & (cols < w)).unsqueeze(1)
        out = torch.where(inside, out, fill.view(-1, 1, 1))
    return out


def _sample(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Bilinear samples of (N, H, W) at pixel coordinates px, py (N, h, w)."""
    h, w = x.shape[-2:]
    gx = 2 * px / max(w - 1, 1) - 1
    gy = 2 * py / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return F.grid_sample(x.unsqueeze(1), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)[:, 0]


def _rotated_crop(
    x: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, angle: torch.Tensor, size: int, fill: torch.Tensor | None
) -> torch.Tensor:
    """Bilinear crop of every image turned by ``angle`` about its centre (one ``grid_sample``)."""
    ar = torch.arange(size, dtype=torch.float64, device=x.device) - (size - 1) / 2
    u = ar.view(1, 1, size)
    v = ar.view(1, size, 1)
    cx, cy, angle = (t.to(torch.float64).view(-1, 1, 1) for t in (cx, cy, angle))
    c, sn = torch.cos(angle), torch.sin(angle)
    px = cx + c * u - sn * v
    py = cy + sn * u + c * v
    if fill is None:
        return _sample(x, px, py, "border")
    f = fill.view(-1, 1, 1)
    return _sample(x - f, px, py, "zeros") + f


def _on_grid(cx: torch.Tensor, cy: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    """0-d bool: no image is rotated and every crop corner is on the pixel grid (a slice will do).

    Decided for the whole batch, as :attr:`LensFrame.is_integer_crop` does.
    """
    half = (size - 1) / 2
    return (
        (angle == 0).all() & (cx - half == torch.round(cx - half)).all() & (cy - half == torch.round(cy - half)).all()
    )


def _crop(
    x: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    angle: torch.Tensor,
    size: int,
    fill: torch.Tensor | None,
    rotate: bool = True,
) -> torch.Tensor:
    """The canonical crops of (N, H, W): an exact slice where the frame allows, else bilinear.

    With ``rotate=False`` the frame is snapped to the grid by construction, so only the slice is
    made. Otherwise both are made and ``torch.where`` picks one, rather than a Python ``if`` on
    tensor values that a traced graph would freeze at the example's outcome.
    """
    sliced = _slice_crop(x, cx, cy, size, fill)
    if not rotate:
        return sliced
    return torch.where(_on_grid(cx, cy, angle, size), sliced, _rotated_crop(x, cx, cy, angle, size, fill))


def to_canonical(images: Array, frame: LensFrame, *, pad: str = "background") -> Array:
    """Crop (and rotate) every image into its canonical ``size × size`` frame."""
    b = as_batch(images)
    _check_frame(frame, b.x.shape[0], tuple(b.x.shape[-2:]))
    cx, cy, angle, bg = _frame_as_tensors(frame, b.x.device)
    fill = _fill(b.x, bg, pad)
    if frame.is_integer_crop:
        return b.out(_slice_crop(b.x, cx, cy, frame.size, fill))
    return b.out(_rotated_crop(b.x, cx, cy, angle, frame.size, fill))


def from_canonical(crops: Array, frame: LensFrame, *, fill: float = 0.0) -> Array:
    """Map canonical crops back onto the input pixel grid (the inverse, e.g. for overlays).

    Input pixels that the crop does not fully cover get ``fill`` (``float("nan")`` marks them).
    Rotated crops are resampled bilinearly (a second interpolation); integer crops go back exactly.
    """
    b = as_batch(crops, "crops")
    n, s = b.x.shape[0], frame.size
    if tuple(b.x.shape[-2:]) != (s, s):
        raise ValueError(f"crops are {b.x.shape[-2]}×{b.x.shape[-1]}, the frame says {s}×{s}")
    if len(frame) != n:
        raise ValueError(f"the frame describes {len(frame)} images, the batch has {n}")
    h, w = frame.image_shape
    dev = b.x.device
    y = torch.arange(h, dtype=torch.float64, device=dev).view(1, h, 1)
    x = torch.arange(w, dtype=torch.float64, device=dev).view(1, 1, w)
    u, v = _to_canonical_coords(x, y, frame, dev)
    half = (s - 1) / 2
    pu, pv = u + half, v + half
    out = _sample(b.x, pu, pv, "zeros")
    tol = 1e-6
    covered = (pu >= -tol) & (pu <= s - 1 + tol) & (pv >= -tol) & (pv <= s - 1 + tol)
    out = torch.where(covered, out, torch.full_like(out, fill))
    return b.out(out)


def _to_canonical_coords(
    x: torch.Tensor, y: torch.Tensor, frame: LensFrame, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(frame)
    f64 = lambda a: torch.as_tensor(a, dtype=torch.float64, device=dev).view(n, 1, 1)  # noqa: E731
    dx = x - f64(frame.centre_x)
    dy = y - f64(frame.centre_y)
    c, sn = torch.cos(f64(frame.angle)), torch.sin(f64(frame.angle))
    return c * dx + sn * dy, -sn * dx + c * dy


def image_to_canonical(x: np.ndarray, y: np.ndarray, frame: LensFrame) -> tuple[np.ndarray, np.ndarray]:
    """Input pixel coordinates (x = column, y = row) → crop coordinates (column, row).

    ``x`` and ``y`` are (N,) or (N, K): one row of points per image.
    """
    x64, y64 = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    shape = np.broadcast(x64, y64).shape
    if not shape or shape[0] != len(frame):
        raise ValueError(f"points must be (N,) or (N, K) with N = {len(frame)}, got {shape}")
    cx, cy, a = (np.reshape(v, (-1,) + (1,) * (len(shape) - 1)) for v in (frame.centre_x, frame.centre_y, frame.angle))
    dx, dy = x64 - cx, y64 - cy
    half = (frame.size - 1) / 2
    return np.cos(a) * dx + np.sin(a) * dy + half, -np.sin(a) * dx + np.cos(a) * dy + half


def canonical_to_image(u: np.ndarray, v: np.ndarray, frame: LensFrame) -> tuple[np.ndarray, np.ndarray]:
    """Crop coordinates (column, row) → input pixel coordinates (x, y): the inverse map."""
    u64, v64 = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    shape = np.broadcast(u64, v64).shape
    if not shape or shape[0] != len(frame):
        raise ValueError(f"points must be (N,) or (N, K) with N = {len(frame)}, got {shape}")
    cx, cy, a = (np.reshape(p, (-1,) + (1,) * (len(shape) - 1)) for p in (frame.centre_x, frame.centre_y, frame.angle))
    half = (frame.size - 1) / 2
    du, dv = u64 - half, v64 - half
    return cx + np.cos(a) * du - np.sin(a) * dv, cy + np.sin(a) * du + np.cos(a) * dv


def _canonical(
    x: torch.Tensor,
    size: int,
    rotate: bool,
    method: str,
    pad: str,
    smooth_sigma: float,
    nsigma: float,
    fraction: float,
    dense: bool = False,
) -> tuple[torch.Tensor, FrameTensors]:
    """Crops (N, S, S) and frame tensors of (N, H, W): the path shared by every entry point."""
    _check_pad(pad)
    ft = frame_tensors(x, size, rotate, method, smooth_sigma, nsigma, fraction, dense)
    crop = _crop(x, ft.centre_x, ft.centre_y, ft.angle, size, _fill(x, ft.background, pad), rotate)
    return crop, ft


def canonicalize(
    images: Array,
    size: int,
    *,
    rotate: bool = True,
    method: str = "auto",
    pad: str = "background",
    smooth_sigma: float = 1.0,
    nsigma: float = 3.0,
    fraction: float = 0.1,
) -> tuple[Array, LensFrame]:
    """Detect, crop and (with ``rotate``) rotate every image: ``(crops, frame)``.

    ``from_canonical(crops, frame)`` and :func:`canonical_to_image` undo it for plots.
    """
    b = as_batch(images)
    size = check_size(size)
    crop, ft = _canonical(b.x, size, rotate, method, pad, float(smooth_sigma), float(nsigma), float(fraction))
    frame = frame_from_tensors(
        ft.centre_x,
        ft.centre_y,
        ft.angle,
        size,
        (b.x.shape[-2], b.x.shape[-1]),
        ft.background,
        ft.radius,
        ft.elongation,
    )
    return b.out(crop), frame


def _capturing() -> bool:
    """Whether a graph is being traced or exported (value checks would be frozen or refused)."""
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


class LensCanonicalize(nn.Module):
    """ROI crop (and rotation to the canonical axis) as a module: (N, 1, H, W) → (N, 1, S, S).

    Deterministic and parameter-free, so it runs the same in training and evaluation, on the
    batch's device, before or inside a model. ``forward`` is tensor-only: while a graph is
    captured (``torch.jit.trace``, ``torch.export``/AOTInductor, ONNX) it skips the value checks
    and uses the dense pixel layout, so no shape depends on the data and the graph holds for any
    batch size; eagerly it checks its input and packs the lit pixels (faster on a CPU). Both give
    the same crops. ``forward_with_frame`` also returns the :class:`LensFrame` a plot needs to
    map results back.
    """

    def __init__(
        self,
        size: int,
        *,
        rotate: bool = True,
        method: str = "auto",
        pad: str = "background",
        smooth_sigma: float = 1.0,
        nsigma: float = 3.0,
        fraction: float = 0.1,
    ) -> None:
        super().__init__()
        if method not in CENTRE_METHODS:
            raise ValueError(f"unknown centre method {method!r}; choose one of {', '.join(CENTRE_METHODS)}")
        _check_pad(pad)
        self.size = check_size(size)
        self.rotate = bool(rotate)
        self.method = method
        self.pad = pad
        self.smooth_sigma = float(smooth_sigma)
        self.nsigma = float(nsigma)
        self.fraction = float(fraction)
        # the checks of threshold_stats and smooth_tensor, made once here rather than on every call
        smooth_tensor(torch.zeros(1, 3, 3), self.smooth_sigma)
        threshold_stats(torch.zeros(1, 3, 3), self.nsigma, self.fraction)

    def forward_with_frame(self, x: Array) -> tuple[Array, LensFrame]:
        return canonicalize(
            x,
            self.size,
            rotate=self.rotate,
            method=self.method,
            pad=self.pad,
            smooth_sigma=self.smooth_sigma,
            nsigma=self.nsigma,
            fraction=self.fraction,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical crops of (N, 1, H, W) or (N, H, W), in the same rank (float64 stays)."""
        if not isinstance(x, torch.Tensor):  # NumPy in, NumPy out, as canonicalize
            return self.forward_with_frame(x)[0]  # type: ignore[return-value]
        capturing = _capturing()
        if capturing:  # the dense layout, and no checks that read values
            channel = x.dim() == 4
            images = x[:, 0] if channel else x
            images = images if images.dtype == torch.float64 else images.float()
        else:
            b = as_batch(x)
            images, channel = b.x, b.channel
        with warnings.catch_warnings():
            if torch.jit.is_tracing():
                # The tracer hands out H and W as tensors; a few static-size expressions
                # (max(H, W), max(W − 1, 1)) become constants, as they should: a traced graph is
                # for one image size. Only the batch axis stays dynamic.
                warnings.filterwarnings(
                    "ignore", category=torch.jit.TracerWarning, message="Converting a tensor to a Python"
                )
            crop, _ = _canonical(
                images,
                self.size,
                self.rotate,
                self.method,
                self.pad,
                self.smooth_sigma,
                self.nsigma,
                self.fraction,
                dense=capturing,
            )
        return crop.unsqueeze(1) if channel else crop

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, rotate={self.rotate}, method={self.method!r}, "
            f"pad={self.pad!r}, "
            f"smooth_sigma={self.smooth_sigma}, nsigma={self.nsigma}, fraction={self.fraction}"
        )


# ------------------------------------------------------------------------------------------------
# whole readers


def canonicalize_dataset(
    dataset: ImageDataset,
    size: int,
    *,
    indices: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 256,
    **kwargs: object,
) -> tuple[np.ndarray, np.ndarray, LensFrame]:
    """Canonical crops ``(N, 1, size, size)``, labels and frames of a reader (a DeepLense folder).

    ``kwargs`` go to :func:`canonicalize` (``rotate``, ``method``, ``pad``, ...).
    """
    crops, labels, frames = [], [], []
    for _, images, lab in iter_batches(dataset, indices, batch_size):
        c, f = canonicalize(images, size, **kwargs)  # type: ignore[arg-type]
        crops.append(c)
        labels.append(lab)
        frames.append(f)
    if not crops:
        raise ValueError("no samples selected")
    cat = lambda name: np.concatenate([getattr(f, name) for f in frames])  # noqa: E731
    frame = LensFrame(
        cat("centre_x"),
        cat("centre_y"),
        cat("angle"),
        frames[0].size,
        frames[0].image_shape,
        cat("background"),
        cat("radius"),
        cat("elongation"),
    )
    return np.concatenate(crops), np.concatenate(labels), frame
