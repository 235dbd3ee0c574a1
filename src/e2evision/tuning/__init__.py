"""Bayesian hyper-parameter search (Optuna TPE) over a config's ``tune:`` space."""

from e2evision.tuning.space import ParamSpec, TuneConfig

__all__ = ["ParamSpec", "TuneConfig", "run_study"]


def __getattr__(name: str):  # optuna is imported only when a study runs
    if name == "run_study":
        from e2evision.tuning.search import run_study

        return run_study
    raise AttributeError(name)
