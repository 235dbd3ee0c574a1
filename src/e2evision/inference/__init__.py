"""Scoring new data with a finished run or an exported model (``e2evision predict``).

The run's own preprocessing is reused, never re-implemented: a run is scored through its folds'
training modules (normaliser, geometry, model), an export through its ``preprocess.json``.
See docs/deployment.md.
"""

from e2evision.inference.predict import PredictError, PredictSummary, predict, score_batches
from e2evision.inference.scorers import ExportScorer, ModelContract, RunScorer, open_scorer

__all__ = [
    "ExportScorer",
    "ModelContract",
    "PredictError",
    "PredictSummary",
    "RunScorer",
    "open_scorer",
    "predict",
    "score_batches",
]
