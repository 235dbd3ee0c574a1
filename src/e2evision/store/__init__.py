"""The sparse, chunked training store that ``e2evision convert`` writes (see :mod:`.format`)."""

from e2evision.store.format import TrainingStore, decode_sparse, encode_sparse, write_store

__all__ = ["TrainingStore", "decode_sparse", "encode_sparse", "write_store"]
