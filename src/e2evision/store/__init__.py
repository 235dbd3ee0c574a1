"""Writing the sparse, chunked training store (``e2evision convert``; see :mod:`.format`).

The store is read like any other data set: :class:`TrainingStore` lives with the readers
(:mod:`e2evision.datasets.store`) and is re-exported here.
"""

from e2evision.datasets.store import TrainingStore, decode_sparse
from e2evision.store.format import encode_sparse, write_store

__all__ = ["TrainingStore", "decode_sparse", "encode_sparse", "write_store"]
