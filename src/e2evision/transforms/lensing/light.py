"""Light above the background: smoothing, robust statistics, the weighted pixels and the fits on
them (ROI centre by circle fit or centroid, canonical angle by moments)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from e2evision.transforms.lensing.batch import Array, as_batch

CENTRE_METHODS = ("auto", "circle", "centroid")
_MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD -> Gaussian sigma


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


def smooth_tensor(x: torch.Tensor, sigma: float) -> torch.Tensor:
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
    b = as_batch(images)
    return b.out(smooth_tensor(b.x, float(sigma)))


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


def threshold_stats(s: torch.Tensor, nsigma: float, fraction: float) -> tuple[torch.Tensor, ...]:
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


def light_statistics(
    images: Array, *, smooth_sigma: float = 1.0, nsigma: float = 3.0, fraction: float = 0.1
) -> LightStats:
    """Background, noise, peak and the bright-light threshold of each image, after smoothing.

    The median is torch's (the lower middle value for an even pixel count).
    """
    b = as_batch(images)
    vals = threshold_stats(smooth_tensor(b.x, float(smooth_sigma)), float(nsigma), float(fraction))
    return LightStats(*(v.double().cpu().numpy() for v in vals))


class Light:
    """The weighted pixels of a batch, and per-image sums over them.

    Two layouts share this interface, so that the fits below are written once:
    :class:`PackedLight` (eager) and :class:`DenseLight` (traced or exported graphs).
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
class PackedLight(Light):
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
class DenseLight(Light):
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


def pack_light(w: torch.Tensor, dense: bool = False) -> Light:
    """The light of thresholded images ``w`` (N, H, W): its positive part, packed or dense."""
    n, h, wd = w.shape
    if dense:
        cols = torch.arange(wd, dtype=torch.float64, device=w.device)
        rows = torch.arange(h, dtype=torch.float64, device=w.device)
        x = cols.view(1, wd).expand(h, wd).reshape(1, h * wd)
        y = rows.view(h, 1).expand(h, wd).reshape(1, h * wd)
        return DenseLight(x, y, w.clamp(min=0).flatten(1).double(), h, wd)
    img, row, col = torch.nonzero(w > 0, as_tuple=True)  # sorted by image, then row, column
    lengths = torch.bincount(img, minlength=n)
    return PackedLight(img, col.double(), row.double(), w[img, row, col].double(), lengths, h, wd)


def light_weights(
    x: torch.Tensor, smooth_sigma: float, nsigma: float, fraction: float, dense: bool = False
) -> tuple[Light, torch.Tensor]:
    """Light above the threshold, ``max(S − thr, 0)``; and the background (N,) float64."""
    s = smooth_tensor(x, smooth_sigma)
    bg, _, _, thr = threshold_stats(s, nsigma, fraction)
    return pack_light(s - thr[:, None, None], dense), bg.double()


def _centroid(L: Light) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    cross = torch.stack(
        [
            r1[..., 1] * r2[..., 2] - r1[..., 2] * r2[..., 1],
            r1[..., 2] * r2[..., 0] - r1[..., 0] * r2[..., 2],
            r1[..., 0] * r2[..., 1] - r1[..., 1] * r2[..., 0],
        ],
        -1,
    )
    return (r0 * cross).sum(-1)


def _solve3(a: torch.Tensor, rhs: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Batched 3×3 solves; rows where ``ok`` is False get zeros (their systems are singular)."""
    eye = torch.eye(3, dtype=a.dtype, device=a.device)
    a = torch.where(ok.view(-1, 1, 1), a, eye)
    if torch.onnx.is_in_onnx_export():  # ONNX has no linear solve: Cramer's rule, same system
        cols = a.unbind(-1)
        sol = torch.stack([_det3(torch.stack(cols[:i] + (rhs,) + cols[i + 1 :], -1)) for i in range(3)], -1) / _det3(
            a
        ).unsqueeze(-1)
    else:
        sol = torch.linalg.solve(a, rhs.unsqueeze(-1))[..., 0]
    return torch.where(ok.view(-1, 1), sol, torch.zeros_like(sol))


def _sym3(
    s11: torch.Tensor, s12: torch.Tensor, s13: torch.Tensor, s22: torch.Tensor, s23: torch.Tensor, s33: torch.Tensor
) -> torch.Tensor:
    return torch.stack(
        [torch.stack([s11, s12, s13], -1), torch.stack([s12, s22, s23], -1), torch.stack([s13, s23, s33], -1)], -2
    )


def _kasa(
    L: Light, cx0: torch.Tensor, cy0: torch.Tensor, scale: float
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


def _circle_fit(L: Light, iterations: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
        sm = lambda t, wb=wb: L.sum(wb * t)  # noqa: E731
        s1 = sm(torch.ones_like(r))
        jtj = _sym3(sm(a * a), sm(a * b), -sm(a), sm(b * b), -sm(b), s1)
        step_ok = good & (_det3(jtj).abs() > 1e-12 * s1.clamp(min=1e-300) ** 3)
        step = _solve3(jtj, -torch.stack([sm(a * res), sm(b * res), -sm(res)], -1), step_ok)
        cx, cy, radius = cx + step[:, 0], cy + step[:, 1], radius + step[:, 2]
    usable = (
        good
        & (radius > 0)
        & torch.isfinite(cx)
        & torch.isfinite(cy)
        & torch.isfinite(radius)
        & (cx >= 0)
        & (cx <= L.width - 1)
        & (cy >= 0)
        & (cy <= L.h - 1)
    )
    cx = torch.where(usable, cx, cx0)
    cy = torch.where(usable, cy, cy0)
    radius = torch.where(usable, radius, torch.full_like(radius, float("nan")))
    return cx, cy, radius, usable


_RING_BAND = 0.25
_RING_LIGHT = 0.6


def roi_centre(L: Light, method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ROI centre (cx, cy) and ring radius (NaN where no circle was used) by ``method``.

    ``auto`` uses the circle fit where the light is ring-like and the centroid elsewhere (a compact
    or elongated source, or a lens galaxy outshining the ring). Ring-like: at least
    ``_RING_LIGHT`` of ``w`` lies within ``_RING_BAND`` × R of the fitted circle (rings and arcs
    hold 0.7–1 of their light there, filled blobs 0.25–0.4; a few hot pixels do not change it).
    ``circle`` uses the fit wherever it is usable.
    """
    if method not in CENTRE_METHODS:
        raise ValueError(f"unknown centre method {method!r}; choose one of {', '.join(CENTRE_METHODS)}")
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


def canonical_angle(L: Light, cx: torch.Tensor, cy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
