"""Lens ROI crop and canonical rotation against constructed images with known centres and angles."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from e2evision.datasets import DeepLenseFolder
from e2evision.transforms import (
    LensCanonicalize,
    canonical_to_image,
    canonicalize,
    canonicalize_dataset,
    detect_roi,
    from_canonical,
    image_to_canonical,
    lens_frame,
    principal_angle,
    to_canonical,
)
from e2evision.transforms.lensing import light_statistics


def ring(
    h: int,
    w: int,
    cx: float,
    cy: float,
    radius: float,
    width: float = 1.5,
    amp: float = 1.0,
    arc: tuple[float, float] | None = None,
) -> np.ndarray:
    """A Gaussian-profile ring (or an arc between two angles in degrees) of peak ``amp``."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = amp * np.exp(-0.5 * ((np.hypot(x - cx, y - cy) - radius) / width) ** 2)
    if arc is not None:
        phi = np.degrees(np.arctan2(y - cy, x - cx)) % 360
        lo, hi = arc[0] % 360, arc[1] % 360
        keep = (phi >= lo) & (phi <= hi) if lo <= hi else (phi >= lo) | (phi <= hi)
        img = img * keep
    return img


def ellipse(
    h: int, w: int, cx: float, cy: float, angle_deg: float, s_major: float, s_minor: float, amp: float = 1.0
) -> np.ndarray:
    """An elliptical Gaussian, major axis at ``angle_deg`` (counter-clockwise from +x)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a = math.radians(angle_deg)
    u = math.cos(a) * (x - cx) + math.sin(a) * (y - cy)
    v = -math.sin(a) * (x - cx) + math.cos(a) * (y - cy)
    return amp * np.exp(-0.5 * ((u / s_major) ** 2 + (v / s_minor) ** 2))


def angle_error_deg(a: np.ndarray, b: np.ndarray, period: float = 360.0) -> np.ndarray:
    d = (np.degrees(a) - np.asarray(b) + period / 2) % period - period / 2
    return np.abs(d)


# ------------------------------------------------------------------------------------------------
# region of interest


def test_roi_centres_off_centre_rings_despite_noise():
    rng = np.random.default_rng(0)
    truth = [(78.3, 36.6, 14.0), (30.8, 61.2, 20.5), (60.0, 50.5, 9.0)]  # (cx, cy, radius)
    clean = np.stack([ring(100, 120, cx, cy, r) for cx, cy, r in truth])
    x = (0.2 + clean + rng.normal(0.0, 0.15, clean.shape)).astype(np.float32)  # SNR ~7 per pixel
    tx, ty, tr = (np.array(v) for v in zip(*truth))

    roi = detect_roi(x)
    assert np.abs(roi.centre_x - tx).max() < 0.3 and np.abs(roi.centre_y - ty).max() < 0.3
    assert np.abs(roi.radius - tr).max() < 0.4
    hot = x.copy()  # three hot pixels far from every ring: the fit ignores them
    hot[:, [90, 5, 95], [10, 110, 60]] += 4.0
    roi_hot = detect_roi(hot)
    assert np.abs(roi_hot.centre_x - tx).max() < 0.3 and np.abs(roi_hot.centre_y - ty).max() < 0.3
    assert np.abs(roi_hot.radius - tr).max() < 0.4
    cen = detect_roi(x, method="centroid")  # a full ring is symmetric: its centroid is the centre
    assert np.abs(cen.centre_x - tx).max() < 0.6 and np.abs(cen.centre_y - ty).max() < 0.6
    assert np.isnan(cen.radius).all()

    crops, frame = canonicalize(x, 48, rotate=False)
    assert crops.shape == (3, 48, 48) and crops.dtype == np.float32
    for i in range(3):  # an exact slice around the snapped centre, which is the ring's centre ±0.5
        top, left = int(frame.centre_y[i] - 23.5), int(frame.centre_x[i] - 23.5)
        assert abs(frame.centre_x[i] - tx[i]) <= 0.8 and abs(frame.centre_y[i] - ty[i]) <= 0.8
        assert top >= 0 and left >= 0
        np.testing.assert_array_equal(crops[i], x[i, top : top + 48, left : left + 48])
    again = detect_roi(crops)  # the ring now sits in the middle of the crop
    u, v = image_to_canonical(tx, ty, frame)
    assert np.abs(again.centre_x - u).max() < 0.3 and np.abs(again.centre_y - v).max() < 0.3
    assert np.abs(u - 23.5).max() <= 0.5 and np.abs(v - 23.5).max() <= 0.5


def test_circle_fit_finds_the_centre_of_an_arc_where_the_centroid_is_pulled_away():
    x = np.stack([0.1 + ring(90, 90, 41.7, 47.2, 25.0, arc=(-60, 110)), ring(90, 90, 50.0, 40.0, 18.0, arc=(150, 300))])
    circle = detect_roi(x, method="circle")
    centroid = detect_roi(x, method="centroid")
    np.testing.assert_allclose(circle.centre_x, [41.7, 50.0], atol=0.4)
    np.testing.assert_allclose(circle.centre_y, [47.2, 40.0], atol=0.4)
    np.testing.assert_allclose(circle.radius, [25.0, 18.0], atol=0.4)
    moved = np.hypot(centroid.centre_x - [41.7, 50.0], centroid.centre_y - [47.2, 40.0])
    assert (moved > 8).all()  # the arc's light is all on one side


def test_background_threshold_and_an_empty_image():
    x = np.full((2, 40, 40), 0.25)
    x[0] += ring(40, 40, 20, 20, 10, amp=2.0)
    stats = light_statistics(x, smooth_sigma=0.0, nsigma=3.0, fraction=0.1)
    flat = np.sort(x[0].ravel())
    bg = flat[(flat.size - 1) // 2]  # the lower median: the ring covers under half the pixels
    noise = 1.482602218505602 * np.sort(np.abs(flat - bg))[(flat.size - 1) // 2]
    assert 0.25 < bg < 0.251 and stats.background[0] == pytest.approx(bg, rel=1e-12)
    assert stats.noise[0] == pytest.approx(noise, rel=1e-12)
    expected = bg + max(3 * noise, 0.1 * (flat[-1] - bg))
    assert stats.threshold[0] == pytest.approx(expected, rel=1e-12)
    assert stats.background[1] == 0.25 and stats.noise[1] == 0 and stats.threshold[1] == 0.25
    roi = detect_roi(x)
    assert (roi.centre_x[1], roi.centre_y[1]) == (19.5, 19.5)  # nothing bright: the image centre
    assert abs(roi.centre_x[0] - 20) < 0.05 and abs(roi.centre_y[0] - 20) < 0.05


@pytest.mark.parametrize("pad", ["background", "zeros", "edge"])
def test_crops_reaching_past_the_border_are_padded(pad: str):
    x = (0.3 + ring(50, 60, 52.0, 8.0, 6.0)).astype(np.float64)[None]  # ring near a corner
    crops, frame = canonicalize(x, 30, rotate=False, pad=pad)
    top, left = int(frame.centre_y[0] - 14.5), int(frame.centre_x[0] - 14.5)
    assert top < 0 and left + 30 > 60  # the window hangs over the bottom and right edges
    inside = crops[0, -top:, : 60 - left]
    np.testing.assert_array_equal(inside, x[0, 0 : top + 30, left:60])
    below, right = crops[0, :-top, :], crops[0, :, 60 - left :]
    if pad == "zeros":
        assert (below == 0).all() and (right == 0).all()
    elif pad == "background":
        assert frame.background[0] == pytest.approx(0.3, abs=1e-6)
        np.testing.assert_allclose(below, frame.background[0])
        np.testing.assert_allclose(right, frame.background[0])
    else:  # edge: the nearest input pixel
        rows = np.clip(np.arange(top, top + 30), 0, 49)
        cols = np.clip(np.arange(left, left + 30), 0, 59)
        np.testing.assert_array_equal(crops[0], x[0][np.ix_(rows, cols)])

    rotated, rframe = canonicalize(x, 30, pad=pad)  # resampled: pixels beyond the input get the pad
    v, u = np.mgrid[0:30, 0:30]
    px, py = canonical_to_image(u[None].astype(float), v[None].astype(float), rframe)
    outside = (px[0] < -1) | (px[0] > 60) | (py[0] < -1) | (py[0] > 50)
    assert outside.sum() > 50
    if pad == "edge":  # beyond a corner: the corner pixel itself
        corner = (px[0] > 60) & (py[0] < -1)
        assert corner.any()
        np.testing.assert_allclose(rotated[0][corner], x[0, 0, 59], rtol=1e-12)
    else:
        expected = 0.0 if pad == "zeros" else rframe.background[0]
        np.testing.assert_allclose(rotated[0][outside], expected, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# canonical orientation


ANGLES = [-150.0, -100.0, -30.0, 10.0, 75.0, 170.0]


def elongated_sources(noise: float = 0.0, satellite: bool = True) -> np.ndarray:
    """An elongated Gaussian per angle, with a fainter blob on the +axis side to fix the sign."""
    rng = np.random.default_rng(1)
    out = []
    for a in ANGLES:
        cx, cy = 60.3, 47.8
        img = ellipse(96, 120, cx, cy, a, 9.0, 3.0)
        if satellite:
            r = math.radians(a)
            sx, sy = cx + 14 * math.cos(r), cy + 14 * math.sin(r)
            img += ellipse(96, 120, sx, sy, 0.0, 2.0, 2.0, 0.6)
        out.append(img + rng.normal(0.0, noise, img.shape))
    return np.stack(out)


def test_rotation_recovers_the_major_axis_and_its_sign():
    x = elongated_sources(noise=0.05)
    angle, elongation = principal_angle(x)
    assert angle_error_deg(angle, ANGLES).max() < 1.5
    roi = detect_roi(x)  # not ring-like: "auto" uses the centroid, not a circle through the blob
    assert np.isnan(roi.radius).all()
    centroid = detect_roi(x, method="centroid")
    np.testing.assert_array_equal(roi.centre_x, centroid.centre_x)
    forced, _ = principal_angle(x, method="circle")  # a circle fit to a blob misplaces the centre
    assert angle_error_deg(forced, ANGLES).max() > 90
    assert (elongation > 0.7).all()  # 1 - (3/9)^2 for the bare ellipse; the satellite adds length

    symmetric = elongated_sources(satellite=False)  # no third moment: the axis only, modulo 180°
    angle, _ = principal_angle(symmetric)
    assert angle_error_deg(angle, ANGLES, period=180.0).max() < 0.5


def test_canonical_crops_put_the_major_axis_along_x_and_the_satellite_on_plus_x():
    x = elongated_sources(noise=0.02)
    crops, frame = canonicalize(x, 64, pad="zeros")
    y, xx = np.mgrid[0:64, 0:64] - 31.5
    w = np.clip(crops - 0.1, 0, None)
    mxx = (w * xx**2).sum(axis=(1, 2))
    myy = (w * y**2).sum(axis=(1, 2))
    mxy = (w * xx * y).sum(axis=(1, 2))
    assert (mxx > 3 * myy).all()
    assert (np.abs(0.5 * np.degrees(np.arctan2(2 * mxy, mxx - myy))) < 1.5).all()
    assert ((w * xx**3).sum(axis=(1, 2)) > 0).all()  # the documented sign: third moment along +x
    satellite = crops[:, 31:33, 31 + 14 : 33 + 14].mean(axis=(1, 2))
    opposite = crops[:, 31:33, 31 - 14 : 33 - 14].mean(axis=(1, 2))
    assert (satellite > opposite + 0.2).all()


def test_a_lens_ring_turns_its_brightest_arc_to_plus_x():
    rng = np.random.default_rng(3)
    betas = [-120.0, -45.0, 20.0, 100.0, 160.0]
    x = []
    for k, beta in enumerate(betas):
        cx, cy = 48.0 + k, 52.5 - k
        b = math.radians(beta)
        arc = ring(100, 100, cx, cy, 22.0, amp=1.5, arc=(beta - 25, beta + 25))
        img = ring(100, 100, cx, cy, 22.0) + arc
        x.append(0.1 + img + rng.normal(0.0, 0.05, img.shape))
        assert img[int(round(cy + 22 * math.sin(b))), int(round(cx + 22 * math.cos(b)))] > 2.0
    crops, frame = canonicalize(np.stack(x), 64)
    assert angle_error_deg(frame.angle, betas).max() < 3.0
    assert np.isfinite(frame.radius).all()  # ring-like: the circle fit was used
    np.testing.assert_allclose(frame.radius, 22.0, atol=0.5)
    right = crops[:, 28:36, 31 + 22 - 3 : 31 + 22 + 4].mean(axis=(1, 2))
    left = crops[:, 28:36, 31 - 22 - 3 : 31 - 22 + 4].mean(axis=(1, 2))
    assert (right > left + 0.5).all()


def test_rotation_is_invertible_for_pixels_and_points():
    x = elongated_sources(satellite=False)
    crops, frame = canonicalize(x, 64, pad="zeros")
    back = from_canonical(crops, frame, fill=np.nan)
    covered = ~np.isnan(back)
    assert covered.sum(axis=(1, 2)).min() > 0.9 * 64 * 64  # a rotated square of the crop's area
    err = np.abs(np.where(covered, back - x, 0.0))
    assert err.max() < 0.03  # two bilinear interpolations of a σ = 3 px Gaussian of peak 1

    rng = np.random.default_rng(2)
    px, py = rng.uniform(0, 120, (6, 5)), rng.uniform(0, 96, (6, 5))
    u, v = image_to_canonical(px, py, frame)
    bx, by = canonical_to_image(u, v, frame)
    np.testing.assert_allclose(bx, px, atol=1e-9)
    np.testing.assert_allclose(by, py, atol=1e-9)
    u0, v0 = image_to_canonical(np.full(6, 60.3), np.full(6, 47.8), frame)  # the source centre
    np.testing.assert_allclose(u0, 31.5, atol=0.2)
    np.testing.assert_allclose(v0, 31.5, atol=0.2)

    sliced, f0 = canonicalize(x, 40, rotate=False)
    exact = from_canonical(sliced, f0, fill=-1.0)
    mask = exact != -1.0
    assert mask.sum(axis=(1, 2)).tolist() == [1600] * 6
    np.testing.assert_allclose(exact[mask], x[mask], rtol=0, atol=1e-6)


def test_module_matches_functions_and_images_do_not_mix():
    x = elongated_sources(noise=0.02).astype(np.float32)
    module = LensCanonicalize(48, pad="edge")
    out = module(torch.from_numpy(x[:, None]))
    assert isinstance(out, torch.Tensor) and out.shape == (6, 1, 48, 48)
    ref, frame = canonicalize(x, 48, pad="edge")
    np.testing.assert_allclose(out[:, 0].numpy(), ref, atol=1e-6)
    for i in (0, 3):  # vectorised over the batch, yet each image is treated alone
        one, f1 = canonicalize(x[i : i + 1], 48, pad="edge")
        np.testing.assert_allclose(one[0], ref[i], atol=1e-5)
        assert f1.angle[0] == pytest.approx(frame.angle[i], abs=1e-6)
    again = to_canonical(x[:, None], frame, pad="edge")  # a stored frame reapplied
    assert again.shape == (6, 1, 48, 48)
    np.testing.assert_allclose(again[:, 0], ref, atol=1e-6)
    sub = frame[[1, 4]]
    assert len(sub) == 2 and sub.angle.tolist() == frame.angle[[1, 4]].tolist()
    assert "size=48" in repr(module)


def lens_batch(n: int, seed: int, h: int = 56, w: int = 64) -> torch.Tensor:
    """(n, 1, h, w) noisy rings and arcs of random centre, radius and bright side (some near an
    edge, so that crops need padding), float32 like a model input."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(8, w - 8), rng.uniform(8, h - 8)
        r = rng.uniform(5, 12)
        start = rng.uniform(0, 360)
        img = ring(h, w, cx, cy, r, amp=1.5) + ring(h, w, cx, cy, r, arc=(start, start + 120))
        out.append(0.2 + img + rng.normal(0.0, 0.05, img.shape))
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))


def _traced(module: LensCanonicalize, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated
        warnings.simplefilter("error", torch.jit.TracerWarning)  # nothing may be frozen silently
        return torch.jit.trace(module, example, strict=True)


@pytest.mark.parametrize("method", ["auto", "circle", "centroid"])
@pytest.mark.parametrize("rotate", [True, False])
def test_traced_module_is_the_eager_module_at_any_batch_size(method: str, rotate: bool):
    """Traced on a batch of 4, the graph crops other batches (2, 7) as the eager module does."""
    module = LensCanonicalize(40, rotate=rotate, method=method)
    traced = _traced(module, lens_batch(4, seed=1))
    assert "nonzero" not in str(traced.inlined_graph)  # the dense layout: no data-sized shapes
    for n, seed in ((2, 2), (7, 3)):
        x = lens_batch(n, seed)
        want = module(x)
        got = traced(x)
        assert got.shape == (n, 1, 40, 40)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)
        # ... and both are the functional API's crops, image by image
        ref, frame = canonicalize(x.numpy()[:, 0], 40, rotate=rotate, method=method)
        np.testing.assert_array_equal(want[:, 0].numpy(), ref)
        assert frame.is_integer_crop == (not rotate)


def test_dense_and_packed_layouts_give_the_same_frames():
    """The graph's dense pixel layout and the eager packed one differ only in summation order."""
    from e2evision.transforms.lensing.frame import frame_tensors as _frame_tensors

    x = lens_batch(12, seed=4)[:, 0]
    x[3] = 0.0  # an empty image: the image centre, no circle
    for method in ("auto", "circle", "centroid"):
        packed = _frame_tensors(x, 40, True, method, 1.0, 3.0, 0.1, dense=False)
        dense = _frame_tensors(x, 40, True, method, 1.0, 3.0, 0.1, dense=True)
        for name, a, b in zip(packed._fields, packed, dense):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-9, atol=1e-9, err_msg=name)
        assert dense.centre_x[3] == 31.5 and dense.centre_y[3] == 27.5


def test_traced_module_keeps_the_exact_slice_of_unrotated_on_grid_frames():
    """With rotate=True a batch whose frames are all unrotated and on the grid is sliced, not
    resampled (``LensFrame.is_integer_crop``); the traced graph decides that per batch too."""
    x = np.zeros((3, 40, 48), dtype=np.float32)
    for k in range(3):  # weights 2 and 1 on one row: centroid (21 + k, 19 + k), angle exactly 0
        x[k, 19 + k, 20 + k], x[k, 19 + k, 23 + k] = 2.0, 1.0
    opts = dict(method="centroid", smooth_sigma=0.0, fraction=0.0)
    crops, frame = canonicalize(x, 21, **opts)
    assert frame.is_integer_crop and frame.angle.tolist() == [0.0] * 3
    assert frame.centre_x.tolist() == [21.0, 22.0, 23.0]
    traced = _traced(LensCanonicalize(21, **opts), lens_batch(2, seed=5)[..., :40, :48])
    got = traced(torch.from_numpy(x[:, None]))[:, 0].numpy()
    for k in range(3):
        top, left = 9 + k, 11 + k
        np.testing.assert_array_equal(got[k], x[k, top : top + 21, left : left + 21])
    np.testing.assert_array_equal(got, crops)


def test_exported_program_has_a_dynamic_batch():
    """torch.export (the AOTInductor front end) captures the module with a symbolic batch."""
    module = LensCanonicalize(40, method="auto")
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(module, (lens_batch(4, seed=1),), dynamic_shapes={"x": {0: batch}})
    run = program.module()
    for n, seed in ((1, 6), (7, 3)):
        x = lens_batch(n, seed)
        np.testing.assert_allclose(run(x).numpy(), module(x).numpy(), rtol=0, atol=1e-5)


def test_clear_errors():
    good = np.zeros((2, 20, 20))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, 1, H, W\).*image\[None\]"):
        detect_roi(np.zeros((20, 20)))
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 20, 20\)"):
        canonicalize(np.zeros((2, 3, 20, 20)), 8)
    bad = good.copy()
    bad[1, 4, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite pixels in sample 1"):
        canonicalize(bad, 8)
    with pytest.raises(ValueError, match="crop size"):
        canonicalize(good, 0)
    with pytest.raises(ValueError, match="unknown centre method 'peak'"):
        detect_roi(good, method="peak")
    with pytest.raises(ValueError, match="unknown padding"):
        LensCanonicalize(8, pad="mirror")
    _, frame = canonicalize(good, 8)
    with pytest.raises(ValueError, match="describes 2 images, the batch has 3"):
        to_canonical(np.zeros((3, 20, 20)), frame)
    with pytest.raises(ValueError, match="made for 20×20 images, got 21×20"):
        to_canonical(np.zeros((2, 21, 20)), frame)
    with pytest.raises(ValueError, match="crops are 9×9"):
        from_canonical(np.zeros((2, 9, 9)), frame)
    with pytest.raises(ValueError, match="centre_x has 3 values for 2 images"):
        principal_angle(good, [1.0, 2.0, 3.0], [1.0, 2.0])


def test_a_deeplense_folder_is_canonicalised_batch_by_batch(tmp_path: Path):
    truth = {}
    for k, name in enumerate(["axion", "cdm", "no_sub"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            cx, cy = 20.0 + 3 * i + k, 24.0 - 2 * i
            np.save(tmp_path / name / f"{i}.npy", (0.1 + ring(48, 48, cx, cy, 9.0))[None])
            truth[(k, i)] = (cx, cy)
    ds = DeepLenseFolder(tmp_path)
    crops, labels, frame = canonicalize_dataset(ds, 32, batch_size=4, rotate=False)
    assert crops.shape == (9, 1, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    tx = np.array([truth[(k, i)][0] for k in range(3) for i in range(3)])
    ty = np.array([truth[(k, i)][1] for k in range(3) for i in range(3)])
    assert np.abs(frame.centre_x - tx).max() <= 0.5 and np.abs(frame.centre_y - ty).max() <= 0.5
    ref = lens_frame(ds.read(range(9))[0], 32, rotate=False)
    np.testing.assert_array_equal(frame.centre_x, ref.centre_x)
