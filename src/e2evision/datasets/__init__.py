"""Readers for the community's public formats, behind one interface (:class:`ImageDataset`).

=====================  ===========================================================  =========
format name(s)         files                                                        reader
=====================  ===========================================================  =========
egamma                 CMS electron/photon crops, HDF5 ``X``/``y``                   EgammaHDF5
quark-gluon-hdf5       quark/gluon HDF5 variant ``X_jets``/``m0``/``pt``/``y``       QuarkGluonHDF5
quark-gluon, qg        quark/gluon Parquet ``X_jets`` 3×125×125                      JetParquet
top                    boosted top vs QCD Parquet ``X_jets`` 8×125×125               JetParquet
top-mass               top-mass regression Parquet ``X_jet`` + ``m``                 JetParquet
deeplense              DeepLense folders ``<class>/*.npy``                           DeepLenseFolder
store                  e2evision's sparse training store (``e2evision convert``)     TrainingStore
=====================  ===========================================================  =========

Importing a reader's module registers it, with the :class:`Sniffer` that recognises its files
(as importing a model's module registers the model).
"""

from e2evision.datasets.base import ChannelStats, DatasetError, ImageDataset
from e2evision.datasets.deeplense import DeepLenseFolder
from e2evision.datasets.egamma import EgammaHDF5, HDF5Images, QuarkGluonHDF5
from e2evision.datasets.parquet_jets import JetParquet
from e2evision.datasets.registry import (
    Sniffer,
    detect_format,
    list_formats,
    open_dataset,
    register_reader,
)
from e2evision.datasets.store import TrainingStore

__all__ = [
    "ChannelStats",
    "DatasetError",
    "DeepLenseFolder",
    "EgammaHDF5",
    "HDF5Images",
    "ImageDataset",
    "JetParquet",
    "QuarkGluonHDF5",
    "Sniffer",
    "TrainingStore",
    "detect_format",
    "list_formats",
    "open_dataset",
    "register_reader",
]
