"""Preprocessing as composable modules.

* :class:`ChannelNormalizer` — zero suppression, per-channel scale factors, z-score / scale /
  min-max with statistics from the training split, clipping (the deployable part: it is what
  ``preprocess.json`` describes);
* :mod:`.geometry` — centre crop, pad, resize (run inside the model's forward pass);
* :mod:`.augment` — η/φ flips, φ roll, 90° rotations (training only), and test-time averaging over the flips;
* :mod:`.lensing` — lens region-of-interest crop and rotation to a canonical axis, with inverses.
"""

from e2evision.transforms.augment import (
    RandomFlips,
    RandomPhiRoll,
    RandomRot90,
    TestTimeFlips,
    build_augment,
)
from e2evision.transforms.geometry import CenterCrop, PadTo, Resize, build_geometry, output_size
from e2evision.transforms.lensing import (
    LensCanonicalize,
    LensFrame,
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
from e2evision.transforms.normalize import ChannelNormalizer

__all__ = [
    "CenterCrop",
    "ChannelNormalizer",
    "LensCanonicalize",
    "LensFrame",
    "PadTo",
    "RandomFlips",
    "RandomPhiRoll",
    "RandomRot90",
    "Resize",
    "TestTimeFlips",
    "build_augment",
    "build_geometry",
    "canonical_to_image",
    "canonicalize",
    "canonicalize_dataset",
    "detect_roi",
    "from_canonical",
    "image_to_canonical",
    "lens_frame",
    "output_size",
    "principal_angle",
    "to_canonical",
]
