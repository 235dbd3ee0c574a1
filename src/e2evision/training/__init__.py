"""Training on PyTorch Lightning: K-fold cross-validation into self-describing run directories."""

from e2evision.training.runner import run_experiment

__all__ = ["run_experiment"]
