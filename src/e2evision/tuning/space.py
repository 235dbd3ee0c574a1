"""The search space a config declares under ``tune:`` (validated like the rest of the config)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ParamSpec(BaseModel):
    """One dimension of the search space."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} parameter needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale parameter needs low > 0")
        return self


class TuneConfig(BaseModel):
    """The ``tune:`` section of an experiment config."""

    model_config = ConfigDict(extra="forbid")
    params: dict[str, ParamSpec] = Field(default_factory=dict, description="dotted config key → range")
    # default: the run's own monitor (fold_mae_mean for regression, else fold_auc_mean: macro AUC
    # for multi-class); the direction follows the metric. See tuning.search.objective_for.
    metric: Literal["fold_auc_mean", "oof_auc", "fold_mae_mean", "oof_mae"] | None = None
    direction: Literal["maximize", "minimize"] | None = None
    pruner: Literal["median", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="random trials before TPE takes over")
    n_warmup_steps: int = Field(1, ge=0, description="epochs before a trial can be pruned")
