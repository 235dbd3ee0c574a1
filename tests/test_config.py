"""Configs: YAML validated into typed objects, dotted overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2evision.config import load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / name)
    from e2evision.models import list_models

    assert cfg.model.name in list_models()


def test_overrides_are_typed():
    cfg = load_config(
        ROOT / "configs/egamma_vit.yaml",
        ["train.max_epochs=3", "train.lr=2e-4", "model.kwargs.depth=2", 'data.paths=["a", "b"]'],
    )
    assert cfg.train.max_epochs == 3 and cfg.train.lr == 2e-4
    assert cfg.model.kwargs["depth"] == 2 and cfg.data.paths == ["a", "b"]
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


def test_unknown_key_and_bad_value_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {name: resnet15}\ntrain: {max_epoch: 3}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: invalid config: train\.max_epoch: Extra inputs"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"train\.folds: Input should be greater than or equal to 2"):
        load_config(ROOT / "configs/egamma_vit.yaml", ["train.folds=1"])
    with pytest.raises(ValueError, match="must look like key.path=value"):
        load_config(ROOT / "configs/egamma_vit.yaml", ["train.folds"])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml", ["seed=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_overrides_do_not_edit_the_callers_dict():
    base = {"name": "x", "model": {"name": "resnet15"}, "train": {"lr": 0.1}}
    cfg = load_config(data=base, overrides=["train.lr=0.5", "data.scalars=[pt]"])
    assert cfg.train.lr == 0.5 and cfg.data.scalars == ["pt"]
    assert base == {"name": "x", "model": {"name": "resnet15"}, "train": {"lr": 0.1}}
