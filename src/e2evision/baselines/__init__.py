"""Physics baselines the image models are measured against (see :mod:`.gbdt`)."""

from e2evision.baselines.gbdt import feature_table, physics_baseline

__all__ = ["feature_table", "physics_baseline"]
