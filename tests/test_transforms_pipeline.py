"""Scale factors, min-max, geometry and the new augmentations against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2evision.datasets.base import ChannelStats
from e2evision.transforms import (
    CenterCrop,
    ChannelNormalizer,
    PadTo,
    RandomPhiRoll,
    RandomRot90,
    Resize,
    build_augment,
    build_geometry,
    output_size,
)


def _fit(norm: ChannelNormalizer, x: np.ndarray) -> ChannelNormalizer:
    stats = ChannelStats(x.shape[1])
    stats.update(norm.raw_transform(x))
    return norm.fit(stats)


def test_zero_suppression_then_scale_factors_then_minmax():
    rng = np.random.default_rng(0)
    x = rng.exponential(1.0, (16, 3, 6, 6)).astype(np.float32)
    x[x < 0.3] = 0.0005  # tiny values the E2E threshold (1e-3) removes
    k = [1.0, 0.1, 25.0]
    norm = _fit(ChannelNormalizer(3, "minmax", zero_suppression=1e-3, channel_scale=k), x)
    ref = np.where(np.abs(x) < 1e-3, 0, x) * np.array(k, np.float32)[None, :, None, None]
    lo = ref.min(axis=(0, 2, 3), keepdims=True)
    hi = ref.max(axis=(0, 2, 3), keepdims=True)
    out = norm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, (ref - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert out.min() == pytest.approx(0.0, abs=1e-6) and out.max() == pytest.approx(1.0, rel=1e-6)
    d = norm.to_dict()
    assert d["channel_scale"] == pytest.approx(k) and d["mode"] == "minmax"
    assert d["centre"] == pytest.approx(lo.ravel().tolist(), rel=1e-6)
    # test data is mapped with the training statistics, not its own (a seed-pipeline quirk fixed)
    assert norm(torch.from_numpy(x * 2)).numpy().max() > 1.5
    with pytest.raises(ValueError, match="channel_scale has 2 factors for 3 channels"):
        ChannelNormalizer(3, channel_scale=[1.0, 2.0])


def test_geometry_crop_pad_resize():
    x = torch.arange(2 * 1 * 125 * 125, dtype=torch.float32).reshape(2, 1, 125, 125)
    crop = CenterCrop(64)(x)
    assert crop.shape[-2:] == (64, 64) and torch.equal(crop, x[..., 30:94, 30:94])
    pad = PadTo((128, 128))(x)
    assert pad.shape[-2:] == (128, 128) and torch.equal(pad[..., 1:126, 1:126], x)
    assert pad[..., 0, :].abs().sum() == 0 and pad[..., -2:, :].abs().sum() == 0
    # a constant image stays constant under resize; a linear ramp stays a ramp
    const = torch.full((1, 2, 125, 125), 3.5)
    assert torch.allclose(Resize(64)(const), torch.full((1, 2, 64, 64), 3.5))
    up = Resize((250, 250))(x[:1])
    assert up.shape[-2:] == (250, 250)
    geo = build_geometry(resize=(64, 64), crop=(100, 100))
    assert geo(x).shape[-2:] == (64, 64) == output_size((125, 125), (64, 64), (100, 100), None)
    assert isinstance(build_geometry(), torch.nn.Identity)
    with pytest.raises(ValueError, match="cannot crop 125×125 images to 128×128"):
        CenterCrop(128)(x)


def test_phi_roll_is_a_per_sample_cyclic_shift():
    torch.manual_seed(1)
    x = torch.randn(40, 2, 5, 9)
    out = RandomPhiRoll(p=1.0).train()(x)
    shifts = []
    for o, xi in zip(out, x):
        match = [s for s in range(9) if torch.equal(o, torch.roll(xi, s, dims=-1))]
        assert match, "every sample is a cyclic roll of itself"
        shifts.append(match[0])
    assert len(set(shifts)) > 4  # shifts differ per sample
    assert torch.equal(RandomPhiRoll(p=1.0).eval()(x), x)
    bounded = RandomPhiRoll(p=1.0, max_shift=1).train()(x)
    for o, xi in zip(bounded, x):
        assert any(torch.equal(o, torch.roll(xi, s, dims=-1)) for s in (-1, 0, 1))


def test_rot90_covers_the_four_rotations_and_needs_square_images():
    torch.manual_seed(2)
    x = torch.randn(64, 1, 6, 6)
    out = RandomRot90().train()(x)
    ks = []
    for o, xi in zip(out, x):
        k = [r for r in range(4) if torch.equal(o, torch.rot90(xi, r, dims=(-2, -1)))]
        assert len(k) == 1
        ks.append(k[0])
    assert set(ks) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="square images"):
        RandomRot90().train()(torch.zeros(2, 1, 4, 6))
    aug = build_augment(flip_eta=True, flip_phi=True, rot90=True).train()
    assert aug(x).shape == x.shape and not torch.equal(aug(x), x)
    assert torch.equal(aug.eval()(x), x)
