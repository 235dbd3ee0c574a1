"""The command line, end to end at tiny size: simulate → inspect → train → report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from e2evision.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_models_json_lists_name_and_parameters():
    result = invoke("models", "--json", "--in-chans", "3", "--img-size", "125")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"resnet15", "vit_tiny"} <= rows.keys()
    assert rows["resnet15"]["params"] > 0 and rows["resnet15"]["input"] == [3, 125, 125]
    plain = invoke("models")
    assert "resnet15" in plain.stdout and "vit_small" in plain.stdout


def test_inspect_json_on_public_schema_files(egamma_pair):
    p, e, x, _ = egamma_pair
    result = invoke("inspect", p, e, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "egamma-hdf5" and info["n_samples"] == 120
    assert info["image_shape"] == [2, 32, 32] and info["labels"] == {"0": 60, "1": 60}
    assert info["channel_stats"]["ecal_energy"]["max"] == pytest.approx(float(x[..., 0].max()))
    human = invoke("inspect", p.parent, "--no-progress")
    assert "samples      120" in human.stdout and "ecal_time" in human.stdout


def test_inspect_bad_file_exits_with_a_named_error(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not hdf5 at all")
    result = invoke("inspect", bad)
    assert result.exit_code == 2
    assert "broken.h5" in result.output and "cannot open as HDF5" in result.output


def test_train_rejects_bad_override(egamma_pair, tmp_path):
    p, *_ = egamma_pair
    result = invoke("train", ROOT / "configs/egamma_resnet15.yaml", "--data", p, "--set", "train.nope=1")
    assert result.exit_code == 2 and "train.nope" in result.output


@pytest.mark.slow
def test_simulate_train_report_on_simulated_data(tmp_path):
    """The demo's path at tiny size; a short training is clearly better than chance."""
    data = tmp_path / "data"
    result = invoke("simulate", "egamma", "--n", 2400, "--out", data, "--seed", 3, "--no-progress")
    assert result.exit_code == 0, result.output
    files = sorted(data.glob("*.hdf5"))
    assert len(files) == 2
    info = json.loads(invoke("inspect", data, "--json").stdout)
    assert info["n_samples"] == 2400 and info["labels"] == {"0": 1200, "1": 1200}

    run = tmp_path / "resnet15"
    result = invoke(
        "train",
        ROOT / "configs/egamma_resnet15.yaml",
        "--data",
        data,
        "--out",
        run,
        "--set",
        "train.folds=2",
        "--set",
        "train.max_epochs=3",
        "--set",
        "train.progress=false",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    # The simulated classes overlap as in the real data (a shower-width cut gives ~0.65): a short
    # training must still be clearly better than chance, its 95 % interval excluding 0.5.
    assert metrics["test_auc"] > 0.57, metrics
    assert metrics["test_auc_ci"][0] > 0.5
    assert min(metrics["fold_auc"]) > 0.55

    out = tmp_path / "report.html"
    result = invoke("report", run, "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert 'data-run="resnet15"' in page and f"{metrics['test_auc']:.4f}" in page
