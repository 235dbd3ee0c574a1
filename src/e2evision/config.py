"""Experiment configs as data: YAML validated into typed objects, with dotted CLI overrides.

    e2evision train configs/egamma_resnet15.yaml --set train.max_epochs=3 --set model.kwargs.depth=2

Unknown keys are errors (a typo must not silently fall back to a default), and the resolved
config is written into every run directory.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from e2evision.config_files import resolve_config
from e2evision.errors import ConfigError, ConfigNotFoundError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    format: str = "auto"
    paths: list[str] = Field(default_factory=list, description="files or directories; --data overrides")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held-out test split, stratified")
    max_samples: int | None = Field(None, gt=0, description="use a stratified subset of this size")
    max_trainval_samples: int | None = Field(
        None,
        gt=0,
        description="learning curves: train and validate on this many of the samples left after "
        "the test split (stratified; a smaller value takes a subset of a larger one's, "
        "and the test split stays the same)",
    )
    in_memory_limit_gb: float = Field(4.0, ge=0.0, description="load into RAM when the images fit")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="reader options, e.g. {label_column: am, channels: [ecal, hcal], allow_pickle: true}",
    )
    scalars: list[str] = Field(
        default_factory=list,
        description="per-sample scalars fed to the model's head beside the image (pt, ieta, iphi, m0, or "
        "columns of data.features); normalised with statistics of the training folds",
    )
    features: str | None = Field(
        None,
        description="a features table (`e2evision features`) whose columns become scalars; 'auto': DATA/features.csv",
    )

    @field_validator("scalars")
    @classmethod
    def _unique_scalars(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"a scalar is listed twice: {v}")
        return v


class LensRoiConfig(_Strict):
    """Region of interest of a lensing image (transforms.lensing): detected per image, in the graph."""

    size: int = Field(..., ge=8, description="side of the square crop, pixels")
    rotate: bool = Field(True, description="turn the light's principal axis to the canonical direction")
    method: Literal["auto", "circle", "centroid"] = "auto"


class PreprocessConfig(_Strict):
    zero_suppression: float | None = Field(None, ge=0.0, description="|x| below this becomes 0")
    channel_scale: list[float] | None = Field(
        None, description="fixed per-channel factors applied before normalising (E2E: HCAL × 25, ...)"
    )
    per_sample: Literal["none", "sum", "max"] | list[Literal["none", "sum", "max"]] | None = Field(
        None,
        description="per channel (or one for all): divide each sample's channel by its total of "
        "positive values (sum) or its maximum (max), after channel_scale",
    )
    log1p: float | list[float | None] | None = Field(
        None,
        description="per channel (or one for all): x -> sign(x)·log1p(|x|/s) with this scale s "
        "(null: linear), after per_sample and before normalising; for energies",
    )
    normalize: Literal["zscore", "scale", "minmax", "none"] = Field(
        "zscore", description="per channel, statistics from the training folds only"
    )
    clip: float | None = Field(None, gt=0.0, description="clip normalised values to ±clip")
    scalar_normalize: Literal["zscore", "none"] = Field(
        "zscore", description="data.scalars: standardised with the training folds' mean and std, or as they are"
    )
    lens_roi: LensRoiConfig | None = Field(
        None,
        description="lensing: crop a square around the lensed light and turn it to a canonical axis "
        "(before crop/pad/resize, inside the model)",
    )
    crop: tuple[int, int] | None = Field(None, description="centre crop to (H, W), after normalising")
    pad: tuple[int, int] | None = Field(None, description="zero-pad to (H, W), after normalising")
    resize: tuple[int, int] | None = Field(None, description="bilinear resize to (H, W), last")
    target_shift: float | Literal["mean"] | None = Field(
        None, description="regression: train on (y - shift)/scale; 'mean' fits it on the training folds"
    )
    target_scale: float | Literal["std"] | None = Field(
        None, description="regression: train on (y - shift)/scale; 'std' fits it on the training folds"
    )

    @field_validator("log1p")
    @classmethod
    def _positive_log_scale(cls, v: float | list[float | None] | None) -> float | list[float | None] | None:
        scales = v if isinstance(v, list) else [v]
        if any(s is not None and not s > 0 for s in scales):
            raise ValueError("log1p scales must be positive (null keeps a channel linear)")
        return v

    @field_validator("target_scale")
    @classmethod
    def _positive_scale(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, (int, float)) and not v > 0:
            raise ValueError("target_scale must be positive")
        return v


class AugmentConfig(_Strict):
    flip_eta: bool = Field(False, description="flip η (axis -2) with probability p, training only")
    flip_phi: bool = Field(False, description="flip φ (axis -1) with probability p, training only")
    flip_about: Literal["centre", "pixel"] = Field(
        "centre",
        description="mirror about the image's centre line, or about its central pixel (n//2), "
        "which stays in place: for crops centred on a seed crystal (e/γ)",
    )
    roll_phi: bool = Field(False, description="roll φ by a random offset with probability p (full-φ images)")
    rot90: bool = Field(False, description="rotate by a random multiple of 90° (lensing; square images)")
    p: float = Field(0.5, ge=0.0, le=1.0)
    test_time: bool = Field(
        False,
        description="evaluate (validation, test, predict, export) on the mean output over every "
        "mirror image of the flips above: 2^k forward passes per image",
    )

    @model_validator(mode="after")
    def _test_time_needs_flips(self) -> AugmentConfig:
        if self.test_time and not (self.flip_eta or self.flip_phi):
            raise ValueError("augment.test_time averages over the flips: set flip_eta and/or flip_phi")
        return self


class ModelConfig(_Strict):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    init_from: str | None = Field(
        None,
        description="a finished run directory whose fold weights initialise the model: all of them "
        "for the same architecture, the Swin stages, norm and head for a hybrid from a "
        "Swin run (Hybrid EffSwin stage 1)",
    )
    init_fold: int = Field(0, ge=0, description="which fold of init_from")


class StageConfig(_Strict):
    """One stage of staged training: which parameters train, and their learning-rate factors.

    Patterns are shell-style and match a model's named parameter groups (``parameter_groups()``,
    e.g. the hybrid's ``cnn``, ``proj``, ``transformer``, ``head``) or dotted parameter names
    (``head.*``). Parameters matched by no ``train`` pattern are frozen during the stage.
    """

    epochs: int = Field(..., ge=1, description="length of the stage; the last stage runs to max_epochs")
    train: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    lr_scale: dict[str, float] = Field(
        default_factory=dict, description="pattern -> factor on train.lr; first match wins, default 1"
    )

    @field_validator("lr_scale")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not x > 0]
        if bad:
            raise ValueError(f"lr_scale factors must be positive (bad: {', '.join(bad)})")
        return v


LoggerName = Literal["csv", "tensorboard", "mlflow"]


class TrainConfig(_Strict):
    folds: int = Field(5, ge=2)
    max_epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1, description="global batch size: split over the processes under DDP")
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    step_size: int = Field(10, ge=1, description="epochs between halvings for scheduler=step")
    early_stopping_patience: int | None = Field(5, ge=1)
    loss: Literal["auto", "bce", "cross_entropy", "mae", "huber", "mse"] = Field(
        "auto", description="auto: bce (binary), cross_entropy (multiclass), mae (regression)"
    )
    huber_delta: float = Field(1.0, gt=0.0, description="huber loss threshold, in scaled target units")
    stages: list[StageConfig] = Field(default_factory=list, description="staged training (freeze/unfreeze)")
    checkpoint_every_n_steps: int | None = Field(
        1000, ge=1, description="also checkpoint every N optimizer steps (mid-epoch resume); None: epochs only"
    )
    num_workers: int = Field(0, ge=0)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(1, ge=1, description="nodes of a multi-node DDP job (SLURM, torchrun)")
    strategy: str = Field("auto", description="Lightning strategy; auto: DDP when more than one process")
    precision: str | None = Field(
        None,
        description="None: on a GPU bf16-mixed for convolutional models with >= 0.1 "
        "GFLOP per image, else 32-true with TF32 (measured); "
        "32-true on CPU",
    )
    channels_last: bool | None = Field(
        None, description="NHWC images and weights; None: when convolutions take most of the forward FLOPs"
    )
    compile: bool = Field(False, description="torch.compile the model (minutes to start; for long GPU runs)")
    matmul_precision: Literal["highest", "high", "medium"] | None = Field(
        None, description="torch.set_float32_matmul_precision; None: 'high' (TF32) on GPU, untouched on CPU"
    )
    not_learning_epochs: int | None = Field(
        3,
        ge=1,
        description="warn (log, run.json, metrics.json, report) when the training loss has not "
        "fallen after this many epochs, or validation scores collapse; None: never",
    )
    deterministic: bool = True
    loggers: list[LoggerName] = Field(default_factory=lambda: ["csv"], min_length=1)
    progress: bool = True

    @model_validator(mode="after")
    def _stages_fit(self) -> TrainConfig:
        start = 0
        for i, stage in enumerate(self.stages[:-1]):
            start += stage.epochs
            if start >= self.max_epochs:
                raise ValueError(
                    f"stages: stage {i + 2} would start at epoch {start} but max_epochs is {self.max_epochs}"
                )
        return self


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


class ExperimentConfig(_Strict):
    name: str
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig | None = Field(None, description="search space for `e2evision tune` (ignored by train)")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("name must be a non-empty plain word (it names the run directory)")
        return v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (plain YAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} appears twice (first on line {seen[key] + 1}); keep one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value parsed as YAML, so 3 → int, [1,2] → list)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r} has an empty key")
    if not raw.strip():
        return parts, None
    try:
        return parts, yaml.load(raw, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        problem = str(err).splitlines()[0]
        raise ConfigError(
            f"--set {key.strip()}: the value {raw!r} is not valid YAML ({problem}); "
            f"quote it, e.g. --set {key.strip()}='\"...\"'"
        ) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return data


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None, data: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Read YAML (or take a dict), apply overrides, validate. Errors name the file and the field."""
    raw: dict[str, Any] = copy.deepcopy(dict(data or {}))  # overrides must not edit the caller's dict
    source = "<dict>"
    if path is not None:
        path = resolve_config(path)  # a file, or a packaged config's name (e2evision configs)
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
            loaded = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except FileNotFoundError:
            raise ConfigNotFoundError(f"config file not found: {path}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{path}:{where}: not valid YAML: {problem}; fix the file") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(loaded).__name__}")
        raw = {**loaded, **raw}
    raw = apply_overrides(raw, list(overrides or []))
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{source}: invalid config: {problems}") from None
