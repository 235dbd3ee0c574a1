"""Ensembles of finished runs from their out-of-fold predictions (see :mod:`.combine`)."""

from e2evision.ensemble.combine import METHODS, Combiner, build_ensemble, load_combiner, load_member

__all__ = ["METHODS", "Combiner", "build_ensemble", "load_combiner", "load_member"]
