"""A missing optional dependency names the extra that provides it: modules hidden in sys.modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from e2evision.cli import app
from e2evision.utils.extras import MissingExtraError

ROOT = Path(__file__).resolve().parents[1]


def test_onnx_export_names_the_export_extra(monkeypatch, tmp_path):
    from e2evision.export import ExportError
    from e2evision.export.exporters import stage_verify_publish

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    want = r"^ONNX export needs `pip install 'e2evision\[export\]'` \(.*onnxscript"
    with pytest.raises(ExportError, match=want):
        stage_verify_publish(
            "onnx",
            None,
            (),
            ["image"],
            ["prob"],  # type: ignore[arg-type]
            lambda rows: {},
            {},
            1,
            tmp_path / "m.onnx",
            {},
            "resnet15",
            "rows",
            1e-5,
            1e-5,
        )
    assert list(tmp_path.iterdir()) == []  # nothing staged


def test_tune_names_the_tune_extra(monkeypatch, egamma_pair, tmp_path):
    from e2evision.config import load_config
    from e2evision.tuning import run_study

    monkeypatch.setitem(sys.modules, "optuna", None)
    p, e, _, _ = egamma_pair
    space = "tune.params={train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}}"
    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml", [f"data.paths=[{p}, {e}]", space])
    tune = r"^Hyper-parameter search \(`e2evision tune`\) needs `pip install 'e2evision\[tune\]'`"
    with pytest.raises(MissingExtraError, match=tune):
        run_study(cfg, "s", 1, out_dir=tmp_path / "study")
    config = str(ROOT / "configs/egamma_resnet15.yaml")
    res = CliRunner().invoke(
        app,
        [
            "tune",
            config,
            "--trials",
            "1",
            "--study",
            "s",
            "--out",
            str(tmp_path / "s2"),
            "--data",
            str(p),
            "--data",
            str(e),
            "--set",
            space,
        ],
    )
    assert res.exit_code == 2 and "pip install 'e2evision[tune]'" in res.output


def test_simulators_and_root_output_name_their_extras(monkeypatch, tmp_path):
    from e2evision.inference.writers import open_sink
    from e2evision.simulate import lensing
    from e2evision.simulate.jets import require_simulators

    monkeypatch.setitem(sys.modules, "lenstronomy", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'e2evision\[sim\]'"):
        lensing._require_sim()
    monkeypatch.setitem(sys.modules, "pythia8mc", None)
    with pytest.raises(MissingExtraError, match=r"pythia8mc.*pip install 'e2evision\[sim\]'"):
        require_simulators()
    monkeypatch.setitem(sys.modules, "uproot", None)
    root = r"^Writing a ROOT file needs `pip install 'e2evision\[root\]'`"
    with pytest.raises(MissingExtraError, match=root):
        open_sink(tmp_path / "p.root")
