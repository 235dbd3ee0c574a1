"""Every shipped config validates and builds its model for its dataset's geometry (on the meta device)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from e2evision.config import load_config
from e2evision.models import count_parameters
from e2evision.training.build import build_module
from e2evision.training.module import StagePlan

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

#: file prefix -> (reader format, (C, H, W), task, classes) of the public dataset (docs/datasets.md)
DATASETS = {
    "egamma": ("egamma", (2, 32, 32), "binary", 2),
    "quark_gluon": ("quark-gluon", (3, 125, 125), "binary", 2),
    "top_mass": ("top-mass", (8, 125, 125), "regression", 0),
    "top": ("top", (8, 125, 125), "binary", 2),
    "lensing": ("deeplense", (1, 150, 150), "multiclass", 3),
}
FAMILIES = ("resnet15", "vit", "vit_sd", "swin", "coatnet", "hybrid")


def _dataset(path: Path) -> str:
    # longest prefix first: top_mass_* must not be read as top_*
    return next(d for d in sorted(DATASETS, key=len, reverse=True) if path.stem.startswith(d + "_"))


def test_one_config_per_dataset_and_model_family():
    names = {p.stem for p in CONFIGS}
    missing = [f"{d}_{f}" for d in DATASETS for f in FAMILIES if f"{d}_{f}" not in names]
    assert not missing, f"configs/ lacks {missing}"
    run_names = [load_config(p).name for p in CONFIGS]
    assert len(set(run_names)) == len(run_names), "two configs would write the same runs/NAME"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_builds_its_model(path: Path):
    cfg = load_config(path)
    fmt, shape, task, n_classes = DATASETS[_dataset(path)]
    assert cfg.data.format == fmt, f"{path.name}: data.format {cfg.data.format!r}, expected {fmt!r}"
    scale = cfg.preprocess.channel_scale
    assert scale is None or len(scale) == shape[0], f"{path.name}: channel_scale needs {shape[0]} factors"
    if fmt in ("quark-gluon",):
        assert scale == [1, 1, 25], "quark/gluon: the E2E HCAL × 25"
    if fmt in ("top", "top-mass"):
        assert scale == [0.01, 0.1, 0.05, 0.1, 1, 1, 1, 1], "top: the E2E pT/d0/dz/ECAL factors"
    # full module: normaliser, geometry, model, stage plan; on the meta device (no memory) unless a
    # lens ROI, which looks at the pixel values, is part of the geometry
    with torch.device("cpu" if cfg.preprocess.lens_roi else "meta"):
        module = build_module(cfg, shape, task, max(n_classes, 2))
        scalars = torch.zeros(2, len(cfg.data.scalars)) if cfg.data.scalars else None
        out = module.raw(torch.zeros(2, *shape), scalars)
    assert module.num_scalars == len(cfg.data.scalars)
    assert count_parameters(module.model) > 0
    assert tuple(out.shape) == ((2, n_classes) if task == "multiclass" else (2,))
    assert module.loss_name == {"binary": "bce", "multiclass": "cross_entropy", "regression": "mae"}[task]
    if cfg.train.stages:  # every stage freezes something and trains something
        plan: StagePlan = module.stage_plan
        names = [n for n, _ in module.model.named_parameters()]
        for i in range(len(cfg.train.stages)):
            trained = sum(plan.trainable(n, i) for n in names)
            assert 0 < trained <= len(names), f"{path.name}: stage {i} trains {trained} parameters"
        assert sum(plan.trainable(n, 0) for n in names) < len(names)


def test_stage_pattern_that_matches_nothing_is_an_error_naming_it():
    cfg = load_config(
        ROOT / "configs/quark_gluon_hybrid.yaml", ["train.stages=[{epochs: 2, train: [cnnn]}, {epochs: 3}]"]
    )
    with (
        torch.device("meta"),
        pytest.raises(
            ValueError,
            match=r"train\.stages\[0\]\.train: pattern 'cnnn' matches no "
            r"parameter.*groups: cnn, head, proj, transformer",
        ),
    ):
        build_module(cfg, (3, 125, 125), "binary")
    with pytest.raises(ValueError, match="stage 2 would start at epoch 30 but max_epochs is 30"):
        load_config(ROOT / "configs/quark_gluon_hybrid.yaml", ["train.stages=[{epochs: 30}, {epochs: 1}]"])


def test_configs_are_packaged_and_usable_by_name(tmp_path, monkeypatch):
    """The package's configs are the checkout's configs/ files; a name works wherever a path does."""
    from typer.testing import CliRunner

    from e2evision.cli import app
    from e2evision.config_files import packaged_configs, resolve_config

    shipped = packaged_configs()
    assert {n: p.read_bytes() for n, p in shipped.items()} == {p.stem: p.read_bytes() for p in CONFIGS}
    monkeypatch.chdir(tmp_path)  # no configs/ here: the name resolves inside the package
    assert resolve_config("egamma_resnet15") == resolve_config("egamma_resnet15.yaml") == shipped["egamma_resnet15"]
    assert (
        load_config("egamma_resnet15").model_dump() == load_config(ROOT / "configs/egamma_resnet15.yaml").model_dump()
    )
    with pytest.raises(
        FileNotFoundError, match=r"config file not found: nope \(neither a file nor a packaged config name"
    ):
        load_config("nope")
    with pytest.raises(FileNotFoundError, match="config file not found: sub/nope.yaml"):
        load_config("sub/nope.yaml")
    res = CliRunner().invoke(app, ["configs", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in __import__("json").loads(res.output)}
    assert set(rows) == set(shipped)
    assert rows["top_mass_resnet15"]["format"] == "top-mass" and rows["top_mass_resnet15"]["model"] == "resnet15"
