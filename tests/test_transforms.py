"""Normalisation and augmentation transforms against direct NumPy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2evision.datasets.base import ChannelStats
from e2evision.transforms import ChannelNormalizer, RandomFlips


def _stats(x: np.ndarray) -> ChannelStats:
    s = ChannelStats(x.shape[1])
    s.update(x[: len(x) // 2])
    s.update(x[len(x) // 2 :])
    return s


def test_zscore_uses_training_statistics_and_clips_symmetrically():
    rng = np.random.default_rng(0)
    x = rng.normal([[[[3.0]], [[-1.0]]]], [[[[2.0]], [[0.5]]]], size=(40, 2, 4, 4)).astype(np.float32)
    norm = ChannelNormalizer(2, "zscore", clip=1.5).fit(_stats(x))
    mean = x.transpose(1, 0, 2, 3).reshape(2, -1).mean(1)
    std = x.transpose(1, 0, 2, 3).reshape(2, -1).std(1)
    expected = np.clip((x - mean[None, :, None, None]) / std[None, :, None, None], -1.5, 1.5)
    np.testing.assert_allclose(norm(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert (norm(torch.from_numpy(x)).numpy() < 0).any()  # negatives kept (seed pipeline's quirk fixed)
    assert norm.to_dict()["centre"] == pytest.approx(mean.tolist(), rel=1e-6)


def test_scale_mode_keeps_zeros_and_zero_suppression():
    x = np.zeros((4, 1, 3, 3), np.float32)
    x[:, 0, 1, 1] = [2.0, 4.0, 6.0, 8.0]
    x[0, 0, 0, 0] = 0.01  # below the threshold
    norm = ChannelNormalizer(1, "scale", zero_suppression=0.05).fit(_stats(x))
    out = norm(torch.from_numpy(x)).numpy()
    assert out[0, 0, 0, 0] == 0.0 and (out[:, 0, 2, 2] == 0).all()
    np.testing.assert_allclose(out[:, 0, 1, 1], x[:, 0, 1, 1] / x.std(), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown normalisation mode"):
        ChannelNormalizer(1, "robust")


def test_flips_are_exact_per_sample_and_training_only():
    torch.manual_seed(0)
    x = torch.randn(64, 2, 5, 7)
    aug = RandomFlips(flip_eta=True, flip_phi=False, p=0.5).train()
    out = aug(x)
    flipped = torch.tensor([torch.equal(o, xi.flip(-2)) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert (flipped ^ same).all() and 10 < int(flipped.sum()) < 54  # each sample one or the other
    assert torch.equal(RandomFlips(True, True, p=1.0).train()(x), x.flip(-1).flip(-2))
    assert torch.equal(RandomFlips(True, True).eval()(x), x)
    assert torch.equal(RandomFlips(True, True, p=0.0).train()(x), x)
    with pytest.raises(ValueError, match="probability"):
        RandomFlips(True, p=1.5)
