"""Physics-facing metrics: ROC-AUC with bootstrap and DeLong intervals, DeLong's paired test,
background rejection at fixed signal efficiency, AUC in bins, multi-class and regression metrics.

Conventions: label 1 is signal, 0 background; higher scores are more signal-like. See
docs/metrics.md for the formulas.
"""

from e2evision.metrics.classification import auc_rank, bootstrap_auc, bootstrap_metric, roc_auc
from e2evision.metrics.delong import delong_auc_ci, delong_covariance, delong_test
from e2evision.metrics.multiclass import confusion_matrix, one_vs_rest_auc
from e2evision.metrics.physics import (
    auc_in_bins,
    background_rejection,
    bin_edges,
    bin_index,
    roc_points,
)
from e2evision.metrics.regression import regression_in_bins, regression_summary
from e2evision.metrics.summary import SIGNAL_EFFICIENCIES, task_metrics

__all__ = [
    "SIGNAL_EFFICIENCIES",
    "auc_in_bins",
    "auc_rank",
    "background_rejection",
    "bin_edges",
    "bin_index",
    "bootstrap_auc",
    "bootstrap_metric",
    "confusion_matrix",
    "delong_auc_ci",
    "delong_covariance",
    "delong_test",
    "one_vs_rest_auc",
    "regression_in_bins",
    "regression_summary",
    "roc_auc",
    "roc_points",
    "task_metrics",
]
