"""Batch augmentation with the detector's symmetries, applied on the accelerator per sample.

For calorimeter images (axis -2 = η, axis -1 = φ) flipping η (z → −z) and φ (charge conjugation
with the field) are symmetries of the physics, so they enlarge the training set without changing
what the classes mean. φ rolls suit images spanning the full φ range; 90° rotations (with both
flips, the dihedral group) suit lensing images, whose sky has no preferred orientation.
"""

from __future__ import annotations

import torch
from torch import nn

FLIP_ABOUT = ("centre", "pixel")


def mirror(x: torch.Tensor, dim: int, about: str = "centre") -> torch.Tensor:
    """``x`` mirrored along ``dim``: about the centre line, or about the central pixel ``n//2``."""
    flipped = x.flip(dim)
    if about == "pixel" and x.shape[dim] % 2 == 0:
        flipped = flipped.roll(1, dim)  # i → n−1−i → n−i (mod n): pixel n//2 stays
    return flipped


class RandomFlips(nn.Module):
    """Flip each sample independently along η and/or φ with probability ``p`` (training only).

    ``about="centre"`` mirrors about the image's centre line (pixel ``i → n−1−i``). ``"pixel"``
    mirrors about the central pixel ``n//2``, which stays where it is (``i → n−i``, the unpaired
    edge row kept): the symmetry of a crop centred on its seed crystal, as the 32 × 32 e/γ crops
    are (seed at 16, 16). Mirrored about the centre line such a crop's seed moves by one pixel,
    across a patch border for a ViT with 4 × 4 patches, which then learned nothing (docs/training.md).
    For odd sizes the two are the same.
    """

    def __init__(self, flip_eta: bool = False, flip_phi: bool = False, p: float = 0.5, about: str = "centre") -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        if about not in FLIP_ABOUT:
            raise ValueError(f"augment.flip_about must be one of {', '.join(FLIP_ABOUT)}, got {about!r}")
        self.dims = [d for d, on in ((-2, flip_eta), (-1, flip_phi)) if on]
        self.p = p
        self.about = about

    def mirror(self, x: torch.Tensor, d: int) -> torch.Tensor:
        return mirror(x, d, self.about)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.dims or self.p == 0.0:
            return x
        for d in self.dims:
            mask = torch.rand(x.shape[0], device=x.device) < self.p
            x = torch.where(mask.view(-1, *([1] * (x.ndim - 1))), self.mirror(x, d), x)
        return x


class RandomPhiRoll(nn.Module):
    """Roll each sample by a random number of pixels along φ (axis -1): φ is periodic in the detector.

    Only meaningful for images that span the full φ range or whose content sits away from the
    edges; jet images centred on the jet axis are usually augmented with flips instead.
    """

    def __init__(self, p: float = 0.5, max_shift: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"roll probability must be in [0, 1], got {p}")
        self.p = p
        self.max_shift = max_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n, w = x.shape[0], x.shape[-1]
        limit = w if self.max_shift is None else min(w, self.max_shift + 1)
        shift = torch.randint(0, limit, (n,), device=x.device)
        if self.max_shift is not None:
            shift = shift * torch.where(torch.rand(n, device=x.device) < 0.5, 1, -1)
        shift = torch.where(torch.rand(n, device=x.device) < self.p, shift, torch.zeros_like(shift))
        cols = (torch.arange(w, device=x.device).view(1, w) - shift.view(n, 1)) % w  # out[j] = x[j - s]
        index = cols.view(n, *([1] * (x.ndim - 2)), w).expand_as(x)
        return torch.gather(x, -1, index)


class RandomRot90(nn.Module):
    """Rotate each square image by a random multiple of 90° (lensing: the sky has no preferred axis)."""

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"rotation probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"90° rotations need square images, got {tuple(x.shape[-2:])}")
        n = x.shape[0]
        k = torch.randint(0, 4, (n,), device=x.device)
        k = torch.where(torch.rand(n, device=x.device) < self.p, k, torch.zeros_like(k))
        out = x
        view = (-1, *([1] * (x.ndim - 1)))
        for r in (1, 2, 3):
            out = torch.where((k == r).view(view), torch.rot90(x, r, dims=(-2, -1)), out)
        return out


class TestTimeFlips(nn.Module):
    """Evaluate on every mirror image the training flips produce and average the outputs.

    A network trained with random flips sees each shower in up to four orientations but is asked
    for one; the mean output over all of them is a cheap ensemble (on e/γ crops +0.004 test AUC for
    ResNet-15 and +0.011 for a ViT, docs/training.md). ``views`` stacks the ``2^k`` mirror images
    along the batch axis, so the network runs once on ``2^k · N`` images; ``average`` folds its
    outputs back to ``N``. No parameters or buffers: saved weights do not change. Runs in eval mode
    only (validation, test, prediction, export); training keeps its random flips.
    """

    def __init__(self, flip_eta: bool = False, flip_phi: bool = False, about: str = "centre") -> None:
        super().__init__()
        if about not in FLIP_ABOUT:
            raise ValueError(f"augment.flip_about must be one of {', '.join(FLIP_ABOUT)}, got {about!r}")
        self.dims = [d for d, on in ((-2, flip_eta), (-1, flip_phi)) if on]
        if not self.dims:
            raise ValueError("test-time flips need flip_eta or flip_phi")
        self.about = about

    @property
    def n_views(self) -> int:
        return 2 ** len(self.dims)

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """``(2^k · N, ...)``: the identity first, then each subset of the flips."""
        out = [x]
        for d in self.dims:
            out = out + [mirror(v, d, self.about) for v in out]
        return torch.cat(out, dim=0)

    def average(self, out: torch.Tensor, n: int) -> torch.Tensor:
        """The mean over the views of outputs laid out as ``views`` laid out the inputs."""
        return out.reshape(self.n_views, n, *out.shape[1:]).mean(dim=0)


def build_augment(
    flip_eta: bool = False,
    flip_phi: bool = False,
    p: float = 0.5,
    roll_phi: bool = False,
    rot90: bool = False,
    flip_about: str = "centre",
) -> nn.Module:
    """The training-time augmentation a config asks for, as one module (identity in eval mode)."""
    steps: list[nn.Module] = []
    if flip_eta or flip_phi:
        steps.append(RandomFlips(flip_eta, flip_phi, p, about=flip_about))
    if roll_phi:
        steps.append(RandomPhiRoll(p))
    if rot90:
        steps.append(RandomRot90())
    return nn.Sequential(*steps) if steps else nn.Identity()
