"""Experiment configs as data: YAML validated into typed objects, with dotted CLI overrides.

    e2evision train configs/egamma_resnet15.yaml --set train.max_epochs=3 --set model.kwargs.depth=2

Unknown keys are errors (a typo must not silently fall back to a default), and the resolved
config is written into every run directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    format: str = "auto"
    paths: list[str] = Field(default_factory=list, description="files or directories; --data overrides")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held-out test split, stratified")
    max_samples: int | None = Field(None, gt=0, description="use a stratified subset of this size")
    in_memory_limit_gb: float = Field(4.0, ge=0.0, description="load into RAM when the images fit")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="reader options, e.g. {label_column: am, channels: [ecal, hcal], allow_pickle: true}",
    )


class PreprocessConfig(_Strict):
    zero_suppression: float | None = Field(None, ge=0.0, description="|x| below this becomes 0")
    channel_scale: list[float] | None = Field(
        None, description="fixed per-channel factors applied before normalising (E2E: HCAL × 25, ...)"
    )
    normalize: Literal["zscore", "scale", "minmax", "none"] = Field(
        "zscore", description="per channel, statistics from the training folds only"
    )
    clip: float | None = Field(None, gt=0.0, description="clip normalised values to ±clip")
    crop: tuple[int, int] | None = Field(None, description="centre crop to (H, W), after normalising")
    pad: tuple[int, int] | None = Field(None, description="zero-pad to (H, W), after normalising")
    resize: tuple[int, int] | None = Field(None, description="bilinear resize to (H, W), last")


class AugmentConfig(_Strict):
    flip_eta: bool = Field(False, description="flip η (axis -2) with probability p, training only")
    flip_phi: bool = Field(False, description="flip φ (axis -1) with probability p, training only")
    roll_phi: bool = Field(False, description="roll φ by a random offset with probability p (full-φ images)")
    rot90: bool = Field(False, description="rotate by a random multiple of 90° (lensing; square images)")
    p: float = Field(0.5, ge=0.0, le=1.0)


class ModelConfig(_Strict):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Strict):
    folds: int = Field(5, ge=2)
    max_epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    step_size: int = Field(10, ge=1, description="epochs between halvings for scheduler=step")
    early_stopping_patience: int | None = Field(5, ge=1)
    num_workers: int = Field(0, ge=0)
    accelerator: str = "auto"
    devices: int | str = "auto"
    precision: str | None = Field(None, description="None: bf16-mixed on GPU, 32-true on CPU")
    deterministic: bool = True
    progress: bool = True


class ExperimentConfig(_Strict):
    name: str
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("name must be a non-empty plain word (it names the run directory)")
        return v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value parsed as YAML, so 3 → int, [1,2] → list)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ValueError(f"override {item!r} has an empty key")
    return parts, yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return data


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read YAML (or take a dict), apply overrides, validate. Errors name the file and the field."""
    raw: dict[str, Any] = dict(data or {})
    source = "<dict>"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config must be a YAML mapping, got {type(loaded).__name__}")
        raw = {**loaded, **raw}
    raw = apply_overrides(raw, list(overrides or []))
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{source}: invalid config: {problems}") from None
