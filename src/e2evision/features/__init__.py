"""Hand-crafted physics features of images, computed per image and stored beside the data.

* :mod:`.lensing` — strong lenses: ring area, bright peaks, Einstein radius, light asymmetry
  (definitions in ``docs/lensing.md``).
"""

from e2evision.features.lensing import (
    FEATURE_NAMES,
    dataset_features,
    lens_features,
    read_features,
    write_features,
)

__all__ = ["FEATURE_NAMES", "dataset_features", "lens_features", "read_features", "write_features"]
