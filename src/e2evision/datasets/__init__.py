"""Readers for the community's public formats, behind one interface (:class:`ImageDataset`)."""

from e2evision.datasets.base import ChannelStats, DatasetError, ImageDataset
from e2evision.datasets.egamma import EgammaHDF5
from e2evision.datasets.registry import detect_format, list_formats, open_dataset, register_reader

register_reader("egamma", "egamma-hdf5")(EgammaHDF5)

__all__ = [
    "ChannelStats",
    "DatasetError",
    "EgammaHDF5",
    "ImageDataset",
    "detect_format",
    "list_formats",
    "open_dataset",
    "register_reader",
]
