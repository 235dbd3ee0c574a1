"""Export of trained folds (ONNX, TorchScript, AOTInductor) and the preprocess.json contract.

Run directories come from the real training loop (``run_experiment``) at toy size, built once per
session; exported files are checked with their own runtimes against the run's stored test
predictions and against the training module on the same raw inputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from e2evision.cli import app
from e2evision.config import load_config
from e2evision.export import (
    ExportError,
    apply_preprocess,
    choose_fold,
    export_model,
    load_fold,
    read_contract,
    read_test_batch,
    reference_outputs,
)
from e2evision.transforms.normalize import ChannelNormalizer

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
# Deployment loads TorchScript on purpose (the C++ engine's format), deprecated in Python or not.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

#: name -> (config, overrides): tiny versions of the three acceptance models, each with another
#: normalisation so that zero suppression, channel scale factors, centring and clipping all act;
#: two of them evaluate with test-time flips (about the centre line, about the seed pixel).
TOY_RUNS: dict[str, tuple[str, list[str]]] = {
    "resnet15": (
        "egamma_resnet15.yaml",
        [
            "model.kwargs.widths=[4, 8]",
            "model.kwargs.blocks_per_stage=1",
            "preprocess.normalize=zscore",
            "preprocess.zero_suppression=0.05",
            "preprocess.channel_scale=[2.0, 0.5]",
            "preprocess.clip=3.0",
            "preprocess.per_sample=[max, none]",
            "preprocess.log1p=[0.01, null]",
            "augment.flip_eta=true",
            "augment.flip_about=centre",
            "augment.test_time=true",
        ],
    ),
    # no test-time flips: the model the oneDNN program format can express (conv, residual, pooling, head)
    "resnet15_plain": (
        "egamma_resnet15.yaml",
        [
            "model.kwargs.widths=[4, 8]",
            "model.kwargs.blocks_per_stage=1",
            "preprocess.normalize=zscore",
            "preprocess.clip=4.0",
        ],
    ),
    "vit": (
        "egamma_vit.yaml",
        [
            "model.kwargs.embed_dim=16",
            "model.kwargs.depth=1",
            "model.kwargs.num_heads=2",
            "preprocess.normalize=scale",
            "preprocess.clip=50.0",
            "preprocess.channel_scale=null",
            "preprocess.per_sample=null",
            "preprocess.log1p=[1.0, null]",
            "augment.flip_eta=true",
            "augment.flip_phi=true",
            "augment.flip_about=pixel",
            "augment.test_time=true",
        ],
    ),
    "vit_sd": (
        "egamma_vit.yaml",
        [
            "model.name=vit_sd_micro",
            "model.kwargs.embed_dim=16",
            "model.kwargs.depth=1",
            "model.kwargs.num_heads=2",
            "preprocess.normalize=minmax",
            "preprocess.zero_suppression=0.02",
            "preprocess.channel_scale=[1.0, 25.0]",
            "preprocess.per_sample=[sum, none]",
            "preprocess.log1p=null",
        ],
    ),
}


def build_toy_runs(base: Path) -> dict[str, Path]:
    """Simulated e/γ data and one 2-fold, 1-epoch run per toy model under ``base`` (reused if done)."""
    from e2evision.simulate.calorimeter import write_egamma
    from e2evision.training import run_experiment

    runs = {name: base / name for name in TOY_RUNS}
    if (base / "done").exists():
        return runs
    files = write_egamma(base / "data", 120, seed=3, progress=False)
    for name, (config, extra) in TOY_RUNS.items():
        cfg = load_config(
            ROOT / "configs" / config,
            [
                f"data.paths={json.dumps([str(f) for f in files])}",
                "train.folds=2",
                "train.max_epochs=1",
                "train.progress=false",
                "train.batch_size=32",
                "augment.flip_eta=false",
                "augment.flip_phi=false",
                "augment.test_time=false",
                *extra,
            ],
        )
        run_experiment(cfg, runs[name])
    (base / "done").touch()
    return runs


def aoti_export(base: Path, runs: dict[str, Path]) -> Path:
    """The one AOTInductor package the tests compile (50–75 s): the toy ResNet-15's best fold."""
    out = base / "aoti" / "resnet15.pt2"
    if not out.exists():
        export_model(runs["resnet15"], "aoti", out, n_check=16)
    return out


@pytest.fixture(scope="session")
def toy_runs(tmp_path_factory) -> dict[str, Path]:
    return build_toy_runs(tmp_path_factory.getbasetemp() / "export_runs")


def _test_rows(run: Path, fold: int, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Raw test-split images and that fold's stored test probabilities, read without the export code."""
    from e2evision.datasets import open_dataset

    cfg = load_config(run / "config.yaml")
    pred = np.load(run / "predictions.npz", allow_pickle=False)
    with open_dataset(cfg.data.paths, cfg.data.format) as ds:
        x, _ = ds.read(pred["test_index"][:n])
    return x, pred["test_fold_scores"][fold][:n]


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_fold_choice_is_the_best_validation_auc_and_stated(toy_runs, tmp_path):
    run = toy_runs["resnet15"]
    aucs = json.loads((run / "metrics.json").read_text())["fold_auc"]
    k, reason = choose_fold(run)
    assert k == int(np.argmax(aucs)) and "best validation AUC" in reason and f"{aucs[k]:.4f}" in reason
    assert choose_fold(run, 0) == (0, "fold 0 (asked for)")
    with pytest.raises(ExportError, match="fold 7 has no model.safetensors; folds available: \\[0, 1\\]"):
        choose_fold(run, 7)
    # An interrupted run without metrics.json: the best val_auc in each fold.json history.
    partial = shutil.copytree(run, tmp_path / "partial")
    (partial / "metrics.json").unlink()
    best = {
        kk: max(h["val_auc"] for h in json.loads((partial / f"fold_{kk}" / "fold.json").read_text())["history"])
        for kk in (0, 1)
    }
    k2, reason2 = choose_fold(partial)
    assert k2 == max(best, key=best.get) and "fold.json" in reason2
    with pytest.raises(ExportError, match="run directory not found"):
        choose_fold(tmp_path / "nope")


def test_contract_arithmetic_equals_the_channel_normalizer():
    """apply_preprocess (the documented contract, in NumPy) is ChannelNormalizer.forward."""
    rng = np.random.default_rng(1)
    x = (rng.normal(0, 2, (5, 3, 6, 7)) * (rng.random((5, 3, 6, 7)) < 0.6)).astype(np.float32)
    norm = ChannelNormalizer(3, "zscore", clip=1.7, zero_suppression=0.4, channel_scale=[2.0, 0.5, 25.0])
    norm.centre.copy_(torch.tensor([0.3, -0.2, 1.0]))
    norm.scale.copy_(torch.tensor([1.5, 0.7, 9.0]))
    d = norm.to_dict()
    spec = {k: d[k] for k in ("zero_suppression", "channel_scale", "centre", "scale", "clip")}
    want = norm(torch.from_numpy(x)).numpy()
    got = apply_preprocess(x, spec)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert (np.abs(got) == np.float32(1.7)).any()  # the clip acted
    suppressed = (np.abs(x[:, 0]) < 0.4) & (x[:, 0] != 0)  # small raw values count as zero deposits
    assert suppressed.any()
    np.testing.assert_allclose(got[:, 0][suppressed], (0.0 - 0.3) / 1.5, rtol=0, atol=1e-6)
    assert not np.shares_memory(got, x)
    with pytest.raises(ExportError, match="order"):
        apply_preprocess(x, {**spec, "order": ["clip", "zero_suppression", "channel_scale", "centre_scale"]})


@pytest.mark.parametrize("name", list(TOY_RUNS))
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_training_predictions_through_preprocess_json(toy_runs, tmp_path, name, fmt):
    run = toy_runs[name]
    out = tmp_path / ("model.pt" if fmt == "torchscript" else "model.onnx")
    result = export_model(run, fmt, out, n_check=24)
    assert result.max_abs_diff["prob"] <= TOL and result.max_abs_diff["logit"] <= TOL
    assert result.stored_max_abs_diff is not None and result.stored_max_abs_diff <= TOL
    assert result.batch_sizes == [24, 1, 3]

    # Independently of the export code: raw test images → preprocess.json (NumPy) → the exported
    # file in its own runtime reproduce the probabilities the run stored during training.
    contract = read_contract(tmp_path / "preprocess.json")
    raw, stored = _test_rows(run, result.fold)
    x = apply_preprocess(raw, contract["inputs"][0]["preprocess"])
    if fmt == "onnx":
        session = _session(out)
        prob, logit = session.run(["prob", "logit"], {"image": x})
        prob1, _ = session.run(["prob", "logit"], {"image": x[:1]})  # the batch axis is dynamic
        np.testing.assert_allclose(prob1, prob[:1], rtol=0, atol=TOL)
    else:
        module = torch.jit.load(str(out))
        with torch.no_grad():
            prob, logit = (t.numpy() for t in module(torch.from_numpy(x)))
    np.testing.assert_allclose(prob[:, 0], stored, rtol=0, atol=TOL)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logit.astype(np.float64))), rtol=0, atol=1e-6)


def test_preprocess_json_schema_and_shared_directory(toy_runs, tmp_path):
    run = toy_runs["resnet15"]
    first = export_model(run, "torchscript", tmp_path / "resnet15.pt", n_check=8)
    second = export_model(run, "onnx", tmp_path / "resnet15.onnx", n_check=8)
    pre = json.loads((tmp_path / "preprocess.json").read_text())
    assert pre["schema"] == "e2evision.preprocess" and pre["schema_version"] == 2
    (image,) = pre["inputs"]  # no scalar inputs for this model
    assert image["name"] == "image" and image["shape"] == [-1, 2, 32, 32] and image["layout"] == "NCHW"
    assert image["channels"] == ["ecal_energy", "ecal_time"] and image["dtype"] == "float32"
    norm = json.loads((run / f"fold_{first.fold}" / "normalizer.json").read_text())
    p = image["preprocess"]
    assert p["order"] == ["zero_suppression", "channel_scale", "per_sample", "log1p", "centre_scale", "clip"]
    for key in ("mode", "zero_suppression", "channel_scale", "per_sample", "log1p", "centre", "scale", "clip"):
        assert p[key] == norm[key], key
    assert p["channel_scale"] == [2.0, 0.5] and p["zero_suppression"] == 0.05 and p["clip"] == 3.0
    assert p["per_sample"] == ["max", "none"] and p["log1p"] == [0.01, None]
    assert [o["name"] for o in pre["outputs"]] == ["prob", "logit"]
    assert pre["outputs"][0]["kind"] == "probability" and "sigmoid" in pre["outputs"][0]["meaning"]
    assert pre["source"]["fold"] == first.fold and pre["source"]["fold_choice"] == first.fold_reason
    assert pre["source"]["run_dir"] == str(run.resolve()) and len(pre["source"]["weights_sha256"]) == 64
    assert {"torch", "e2evision", "onnxruntime"} <= pre["versions"].keys()
    # both formats of the same fold share one preprocess.json; the table describes each file
    assert set(pre["exports"]) == {"torchscript", "onnx"}
    for entry in pre["exports"].values():
        f = tmp_path / entry["file"]
        assert f.stat().st_size == entry["bytes"]
        assert entry["verified"]["max_abs_diff"]["prob"] <= TOL and entry["verified"]["rows"] == 8
    assert second.preprocess_path == first.preprocess_path


def test_another_model_in_the_same_directory_is_refused(toy_runs, tmp_path):
    export_model(toy_runs["resnet15"], "torchscript", tmp_path / "a.pt", n_check=4)
    before = json.loads((tmp_path / "preprocess.json").read_text())
    with pytest.raises(ExportError, match="describes another model"):
        export_model(toy_runs["vit"], "torchscript", tmp_path / "b.pt", n_check=4)
    assert not (tmp_path / "b.pt").exists()
    assert json.loads((tmp_path / "preprocess.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "preprocess.json"]  # no temporary left


def test_a_mismatching_export_fails_loudly_and_leaves_no_file(toy_runs, tmp_path, monkeypatch):
    """An exporter that changes the numbers (simulated) is caught before anything is published."""
    import e2evision.export.exporters as ex

    real = ex.export_graph

    def drifting(fold):
        graph = real(fold)
        original = graph._outputs
        graph._outputs = lambda z: original(z + 1e-3)  # what a broken lowering would do
        return graph

    monkeypatch.setattr(ex, "export_graph", drifting)
    for fmt, name in (("torchscript", "m.pt"), ("onnx", "m.onnx")):
        with pytest.raises(ExportError, match="differs from PyTorch by up to"):
            export_model(toy_runs["vit"], fmt, tmp_path / name, n_check=8)
    assert list(tmp_path.iterdir()) == []


def test_inconsistent_or_missing_run_pieces_are_named(toy_runs, tmp_path):
    run = shutil.copytree(toy_runs["vit"], tmp_path / "run")
    k, _ = choose_fold(run)
    norm_path = run / f"fold_{k}" / "normalizer.json"
    norm = json.loads(norm_path.read_text())
    norm["scale"] = [s * 2 for s in norm["scale"]]
    norm_path.write_text(json.dumps(norm))
    with pytest.raises(ExportError, match="normalizer.json: scale .* disagrees with the weights"):
        load_fold(run)
    (run / f"fold_{k}" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ExportError, match="model.safetensors: cannot read the weights"):
        load_fold(run, k)

    moved = shutil.copytree(toy_runs["resnet15"], tmp_path / "moved")
    cfg_text = (
        (moved / "config.yaml").read_text().replace(str(toy_runs["resnet15"].parent / "data"), str(tmp_path / "gone"))
    )
    (moved / "config.yaml").write_text(cfg_text)
    with pytest.raises(ExportError, match="pass --data"):
        export_model(moved, "torchscript", tmp_path / "x.pt", n_check=4)
    data = toy_runs["resnet15"].parent / "data"
    ok = export_model(moved, "torchscript", tmp_path / "x.pt", n_check=4, data=[str(data)])
    assert ok.path.is_file() and ok.stored_max_abs_diff <= TOL
    with pytest.raises(ExportError, match="unknown format 'tflite'"):
        export_model(moved, "tflite", tmp_path / "x.tflite")
    with pytest.raises(ExportError, match=r"must be named \*.pt2"):
        export_model(moved, "aoti", tmp_path / "x.so")


def test_reference_is_the_training_module(toy_runs):
    """reference_outputs (what every comparison trusts) reproduces predictions.npz exactly."""
    fold = load_fold(toy_runs["vit_sd"])
    raw, scalars, stored = read_test_batch(fold, 12)
    assert scalars is None and raw.shape == (12, 2, 32, 32)
    ref = reference_outputs(fold, raw)
    np.testing.assert_allclose(ref["prob"][:, 0], stored, rtol=0, atol=1e-6)
    from e2evision.training.module import ImageModule

    assert fold.module.training is False and isinstance(fold.module, ImageModule)


def test_cli_export_and_sample(toy_runs, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "export",
            str(toy_runs["vit"]),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "vit.onnx"),
            "--fold",
            "0",
            "--n-check",
            "6",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "chose fold 0 (asked for)" in result.output and "verified on 6 samples" in result.output
    assert (tmp_path / "vit.onnx").is_file() and (tmp_path / "preprocess.json").is_file()
    bad = runner.invoke(app, ["export", str(toy_runs["vit"]), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown format 'tflite'" in bad.output

    data = toy_runs["vit"].parent / "data"
    result = runner.invoke(
        app,
        [
            "sample",
            str(data),
            "--n",
            "5",
            "--out",
            str(tmp_path / "raw.npy"),
            "--labels-out",
            str(tmp_path / "y.npy"),
            "--scalars-out",
            str(tmp_path / "s.npy"),
        ],
    )
    assert result.exit_code == 0, result.output
    raw = np.load(tmp_path / "raw.npy")
    assert raw.dtype == np.dtype("<f4") and raw.shape == (5, 2, 32, 32) and raw.flags.c_contiguous
    from e2evision.datasets import open_dataset

    with open_dataset(data) as ds:
        np.testing.assert_array_equal(raw, ds.read(np.arange(5))[0])  # raw: not normalised
    assert np.load(tmp_path / "s.npy").shape == (5, 0) and np.load(tmp_path / "y.npy").shape == (5,)
    seeded = runner.invoke(app, ["sample", str(data), "--n", "4", "--seed", "3", "--out", str(tmp_path / "r2.npy")])
    assert seeded.exit_code == 0 and np.load(tmp_path / "r2.npy").shape == (4, 2, 32, 32)


@pytest.mark.slow
def test_aoti_package_matches_pytorch(toy_runs, tmp_path_factory):
    """One AOTInductor compile (the most expensive export): dynamic batch, same numbers as PyTorch."""
    base = tmp_path_factory.getbasetemp() / "export_runs"
    path = aoti_export(base, toy_runs)
    pre = read_contract(path.parent / "preprocess.json")
    entry = pre["exports"]["aoti"]
    assert entry["file"] == "resnet15.pt2" and entry["verified"]["max_abs_diff"]["prob"] <= TOL
    fold = load_fold(toy_runs["resnet15"], pre["source"]["fold"])
    raw, _, stored = read_test_batch(fold, 16)
    package = torch._inductor.aoti_load_package(str(path))
    x = torch.from_numpy(apply_preprocess(raw, pre["inputs"][0]["preprocess"]))
    for b in (1, 5, 16):
        prob, logit = package(x[:b])
        np.testing.assert_allclose(prob.numpy()[:, 0], stored[:b], rtol=0, atol=TOL)
        np.testing.assert_allclose(logit.numpy(), reference_outputs(fold, raw[:b])["logit"], rtol=0, atol=TOL)
