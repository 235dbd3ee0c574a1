"""Lightning loggers named in ``train.loggers``: CSV always works, TensorBoard and MLflow when installed.

Asking for a logger whose package is missing is an error before any training starts, naming
the package and how to install it, rather than a traceback from deep inside Lightning after the
first fold.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from e2evision.errors import MissingDependencyError

#: logger name -> (importable modules, any of which is enough; what to install)
REQUIREMENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "csv": ((), ""),
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "mlflow": (("mlflow",), "pip install mlflow"),
}


MissingLoggerError = MissingDependencyError
"""A logger was asked for in the config but its package is not installed (the old name)."""


def check_loggers(names: list[str]) -> None:
    """Raise :class:`MissingLoggerError` naming the first logger whose package is not installed."""
    for name in names:
        if name not in REQUIREMENTS:
            raise ValueError(f"train.loggers: unknown logger {name!r}; choose from {', '.join(REQUIREMENTS)}")
        modules, install = REQUIREMENTS[name]
        if modules and not any(importlib.util.find_spec(m) is not None for m in modules):
            raise MissingLoggerError(
                f"train.loggers: {name!r} needs the {modules[0]!r} package, which is not installed "
                f"({install}, or remove {name!r} from train.loggers)"
            )


def build_loggers(names: list[str], fold_dir: Path, *, run_name: str, fold: int, run_dir: Path) -> list[Any]:
    """One Lightning logger per name, writing under ``fold_dir/logs`` (MLflow: ``run_dir/mlruns``
    unless ``MLFLOW_TRACKING_URI`` is set)."""
    check_loggers(names)
    out: list[Any] = []
    for name in dict.fromkeys(names):  # each once, in the order given
        if name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            out.append(CSVLogger(fold_dir, name="logs", version=""))
        elif name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            out.append(TensorBoardLogger(fold_dir / "logs", name="tensorboard", version=""))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir.resolve() / "mlruns").as_uri()
            out.append(MLFlowLogger(experiment_name=run_name, run_name=f"{run_name}/fold_{fold}", tracking_uri=uri))
    return out
