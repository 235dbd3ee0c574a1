"""Lens preprocessing: find the lensed light, crop a square around it, turn it to a canonical axis.

Strong-lensing images have no preferred position or orientation on the sky, so a model given raw
images must learn those symmetries from data; these transforms remove them. Definitions, formulas
and defaults are in ``docs/lensing.md``; in short:

1. **Light above the background.** Smooth with a Gaussian of ``smooth_sigma`` pixels; take the
   background and its noise from the whole smoothed image ``S`` (median and 1.4826 × MAD: robust
   while the lensed light covers under half the pixels); weight every pixel by its light above
   ``t = background + max(nsigma · noise, fraction · (max S − background))``, ``w = max(S − t, 0)``,
   so that pixels at the noise level carry almost no weight.
2. **Region of interest.** ``method="auto"`` (default) fits a circle to ``w`` (algebraic fit, then
   Gauss–Newton on the geometric distance, ignoring pixels far from the circle) and keeps it when
   the light is ring-like; otherwise it uses the weighted centroid. For a lens the circle's centre
   is where the ring is centred (for an isothermal lens: the lens centre shifted by the source
   offset), where a centroid is pulled towards the brightest image. ``"circle"`` and
   ``"centroid"`` force one or the other. Nothing above ``t``: the image centre.
3. **Canonical orientation.** ``φ`` is the direction of the major principal axis of the second
   moments of ``w`` about the ROI centre; of the two directions along the axis it is the one along
   which the third moment ``Σ w t³`` (``t`` the coordinate along the axis) is ≥ 0. For a ring with
   one bright arc that arc ends up on +x.
4. **Resampling.** Crop pixel ``(a, b)`` of an ``S × S`` crop shows the input at
   ``centre + R(φ)·(b − (S−1)/2, a − (S−1)/2)``: one bilinear ``grid_sample`` for the whole batch.
   Without rotation the centre is snapped to the pixel grid and the crop is an exact slice. Outside
   the input the crop is padded with the image's background level (``pad="background"``), zeros or
   the nearest edge pixel. :func:`from_canonical`, :func:`image_to_canonical` and
   :func:`canonical_to_image` map pixels and points back.

Coordinates: ``x`` is the column index (axis −1), ``y`` the row index (axis −2), pixel centres at
integers; angles are counter-clockwise from +x in a plot drawn with ``origin="lower"`` (the
simulator's and DeepLense's convention). Functions take ``(N, H, W)`` or ``(N, 1, H, W)`` NumPy
arrays or torch tensors and return the same kind and rank (float64 stays float64, everything else
becomes float32); the work runs vectorised over the batch in torch, on the tensor's device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from e2evision.datasets.base import ImageDataset

__all__ = [
    "CENTRE_METHODS",
    "PAD_MODES",
    "LensCanonicalize",
    "LensFrame",
    "LightStats",
    "RoiResult",
    "canonical_to_image",
    "canonicalize",
    "canonicalize_dataset",
    "detect_roi",
    "from_canonical",
    "image_to_canonical",
    "iter_batches",
    "lens_frame",
    "light_statistics",
    "principal_angle",
    "smooth",
    "to_canonical",
]

Array = Union[np.ndarray, torch.Tensor]
CENTRE_METHODS = ("auto", "circle", "centroid")
PAD_MODES = ("background", "zeros", "edge")
_MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD -> Gaussian sigma


# ------------------------------------------------------------------------------------------------
# input handling


@dataclass(frozen=True)
class _Batch:
    """A validated (N, H, W) float batch, and what is needed to hand results back in kind."""

    x: torch.Tensor
    numpy: bool
    channel: bool  # the input had a channel axis of 1

    def out(self, y: torch.Tensor) -> Array:
        """``y`` (N, H', W') back in the caller's kind and rank."""
        if self.channel:
            y = y.unsqueeze(1)
        return y.cpu().numpy() if self.numpy else y


def _batch(images: Array, name: str = "images") -> _Batch:
    """Check shape and values; NaN or infinite pixels are an error naming the sample."""
    is_numpy = isinstance(images, np.ndarray)
    if not is_numpy and not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, "
                        f"got {type(images).__name__}")
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
        raise ValueError(f"{name} has NaN or infinite pixels in sample {first} "
                         f"({int(bad.sum())} of {x.shape[0]} samples affected)")
    return _Batch(x, is_numpy, channel)


_INT_TYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _per_image(values: Array | float | None, n: int, name: str, like: torch.Tensor) -> torch.Tensor:
    """A per-image parameter as an (n,) float64 tensor on ``like``'s device (scalars broadcast)."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float64) if not isinstance(values, torch.Tensor)
                        else values, dtype=torch.float64, device=like.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} has {t.numel()} values for {n} images")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has NaN or infinite values")
    return t


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"crop size must be an integer >= 1, got {size!r}")
    return int(size)


# ------------------------------------------------------------------------------------------------
# statistics


def _blur_matrix(n: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) matrix of a 1-D Gaussian blur (cut at 4σ) with edge pixels replicated outwards."""
    radius = max(1, int(math.ceil(4.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    cols = (torch.arange(n)[:, None] + torch.arange(-radius, radius + 1)[None, :]).clamp(0, n - 1)
    rows = torch.arange(n)[:, None].expand_as(cols)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((rows, cols), k.expand_as(cols).clone(), accumulate=True)  # folds the edge in
    return m.to(dtype=dtype, device=device)


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, H, W), kernel cut at 4 sigma, edges replicated.

    Written as ``B_H · x · B_Wᵀ`` with banded blur matrices: one batched matrix product per axis,
    faster than a single-channel convolution on CPU and exact with the replicated edge.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"smooth_sigma must be a finite number >= 0, got {sigma}")
    if sigma == 0:
        return x
    h, w = x.shape[-2:]
    rows = _blur_matrix(h, sigma, x.dtype, x.device)
    cols = _blur_matrix(w, sigma, x.dtype, x.device)
    return rows @ x @ cols.T


def smooth(images: Array, sigma: float = 1.0) -> Array:
    """Gaussian blur of every image (σ in pixels, kernel cut at 4σ, edges replicated)."""
    b = _batch(images)
    return b.out(_smooth(b.x, float(sigma)))


@dataclass(frozen=True)
class LightStats:
    """Per-image background, noise and threshold of a smoothed batch (all (N,) float64 NumPy)."""

    background: np.ndarray
    """Median of the smoothed image."""
    noise: np.ndarray
    """1.4826 × median absolute deviation from it (the Gaussian σ of the smoothed background)."""
    peak: np.ndarray
    """Maximum of the smoothed image."""
    threshold: np.ndarray
    """``background + max(nsigma · noise, fraction · (peak − background))``."""


def _median(t: torch.Tensor) -> torch.Tensor:
    """torch's median of each row of (N, P): the lower middle value for an even P.

    ONNX has no median, so while exporting to ONNX the same element is taken with ``topk``
    (which maps to ONNX TopK; about 3× slower than ``median`` on a CPU, hence not always).
    """
    if torch.onnx.is_in_onnx_export():
        k = (t.shape[-1] - 1) // 2 + 1
        return torch.topk(t, k, dim=-1, largest=False).values[..., -1]
    return t.median(dim=-1).values


def _stats(s: torch.Tensor, nsigma: float, fraction: float) -> tuple[torch.Tensor, ...]:
    """(background, noise, peak, threshold) of smoothed (N, H, W), each (N,) in s's dtype."""
    if not (math.isfinite(nsigma) and nsigma >= 0):
        raise ValueError(f"nsigma must be a finite number >= 0, got {nsigma}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"threshold fraction must be in [0, 1], got {fraction}")
    flat = s.flatten(1)
    bg = _median(flat)
    noise = _MAD_TO_SIGMA * _median((flat - bg[:, None]).abs())
    peak = flat.max(dim=1).values
    thr = bg + torch.maximum(nsigma * noise, fraction * (peak - bg))
    return bg, noise, peak, thr


def light_statistics(images: Array, *, smooth_sigma: float = 1.0, nsigma: float = 3.0,
                     fraction: float = 0.1) -> LightStats:
    """Background, noise, peak and the bright-light threshold of each image, after smoothing.

    The median is torch's (the lower middle value for an even pixel count).
    """
    b = _batch(images)
    vals = _stats(_smooth(b.x, float(smooth_sigma)), float(nsigma), float(fraction))
    return LightStats(*(v.double().cpu().numpy() for v in vals))


class _Light:
    """The weighted pixels of a batch, and per-image sums over them.

    Two layouts share this interface, so that the fits below are written once:
    :class:`_PackedLight` (eager) and :class:`_DenseLight` (traced or exported graphs).
    """

    x: torch.Tensor
    """Column index of every pixel (float64)."""
    y: torch.Tensor
    """Row index of every pixel (float64)."""
    w: torch.Tensor
    """Weight of every pixel (float64)."""
    h: int
    width: int

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Per-image sums (N,) of per-pixel ``values`` (0 for an image without pixels)."""
        raise NotImplementedError

    def at(self, per_image: torch.Tensor) -> torch.Tensor:
        """Per-image values (N,) broadcast to the pixels."""
        raise NotImplementedError


@dataclass(frozen=True)
class _PackedLight(_Light):
    """Only the pixels with positive weight: (M,) image index, x, y and weight.

    The bright light of a lens covers a tenth of the image or less, so fits and moments over the
    packed pixels (``torch.segment_reduce`` sums) cost a fraction of dense (N, H, W) passes
    (5–10× less on a CPU). M depends on the values, so this layout cannot be captured in a graph.
    """

    img: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    lengths: torch.Tensor
    """Pixels per image (N,): the packed pixels are sorted by image."""
    h: int
    width: int

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        return torch.segment_reduce(values, "sum", lengths=self.lengths)

    def at(self, per_image: torch.Tensor) -> torch.Tensor:
        return per_image[self.img]


@dataclass(frozen=True)
class _DenseLight(_Light):
    """Every pixel: ``w`` (N, P) over the P = H·W pixels, 0 below the threshold; x, y (1, P).

    Every shape follows from the input's shape, so the same fits run inside a graph captured by
    ``torch.jit.trace`` or ``torch.export`` with a dynamic batch. Zero-weight pixels add nothing
    to the sums: the results equal the packed layout's up to the order of float additions.
    """

    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    h: int
    width: int

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        return values.sum(dim=-1)

    def at(self, per_image: torch.Tensor) -> torch.Tensor:
        return per_image.unsqueeze(-1)


def _pack(w: torch.Tensor, dense: bool = False) -> _Light:
    """The light of thresholded images ``w`` (N, H, W): its positive part, packed or dense."""
    n, h, wd = w.shape
    if dense:
        cols = torch.arange(wd, dtype=torch.float64, device=w.device)
        rows = torch.arange(h, dtype=torch.float64, device=w.device)
        x = cols.view(1, wd).expand(h, wd).reshape(1, h * wd)
        y = rows.view(h, 1).expand(h, wd).reshape(1, h * wd)
        return _DenseLight(x, y, w.clamp(min=0).flatten(1).double(), h, wd)
    img, row, col = torch.nonzero(w > 0, as_tuple=True)  # sorted by image, then row, column
    lengths = torch.bincount(img, minlength=n)
    return _PackedLight(img, col.double(), row.double(), w[img, row, col].double(), lengths, h, wd)


def _weights(x: torch.Tensor, smooth_sigma: float, nsigma: float, fraction: float,
             dense: bool = False) -> tuple[_Light, torch.Tensor]:
    """Light above the threshold, ``max(S − thr, 0)``; and the background (N,) float64."""
    s = _smooth(x, smooth_sigma)
    bg, _, _, thr = _stats(s, nsigma, fraction)
    return _pack(s - thr[:, None, None], dense), bg.double()


def _centroid(L: _Light) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted centroid (cx, cy) and whether any weight is positive; image centre if none."""
    total = L.sum(L.w)
    ok = total > 0
    safe = torch.where(ok, total, torch.ones_like(total))
    cx = torch.where(ok, L.sum(L.w * L.x) / safe, torch.full_like(total, (L.width - 1) / 2))
    cy = torch.where(ok, L.sum(L.w * L.y) / safe, torch.full_like(total, (L.h - 1) / 2))
    return cx, cy, ok


def _det3(a: torch.Tensor) -> torch.Tensor:
    """Determinants of (N, 3, 3); written out while exporting to ONNX (no float64 Det in ONNX
    Runtime), LAPACK's otherwise."""
    if not torch.onnx.is_in_onnx_export():
        return torch.linalg.det(a)
    r0, r1, r2 = a.unbind(-2)
    cross = torch.stack([r1[..., 1] * r2[..., 2] - r1[..., 2] * r2[..., 1],
                         r1[..., 2] * r2[..., 0] - r1[..., 0] * r2[..., 2],
                         r1[..., 0] * r2[..., 1] - r1[..., 1] * r2[..., 0]], -1)
    return (r0 * cross).sum(-1)


def _solve3(a: torch.Tensor, rhs: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Batched 3×3 solves; rows where ``ok`` is False get zeros (their systems are singular)."""
    eye = torch.eye(3, dtype=a.dtype, device=a.device)
    a = torch.where(ok.view(-1, 1, 1), a, eye)
    if torch.onnx.is_in_onnx_export():  # ONNX has no linear solve: Cramer's rule, same system
        cols = a.unbind(-1)
        sol = torch.stack([_det3(torch.stack(cols[:i] + (rhs,) + cols[i + 1:], -1))
                           for i in range(3)], -1) / _det3(a).unsqueeze(-1)
    else:
        sol = torch.linalg.solve(a, rhs.unsqueeze(-1))[..., 0]
    return torch.where(ok.view(-1, 1), sol, torch.zeros_like(sol))


def _sym3(s11: torch.Tensor, s12: torch.Tensor, s13: torch.Tensor, s22: torch.Tensor,
          s23: torch.Tensor, s33: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.stack([s11, s12, s13], -1), torch.stack([s12, s22, s23], -1),
                        torch.stack([s13, s23, s33], -1)], -2)


def _kasa(L: _Light, cx0: torch.Tensor, cy0: torch.Tensor, scale: float
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One weighted algebraic circle fit about (cx0, cy0): centre, radius², and whether solvable.

    Minimises ``Σ w (x² + y² + D x + E y + F)²``, linear in D, E, F: centre ``(−D/2, −E/2)``,
    radius² ``D²/4 + E²/4 − F``. Coordinates about (cx0, cy0), divided by the image size, keep the
    normal equations well conditioned.
    """
    u = (L.x - L.at(cx0)) / scale
    v = (L.y - L.at(cy0)) / scale
    wn = L.w / L.at(L.sum(L.w).clamp(min=1e-300))
    z = u * u + v * v
    m = lambda t: L.sum(wn * t)  # noqa: E731 - weighted mean per image
    su, sv = m(u), m(v)
    a = _sym3(m(u * u), m(u * v), su, m(v * v), sv, torch.ones_like(su))
    ok = _det3(a).abs() > 1e-12
    d, e, f = _solve3(a, -torch.stack([m(u * z), m(v * z), m(z)], -1), ok).unbind(-1)
    return cx0 - d / 2 * scale, cy0 - e / 2 * scale, ((d * d + e * e) / 4 - f) * scale**2, ok


def _circle_fit(L: _Light, iterations: int = 4
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted circle fit of every image: centre, radius, and whether the fit is usable.

    Starts from the algebraic (Kåsa) fit, which is linear but biased for thick arcs, then takes
    ``iterations`` Gauss–Newton steps on the geometric residual ``Σ w (|p − c| − R)²``, each
    keeping only pixels within ``max(3 × rms, 2)`` pixels of the current circle (rms: the weighted
    rms of ``r − R``) so that stray noise pixels far from the ring do not pull it. A
    point-symmetric light distribution (a full ring, a filled ellipse) gives its centre of symmetry.
    """
    cx0, cy0, ok = _centroid(L)
    scale = float(max(L.h, L.width))
    cx, cy, r2, solvable = _kasa(L, cx0, cy0, scale)
    good = ok & solvable & (r2 > 0)
    cx, cy = torch.where(good, cx, cx0), torch.where(good, cy, cy0)
    radius = torch.sqrt(r2.clamp(min=0))
    for _ in range(iterations):
        dx, dy = L.x - L.at(cx), L.y - L.at(cy)
        r = torch.sqrt(dx * dx + dy * dy).clamp(min=1e-9)
        res = r - L.at(radius)
        rms = torch.sqrt(L.sum(L.w * res**2) / L.sum(L.w).clamp(min=1e-300))
        band = torch.maximum(3 * rms, torch.full_like(rms, 2.0))
        wb = L.w * (res.abs() <= L.at(band))
        a, b = -dx / r, -dy / r  # d res / d(cx, cy); d res / dR = -1
        sm = lambda t: L.sum(wb * t)  # noqa: E731
        s1 = sm(torch.ones_like(r))
        jtj = _sym3(sm(a * a), sm(a * b), -sm(a), sm(b * b), -sm(b), s1)
        step_ok = good & (_det3(jtj).abs() > 1e-12 * s1.clamp(min=1e-300) ** 3)
        step = _solve3(jtj, -torch.stack([sm(a * res), sm(b * res), -sm(res)], -1), step_ok)
        cx, cy, radius = cx + step[:, 0], cy + step[:, 1], radius + step[:, 2]
    usable = (good & (radius > 0) & torch.isfinite(cx) & torch.isfinite(cy) & torch.isfinite(radius)
              & (cx >= 0) & (cx <= L.width - 1) & (cy >= 0) & (cy <= L.h - 1))
    cx = torch.where(usable, cx, cx0)
    cy = torch.where(usable, cy, cy0)
    radius = torch.where(usable, radius, torch.full_like(radius, float("nan")))
    return cx, cy, radius, usable


_RING_BAND = 0.25
_RING_LIGHT = 0.6


def _centre(L: _Light, method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ROI centre (cx, cy) and ring radius (NaN where no circle was used) by ``method``.

    ``auto`` uses the circle fit where the light is ring-like and the centroid elsewhere (a compact
    or elongated source, or a lens galaxy outshining the ring). Ring-like: at least
    ``_RING_LIGHT`` of ``w`` lies within ``_RING_BAND`` × R of the fitted circle (rings and arcs
    hold 0.7–1 of their light there, filled blobs 0.25–0.4; a few hot pixels do not change it).
    ``circle`` uses the fit wherever it is usable.
    """
    if method not in CENTRE_METHODS:
        raise ValueError(f"unknown centre method {method!r}; "
                         f"choose one of {', '.join(CENTRE_METHODS)}")
    mx, my, _ = _centroid(L)
    if method == "centroid":
        return mx, my, torch.full_like(mx, float("nan"))
    cx, cy, radius, usable = _circle_fit(L)
    if method == "circle":
        return cx, cy, radius
    rad = torch.nan_to_num(radius, nan=0.0)
    r = torch.sqrt((L.x - L.at(cx)) ** 2 + (L.y - L.at(cy)) ** 2)
    near = L.sum(L.w * ((r - L.at(rad)).abs() <= _RING_BAND * L.at(rad)))
    ring = usable & (near >= _RING_LIGHT * L.sum(L.w))
    nan = torch.full_like(radius, float("nan"))
    return torch.where(ring, cx, mx), torch.where(ring, cy, my), torch.where(ring, radius, nan)


def _atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``atan2``; while exporting to ONNX, whose runtime has no float64 Atan, a float32 atan2
    refined by one step ``θ += (y cos θ − x sin θ) / hypot(x, y)`` (the sine of the error), which
    leaves an error of order (1e-7)³: float64 accuracy again."""
    if not torch.onnx.is_in_onnx_export():
        return torch.atan2(y, x)
    t0 = torch.atan2(y.float(), x.float()).to(y.dtype)
    rho = torch.sqrt(x * x + y * y)
    step = (y * torch.cos(t0) - x * torch.sin(t0)) / torch.where(rho > 0, rho, torch.ones_like(rho))
    return t0 + step


def _angle(L: _Light, cx: torch.Tensor, cy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical angle (major axis; third moment along it >= 0) and elongation 1 − λ_min/λ_max."""
    dx, dy = L.x - L.at(cx), L.y - L.at(cy)
    mxx, myy, mxy = L.sum(L.w * dx * dx), L.sum(L.w * dy * dy), L.sum(L.w * dx * dy)
    theta = 0.5 * _atan2(2 * mxy, mxx - myy)
    t = dx * L.at(torch.cos(theta)) + dy * L.at(torch.sin(theta))
    m3 = L.sum(L.w * t**3)
    theta = torch.where(m3 < 0, theta + math.pi, theta)
    theta = torch.where(theta > math.pi, theta - 2 * math.pi, theta)
    half_tr = (mxx + myy) / 2
    disc = torch.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    lmax, lmin = half_tr + disc, half_tr - disc
    elong = torch.where(lmax > 0, 1 - lmin / lmax.clamp(min=1e-300), torch.zeros_like(lmax))
    return theta, elong


# ------------------------------------------------------------------------------------------------
# the frame: what maps input pixels to canonical crop pixels


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
        return LensFrame(pick(self.centre_x), pick(self.centre_y), pick(self.angle), self.size,
                         self.image_shape, pick(self.background), pick(self.radius),
                         pick(self.elongation))

    @property
    def is_integer_crop(self) -> bool:
        """No rotation and crop corners on the pixel grid: the crop is an exact slice."""
        half = (self.size - 1) / 2
        return bool(np.all(self.angle == 0)
                    and np.all(self.centre_x - half == np.round(self.centre_x - half))
                    and np.all(self.centre_y - half == np.round(self.centre_y - half)))


def _frame_from_tensors(cx: torch.Tensor, cy: torch.Tensor, angle: torch.Tensor, size: int,
                        shape: tuple[int, int], bg: torch.Tensor, radius: torch.Tensor,
                        elong: torch.Tensor) -> LensFrame:
    np64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return LensFrame(np64(cx), np64(cy), np64(angle), size, shape, np64(bg), np64(radius),
                     np64(elong))


@dataclass(frozen=True)
class RoiResult:
    """Centres from :func:`detect_roi`, plus the statistics behind them (all (N,) float64)."""

    centre_x: np.ndarray
    centre_y: np.ndarray
    radius: np.ndarray
    """Fitted circle radius in pixels (NaN with ``method="centroid"`` or a failed fit)."""
    background: np.ndarray
    threshold: np.ndarray


def detect_roi(images: Array, *, method: str = "auto", smooth_sigma: float = 1.0,
               nsigma: float = 3.0, fraction: float = 0.1) -> RoiResult:
    """Centre of the bright (lensed) light of every image: circle fit or centroid of ``w``.

    See the module docstring for the threshold and weights; ``fraction`` is the share of the
    peak above the background that a pixel must exceed, ``nsigma`` the noise multiple.
    """
    b = _batch(images)
    s = _smooth(b.x, float(smooth_sigma))
    bg, _, _, thr = _stats(s, float(nsigma), float(fraction))
    cx, cy, radius = _centre(_pack(s - thr[:, None, None]), method)
    np64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return RoiResult(np64(cx), np64(cy), np64(radius), np64(bg), np64(thr))


def principal_angle(images: Array, centre_x: Array | float | None = None,
                    centre_y: Array | float | None = None, *, method: str = "auto",
                    smooth_sigma: float = 1.0, nsigma: float = 3.0, fraction: float = 0.1
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Canonical angle (radians in (−π, π]) and elongation of each image's bright light.

    The moments are taken about the given centre, or about the detected ROI centre. The angle is
    that of the major axis of the second moments, turned by π when the third moment along it is
    negative, so the side with more (or more distant) light defines +x.
    """
    b = _batch(images)
    w, _ = _weights(b.x, float(smooth_sigma), float(nsigma), float(fraction))
    if centre_x is None or centre_y is None:
        cx, cy, _ = _centre(w, method)
    else:
        cx = _per_image(centre_x, b.x.shape[0], "centre_x", b.x)
        cy = _per_image(centre_y, b.x.shape[0], "centre_y", b.x)
    theta, elong = _angle(w, cx, cy)
    return theta.cpu().numpy(), elong.cpu().numpy()


class _FrameTensors(NamedTuple):
    """The tensor form of a :class:`LensFrame` (all (N,) float64, on the batch's device)."""

    centre_x: torch.Tensor
    centre_y: torch.Tensor
    angle: torch.Tensor
    background: torch.Tensor
    radius: torch.Tensor
    elongation: torch.Tensor


def _frame_tensors(x: torch.Tensor, size: int, rotate: bool, method: str, smooth_sigma: float,
                   nsigma: float, fraction: float, dense: bool = False) -> _FrameTensors:
    """Centre, angle and statistics of every image of (N, H, W), as tensors.

    The one implementation behind :func:`lens_frame`, :func:`canonicalize` and
    :class:`LensCanonicalize`: no NumPy, ``.item()`` or branches on values. With ``dense`` the
    pixels are not packed either, so no shape depends on the data and a graph captured from it
    (TorchScript tracing, ``torch.export``) holds for any batch size.
    """
    w, bg = _weights(x, smooth_sigma, nsigma, fraction, dense)
    cx, cy, radius = _centre(w, method)
    theta, elong = _angle(w, cx, cy)
    if not rotate:
        theta = torch.zeros_like(cx)
        half = (size - 1) / 2  # snap to the grid: the crop is then an exact slice
        cx = torch.floor(cx - half + 0.5) + half
        cy = torch.floor(cy - half + 0.5) + half
    return _FrameTensors(cx, cy, theta, bg, radius, elong)


def _lens_frame(x: torch.Tensor, size: int, rotate: bool, method: str, smooth_sigma: float,
                nsigma: float, fraction: float) -> LensFrame:
    ft = _frame_tensors(x, size, rotate, method, smooth_sigma, nsigma, fraction)
    return _frame_from_tensors(ft.centre_x, ft.centre_y, ft.angle, size,
                               (x.shape[-2], x.shape[-1]), ft.background, ft.radius, ft.elongation)


def lens_frame(images: Array, size: int, *, rotate: bool = True, method: str = "auto",
               smooth_sigma: float = 1.0, nsigma: float = 3.0, fraction: float = 0.1) -> LensFrame:
    """Detect each image's ROI centre (and canonical angle, with ``rotate``) for a ``size`` crop.

    Without rotation the centre is snapped so that the crop is an exact slice of the input.
    """
    b = _batch(images)
    return _lens_frame(b.x, _check_size(size), rotate, method, float(smooth_sigma), float(nsigma),
                       float(fraction))


# ------------------------------------------------------------------------------------------------
# resampling


def _check_frame(frame: LensFrame, n: int, shape: tuple[int, int]) -> None:
    if len(frame) != n:
        raise ValueError(f"the frame describes {len(frame)} images, the batch has {n}")
    if tuple(frame.image_shape) != tuple(shape):
        raise ValueError(f"the frame was made for {frame.image_shape[0]}×{frame.image_shape[1]} "
                         f"images, got {shape[0]}×{shape[1]}")


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


def _slice_crop(x: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, size: int,
                fill: torch.Tensor | None) -> torch.Tensor:
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
    return F.grid_sample(x.unsqueeze(1), grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=True)[:, 0]


def _rotated_crop(x: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, angle: torch.Tensor,
                  size: int, fill: torch.Tensor | None) -> torch.Tensor:
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
    return ((angle == 0).all() & (cx - half == torch.round(cx - half)).all()
            & (cy - half == torch.round(cy - half)).all())


def _crop(x: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, angle: torch.Tensor, size: int,
          fill: torch.Tensor | None, rotate: bool = True) -> torch.Tensor:
    """The canonical crops of (N, H, W): an exact slice where the frame allows, else bilinear.

    With ``rotate=False`` the frame is snapped to the grid by construction, so only the slice is
    made. Otherwise both are made and ``torch.where`` picks one, rather than a Python ``if`` on
    tensor values that a traced graph would freeze at the example's outcome.
    """
    sliced = _slice_crop(x, cx, cy, size, fill)
    if not rotate:
        return sliced
    return torch.where(_on_grid(cx, cy, angle, size), sliced,
                       _rotated_crop(x, cx, cy, angle, size, fill))


def to_canonical(images: Array, frame: LensFrame, *, pad: str = "background") -> Array:
    """Crop (and rotate) every image into its canonical ``size × size`` frame."""
    b = _batch(images)
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
    b = _batch(crops, "crops")
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


def _to_canonical_coords(x: torch.Tensor, y: torch.Tensor, frame: LensFrame,
                         dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(frame)
    f64 = lambda a: torch.as_tensor(a, dtype=torch.float64, device=dev).view(n, 1, 1)  # noqa: E731
    dx = x - f64(frame.centre_x)
    dy = y - f64(frame.centre_y)
    c, sn = torch.cos(f64(frame.angle)), torch.sin(f64(frame.angle))
    return c * dx + sn * dy, -sn * dx + c * dy


def image_to_canonical(x: np.ndarray, y: np.ndarray, frame: LensFrame
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Input pixel coordinates (x = column, y = row) → crop coordinates (column, row).

    ``x`` and ``y`` are (N,) or (N, K): one row of points per image.
    """
    x64, y64 = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    shape = np.broadcast(x64, y64).shape
    if not shape or shape[0] != len(frame):
        raise ValueError(f"points must be (N,) or (N, K) with N = {len(frame)}, got {shape}")
    cx, cy, a = (np.reshape(v, (-1,) + (1,) * (len(shape) - 1))
                 for v in (frame.centre_x, frame.centre_y, frame.angle))
    dx, dy = x64 - cx, y64 - cy
    half = (frame.size - 1) / 2
    return np.cos(a) * dx + np.sin(a) * dy + half, -np.sin(a) * dx + np.cos(a) * dy + half


def canonical_to_image(u: np.ndarray, v: np.ndarray, frame: LensFrame
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Crop coordinates (column, row) → input pixel coordinates (x, y): the inverse map."""
    u64, v64 = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    shape = np.broadcast(u64, v64).shape
    if not shape or shape[0] != len(frame):
        raise ValueError(f"points must be (N,) or (N, K) with N = {len(frame)}, got {shape}")
    cx, cy, a = (np.reshape(p, (-1,) + (1,) * (len(shape) - 1))
                 for p in (frame.centre_x, frame.centre_y, frame.angle))
    half = (frame.size - 1) / 2
    du, dv = u64 - half, v64 - half
    return cx + np.cos(a) * du - np.sin(a) * dv, cy + np.sin(a) * du + np.cos(a) * dv


def _canonical(x: torch.Tensor, size: int, rotate: bool, method: str, pad: str,
               smooth_sigma: float, nsigma: float, fraction: float, dense: bool = False
               ) -> tuple[torch.Tensor, _FrameTensors]:
    """Crops (N, S, S) and frame tensors of (N, H, W): the path shared by every entry point."""
    _check_pad(pad)
    ft = _frame_tensors(x, size, rotate, method, smooth_sigma, nsigma, fraction, dense)
    crop = _crop(x, ft.centre_x, ft.centre_y, ft.angle, size, _fill(x, ft.background, pad),
                 rotate)
    return crop, ft


def canonicalize(images: Array, size: int, *, rotate: bool = True, method: str = "auto",
                 pad: str = "background", smooth_sigma: float = 1.0, nsigma: float = 3.0,
                 fraction: float = 0.1) -> tuple[Array, LensFrame]:
    """Detect, crop and (with ``rotate``) rotate every image: ``(crops, frame)``.

    ``from_canonical(crops, frame)`` and :func:`canonical_to_image` undo it for plots.
    """
    b = _batch(images)
    size = _check_size(size)
    crop, ft = _canonical(b.x, size, rotate, method, pad, float(smooth_sigma), float(nsigma),
                          float(fraction))
    frame = _frame_from_tensors(ft.centre_x, ft.centre_y, ft.angle, size,
                                (b.x.shape[-2], b.x.shape[-1]), ft.background, ft.radius,
                                ft.elongation)
    return b.out(crop), frame


def _capturing() -> bool:
    """Whether a graph is being traced or exported (value checks would be frozen or refused)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting())


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

    def __init__(self, size: int, *, rotate: bool = True, method: str = "auto",
                 pad: str = "background", smooth_sigma: float = 1.0, nsigma: float = 3.0,
                 fraction: float = 0.1) -> None:
        super().__init__()
        if method not in CENTRE_METHODS:
            raise ValueError(f"unknown centre method {method!r}; "
                             f"choose one of {', '.join(CENTRE_METHODS)}")
        _check_pad(pad)
        self.size = _check_size(size)
        self.rotate = bool(rotate)
        self.method = method
        self.pad = pad
        self.smooth_sigma = float(smooth_sigma)
        self.nsigma = float(nsigma)
        self.fraction = float(fraction)
        # the checks of _stats and _smooth, made once here rather than on every call
        _smooth(torch.zeros(1, 3, 3), self.smooth_sigma)
        _stats(torch.zeros(1, 3, 3), self.nsigma, self.fraction)

    def forward_with_frame(self, x: Array) -> tuple[Array, LensFrame]:
        return canonicalize(x, self.size, rotate=self.rotate, method=self.method, pad=self.pad,
                            smooth_sigma=self.smooth_sigma, nsigma=self.nsigma,
                            fraction=self.fraction)

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
            b = _batch(x)
            images, channel = b.x, b.channel
        with warnings.catch_warnings():
            if torch.jit.is_tracing():
                # The tracer hands out H and W as tensors; a few static-size expressions
                # (max(H, W), max(W − 1, 1)) become constants, as they should: a traced graph is
                # for one image size. Only the batch axis stays dynamic.
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                        message="Converting a tensor to a Python")
            crop, _ = _canonical(images, self.size, self.rotate, self.method, self.pad,
                                 self.smooth_sigma, self.nsigma, self.fraction, dense=capturing)
        return crop.unsqueeze(1) if channel else crop

    def extra_repr(self) -> str:
        return (f"size={self.size}, rotate={self.rotate}, method={self.method!r}, "
                f"pad={self.pad!r}, "
                f"smooth_sigma={self.smooth_sigma}, nsigma={self.nsigma}, fraction={self.fraction}")


# ------------------------------------------------------------------------------------------------
# readers


def iter_batches(dataset: ImageDataset, indices: Sequence[int] | np.ndarray | None = None,
                 batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(indices, images, labels)`` of a single-channel reader, ``batch_size`` at a time."""
    if dataset.image_shape[0] != 1:
        raise ValueError(f"lens transforms need single-channel images, the dataset has "
                         f"{dataset.image_shape[0]} channels ({', '.join(dataset.channel_names)})")
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    idx = np.arange(dataset.n_samples) if indices is None else np.asarray(indices, dtype=np.int64)
    for start in range(0, idx.size, batch_size):
        chunk = idx[start:start + batch_size]
        images, labels = dataset.read(chunk)
        yield chunk, images, labels


def canonicalize_dataset(dataset: ImageDataset, size: int, *,
                         indices: Sequence[int] | np.ndarray | None = None, batch_size: int = 256,
                         **kwargs: object) -> tuple[np.ndarray, np.ndarray, LensFrame]:
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
    frame = LensFrame(cat("centre_x"), cat("centre_y"), cat("angle"), frames[0].size,
                      frames[0].image_shape, cat("background"), cat("radius"), cat("elongation"))
    return np.concatenate(crops), np.concatenate(labels), frame
