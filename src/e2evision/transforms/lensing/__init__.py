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

Modules: :mod:`.batch` (input checks), :mod:`.light` (statistics, weights and fits), :mod:`.frame`
(the frame and its detection), :mod:`.resample` (crops, inverses, the module, whole readers).
"""

from e2evision.datasets.batches import iter_batches
from e2evision.transforms.lensing.batch import Array
from e2evision.transforms.lensing.frame import (
    LensFrame,
    RoiResult,
    detect_roi,
    lens_frame,
    principal_angle,
)
from e2evision.transforms.lensing.light import (
    CENTRE_METHODS,
    LightStats,
    light_statistics,
    smooth,
)
from e2evision.transforms.lensing.resample import (
    PAD_MODES,
    LensCanonicalize,
    canonical_to_image,
    canonicalize,
    canonicalize_dataset,
    from_canonical,
    image_to_canonical,
    to_canonical,
)

__all__ = [
    "CENTRE_METHODS",
    "PAD_MODES",
    "Array",
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
