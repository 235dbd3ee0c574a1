"""Physics-facing metrics: ROC-AUC with confidence intervals (more in later issues)."""

from e2evision.metrics.classification import auc_rank, bootstrap_auc, roc_auc

__all__ = ["auc_rank", "bootstrap_auc", "roc_auc"]
