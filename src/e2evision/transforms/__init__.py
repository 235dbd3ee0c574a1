"""Preprocessing as composable modules.

* :class:`ChannelNormalizer` — zero suppression, per-channel scale factors, z-score / scale /
  min-max with statistics from the training split, clipping (the deployable part: it is what
  ``preprocess.json`` describes);
* :mod:`.geometry` — centre crop, pad, resize (run inside the model's forward pass);
* :mod:`.augment` — η/φ flips, φ roll, 90° rotations (training only).
"""

from e2evision.transforms.augment import RandomFlips, RandomPhiRoll, RandomRot90, build_augment
from e2evision.transforms.geometry import CenterCrop, PadTo, Resize, build_geometry, output_size
from e2evision.transforms.normalize import ChannelNormalizer

__all__ = [
    "CenterCrop",
    "ChannelNormalizer",
    "PadTo",
    "RandomFlips",
    "RandomPhiRoll",
    "RandomRot90",
    "Resize",
    "build_augment",
    "build_geometry",
    "output_size",
]
