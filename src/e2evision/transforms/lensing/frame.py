"""The frame: what maps input pixels to canonical crop pixels, and how it is detected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from e2evision.transforms.lensing.batch import Array, as_batch, check_size, per_image
from e2evision.transforms.lensing.light import (
    canonical_angle,
    light_weights,
    pack_light,
    roi_centre,
    smooth_tensor,
    threshold_stats,
)


@dataclass(frozen=True)
class LensFrame:
    """Where each canonical crop came from: enough to map pixels and points both ways.

    Crop pixel ``(a, b)`` (row, column) shows the input at
    ``(x, y) = (centre_x, centre_y) + R(angle) · (b − (size−1)/2, a − (size−1)/2)``.
    All arrays are (N,) float64.
    """

    centre_x: np.ndarray
    """Column coordinate of the crop centre in input pixels."""
    centre_y: np.ndarray
    """Row coordinate of the crop centre in input pixels."""
    angle: np.ndarray
    """Radians, counter-clockwise from +x (``origin="lower"``): this input direction becomes +x."""
    size: int
    """The crop is ``size × size`` pixels."""
    image_shape: tuple[int, int]
    """(H, W) of the input images."""
    background: np.ndarray
    """Background level of each input (median of the smoothed image): the default padding value."""
    radius: np.ndarray
    """Radius of the fitted circle in pixels (NaN for centroid centres or failed fits)."""
    elongation: np.ndarray
    """1 − λ_min/λ_max of the second moments: near 0 the angle is set by noise, not by the light."""

    def __len__(self) -> int:
        return int(self.centre_x.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> LensFrame:
        """The frames of a subset of images (e.g. the ones a plot shows)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        pick = lambda a: np.asarray(a)[idx]  # noqa: E731
        return LensFrame(
            pick(self.centre_x),
            pick(self.centre_y),
            pick(self.angle),
            self.size,
            self.image_shape,
            pick(self.background),
            pick(self.radius),
            pick(self.elongation),
        )

    @property
    def is_integer_crop(self) -> bool:
        """No rotation and crop corners on the pixel grid: the crop is an exact slice."""
        half = (self.size - 1) / 2
        return bool(
            np.all(self.angle == 0)
            and np.all(self.centre_x - half == np.round(self.centre_x - half))
            and np.all(self.centre_y - half == np.round(self.centre_y - half))
        )


def frame_from_tensors(
    cx: torch.Tensor,
    cy: torch.Tensor,
    angle: torch.Tensor,
    size: int,
    shape: tuple[int, int],
    bg: torch.Tensor,
    radius: torch.Tensor,
    elong: torch.Tensor,
) -> LensFrame:
    np64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return LensFrame(np64(cx), np64(cy), np64(angle), size, shape, np64(bg), np64(radius), np64(elong))


@dataclass(frozen=True)
class RoiResult:
    """Centres from :func:`detect_roi`, plus the statistics behind them (all (N,) float64)."""

    centre_x: np.ndarray
    centre_y: np.ndarray
    radius: np.ndarray
    """Fitted circle radius in pixels (NaN with ``method="centroid"`` or a failed fit)."""
    background: np.ndarray
    threshold: np.ndarray


def detect_roi(
    images: Array, *, method: str = "auto", smooth_sigma: float = 1.0, nsigma: float = 3.0, fraction: float = 0.1
) -> RoiResult:
    """Centre of the bright (lensed) light of every image: circle fit or centroid of ``w``.

    See the module docstring for the threshold and weights; ``fraction`` is the share of the
    peak above the background that a pixel must exceed, ``nsigma`` the noise multiple.
    """
    b = as_batch(images)
    s = smooth_tensor(b.x, float(smooth_sigma))
    bg, _, _, thr = threshold_stats(s, float(nsigma), float(fraction))
    cx, cy, radius = roi_centre(pack_light(s - thr[:, None, None]), method)
    np64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return RoiResult(np64(cx), np64(cy), np64(radius), np64(bg), np64(thr))


def principal_angle(
    images: Array,
    centre_x: Array | float | None = None,
    centre_y: Array | float | None = None,
    *,
    method: str = "auto",
    smooth_sigma: float = 1.0,
    nsigma: float = 3.0,
    fraction: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical angle (radians in (−π, π]) and elongation of each image's bright light.

    The moments are taken about the given centre, or about the detected ROI centre. The angle is
    that of the major axis of the second moments, turned by π when the third moment along it is
    negative, so the side with more (or more distant) light defines +x.
    """
    b = as_batch(images)
    w, _ = light_weights(b.x, float(smooth_sigma), float(nsigma), float(fraction))
    if centre_x is None or centre_y is None:
        cx, cy, _ = roi_centre(w, method)
    else:
        cx = per_image(centre_x, b.x.shape[0], "centre_x", b.x)
        cy = per_image(centre_y, b.x.shape[0], "centre_y", b.x)
    theta, elong = canonical_angle(w, cx, cy)
    return theta.cpu().numpy(), elong.cpu().numpy()


class FrameTensors(NamedTuple):
    """The tensor form of a :class:`LensFrame` (all (N,) float64, on the batch's device)."""

    centre_x: torch.Tensor
    centre_y: torch.Tensor
    angle: torch.Tensor
    background: torch.Tensor
    radius: torch.Tensor
    elongation: torch.Tensor


def frame_tensors(
    x: torch.Tensor,
    size: int,
    rotate: bool,
    method: str,
    smooth_sigma: float,
    nsigma: float,
    fraction: float,
    dense: bool = False,
) -> FrameTensors:
    """Centre, angle and statistics of every image of (N, H, W), as tensors.

    The one implementation behind :func:`lens_frame`, :func:`canonicalize` and
    :class:`LensCanonicalize`: no NumPy, ``.item()`` or branches on values. With ``dense`` the
    pixels are not packed either, so no shape depends on the data and a graph captured from it
    (TorchScript tracing, ``torch.export``) holds for any batch size.
    """
    w, bg = light_weights(x, smooth_sigma, nsigma, fraction, dense)
    cx, cy, radius = roi_centre(w, method)
    theta, elong = canonical_angle(w, cx, cy)
    if not rotate:
        theta = torch.zeros_like(cx)
        half = (size - 1) / 2  # snap to the grid: the crop is then an exact slice
        cx = torch.floor(cx - half + 0.5) + half
        cy = torch.floor(cy - half + 0.5) + half
    return FrameTensors(cx, cy, theta, bg, radius, elong)


def _lens_frame(
    x: torch.Tensor, size: int, rotate: bool, method: str, smooth_sigma: float, nsigma: float, fraction: float
) -> LensFrame:
    ft = frame_tensors(x, size, rotate, method, smooth_sigma, nsigma, fraction)
    return frame_from_tensors(
        ft.centre_x, ft.centre_y, ft.angle, size, (x.shape[-2], x.shape[-1]), ft.background, ft.radius, ft.elongation
    )


def lens_frame(
    images: Array,
    size: int,
    *,
    rotate: bool = True,
    method: str = "auto",
    smooth_sigma: float = 1.0,
    nsigma: float = 3.0,
    fraction: float = 0.1,
) -> LensFrame:
    """Detect each image's ROI centre (and canonical angle, with ``rotate``) for a ``size`` crop.

    Without rotation the centre is snapped so that the crop is an exact slice of the input.
    """
    b = as_batch(images)
    return _lens_frame(b.x, check_size(size), rotate, method, float(smooth_sigma), float(nsigma), float(fraction))
