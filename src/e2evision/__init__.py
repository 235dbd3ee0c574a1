"""e2evision: end-to-end deep learning on particle-physics and astrophysics images."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("e2evision")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
