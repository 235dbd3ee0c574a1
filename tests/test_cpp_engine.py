"""The C++ engine (cpp/): built with CMake against the wheel's LibTorch, fed raw images through
preprocess.json, compared with PyTorch's training module on the same raw inputs.

The build is incremental (configure once, then ``cmake --build -j2``), so a stale binary never runs;
CI has already built it through ``make cpp``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from test_export import aoti_export, build_toy_runs
from typer.testing import CliRunner

from e2evision.cli import app
from e2evision.export import (
    ExportError,
    build_cpp,
    cpp_predict,
    export_model,
    load_fold,
    read_test_batch,
    reference_outputs,
    run_tool,
    save_npy,
    tool_path,
    verify_cpp,
)
from e2evision.export.cpp import TEST, build_dir

TOL = 1e-5


@pytest.fixture(scope="session")
def cpp_tool() -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found on PATH: the C++ engine cannot be built here")
    fresh = not (build_dir() / "CMakeCache.txt").is_file()
    seconds = build_cpp()
    print(f"\nC++ engine {'configured and built' if fresh else 'brought up to date'} in {seconds:.0f} s")
    assert tool_path().is_file() and (build_dir() / TEST).is_file()
    return tool_path()


@pytest.fixture(scope="session")
def toy_runs(tmp_path_factory) -> dict[str, Path]:
    return build_toy_runs(tmp_path_factory.getbasetemp() / "export_runs")


@pytest.fixture(scope="session")
def ts_exports(toy_runs, tmp_path_factory) -> dict[str, Path]:
    """TorchScript export of each toy run's best fold, each in its own directory."""
    base = tmp_path_factory.getbasetemp() / "ts_exports"
    out = {}
    for name, run in toy_runs.items():
        out[name] = base / name / "model.pt"
        if not out[name].exists():
            export_model(run, "torchscript", out[name], n_check=16)
    return out


def _inputs(fold, n: int = 32) -> np.ndarray:
    """Real test-split images plus harder synthetic ones (negatives, large and tiny values) so that
    zero suppression, channel scale factors and the clip all act."""
    raw, _, _ = read_test_batch(fold, n)
    rng = np.random.default_rng(11)
    wild = rng.normal(0, 1, (6, *raw.shape[1:])) * rng.choice([0.01, 1.0, 40.0], size=(6, *raw.shape[1:]))
    return np.concatenate([raw, wild.astype(np.float32)])


@pytest.mark.parametrize("name", ["resnet15", "vit", "vit_sd"])
def test_cpp_equals_pytorch_within_1e5_on_raw_inputs(cpp_tool, toy_runs, ts_exports, name):
    model = ts_exports[name]
    pre = json.loads((model.parent / "preprocess.json").read_text())
    fold = load_fold(toy_runs[name], pre["source"]["fold"])
    # the toy runs cover the detector transforms: per-sample max + log1p, log1p alone, per-sample sum
    steps = pre["inputs"][0]["preprocess"]
    want = {
        "resnet15": (["max", "none"], [0.01, None]),
        "vit": (["none", "none"], [1.0, None]),
        "vit_sd": (["sum", "none"], [None, None]),
    }[name]
    assert (steps["per_sample"], steps["log1p"]) == want and pre["schema_version"] == 2
    raw = _inputs(fold)
    result = verify_cpp(model, raw, tool=cpp_tool, atol=TOL, rtol=0.0)
    assert result.rows == raw.shape[0] and max(result.max_abs_diff.values()) <= TOL
    # and against what training itself stored for these test samples
    got = cpp_predict(model, raw, tool=cpp_tool, batch_size=5)  # several engine calls, last one short
    _, _, stored = read_test_batch(fold, 32)  # the toy test split has 24 samples
    np.testing.assert_allclose(got["prob"][: stored.size, 0], stored, rtol=0, atol=TOL)
    ref = reference_outputs(fold, raw)
    np.testing.assert_allclose(got["logit"], ref["logit"], rtol=0, atol=TOL)
    assert got["prob"].shape == (raw.shape[0], 1) and got["prob"].dtype == np.float32


@pytest.mark.parametrize("mode", ["plain", "inference", "fused", "auto"])
@pytest.mark.parametrize("name", ["resnet15", "vit", "vit_sd"])
def test_every_graph_mode_equals_pytorch_within_1e5(cpp_tool, toy_runs, ts_exports, name, mode):
    """Each TorchScript graph mode of the engine (auto: oneDNN Graph fusion below --large-batch rows,
    the optimize_for_inference graph from there on) gives PyTorch's outputs; calls of 7 rows and a
    last one of 2 cross auto's switch at 4."""
    model = ts_exports[name]
    pre = json.loads((model.parent / "preprocess.json").read_text())
    fold = load_fold(toy_runs[name], pre["source"]["fold"])
    raw = _inputs(fold)
    assert raw.shape[0] % 7 == 2
    got = cpp_predict(model, raw, tool=cpp_tool, batch_size=7, extra=["--graph-mode", mode, "--large-batch", "4"])
    for key, want in reference_outputs(fold, raw).items():
        np.testing.assert_allclose(got[key], want, rtol=0, atol=TOL)
    info = run_tool(model, {}, None, tool=cpp_tool, extra=["--info", "--graph-mode", mode])
    assert json.loads(info.stdout)["graph_mode"] == mode


@pytest.mark.parametrize("name", ["resnet15", "vit_sd"])
def test_cpp_test_executable(cpp_tool, toy_runs, ts_exports, tmp_path, name):
    """Batch invariance, 4 concurrent threads, every named error, .npy and preprocess.json checks."""
    model = ts_exports[name]
    pre = json.loads((model.parent / "preprocess.json").read_text())
    fold = load_fold(toy_runs[name], pre["source"]["fold"])
    raw = _inputs(fold, 12)
    save_npy(tmp_path / "raw.npy", raw)
    expected = []
    for key, value in reference_outputs(fold, raw).items():
        save_npy(tmp_path / f"ref_{key}.npy", value)
        expected += ["--expected", f"{key}={tmp_path / f'ref_{key}.npy'}"]
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [
            str(build_dir() / TEST),
            "--workdir",
            str(work),
            "--model",
            str(model),
            "--raw",
            str(tmp_path / "raw.npy"),
            *expected,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout and "FAIL" not in proc.stdout
    for check in (
        "equals PyTorch's within 1e-5",
        "4 threads",
        "wrong flat size",
        "unknown input name",
        "corrupt TorchScript file",
        "missing preprocess.json",
        "npy: big-endian rejected",
    ):
        assert check in proc.stdout, check


def _tool_error(proc: subprocess.CompletedProcess[str], kind: str, fragment: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)  # an EngineError, not a crash
    assert f"{kind}: " in proc.stderr and fragment in proc.stderr, proc.stderr


def test_named_errors_through_the_tool(cpp_tool, ts_exports, tmp_path):
    model = ts_exports["resnet15"]
    raw = np.random.default_rng(0).random((3, 2, 32, 32), dtype=np.float32)
    good = save_npy(tmp_path / "raw.npy", raw)
    ok = run_tool(model, {"image": good}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool)
    assert ok.returncode == 0 and "wrote prob (3, 1)" in ok.stdout, ok.stderr

    _tool_error(
        run_tool(model, {"images": good}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool),
        "InputError",
        "'images' is not an input of this model (inputs: image)",
    )
    wrong = save_npy(tmp_path / "wrong.npy", raw[:, :, :30, :30])
    _tool_error(
        run_tool(model, {"image": wrong}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool),
        "InputError",
        "has shape (3, 2, 30, 30), the model expects (N, 2, 32, 32)",
    )
    _tool_error(
        run_tool(model, {"image": good}, {"score": tmp_path / "p.npy"}, tool=cpp_tool),
        "InputError",
        "'score' is not an output of this model (outputs: prob, logit)",
    )
    f64 = tmp_path / "f64.npy"
    np.save(f64, raw.astype(np.float64))
    _tool_error(run_tool(model, {"image": f64}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool), "NpyError", "'<f8'")
    _tool_error(
        run_tool(tmp_path / "absent.pt", {"image": good}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool),
        "ModelFileError",
        "model file not found",
    )
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "model.pt").write_bytes(b"PK\x03\x04 not really a zip")
    _tool_error(
        run_tool(bad_dir / "model.pt", {"image": good}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool),
        "PreprocessError",
        "preprocess.json: file not found",
    )
    shutil.copy(model.parent / "preprocess.json", bad_dir / "preprocess.json")
    _tool_error(
        run_tool(bad_dir / "model.pt", {"image": good}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool),
        "ModelFileError",
        f"the file has 21 bytes, {bad_dir / 'preprocess.json'} recorded {model.stat().st_size}",
    )
    size = model.stat().st_size
    (bad_dir / "model.pt").write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))  # same size, garbage
    _tool_error(
        run_tool(bad_dir / "model.pt", {"image": good}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool),
        "ModelFileError",
        "differs from exports.torchscript.sha256",
    )  # checked before loading
    (bad_dir / "preprocess.json").write_text('{"schema": "e2evision.preprocess", "inputs": [')
    _tool_error(
        run_tool(bad_dir / "model.pt", {"image": good}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool),
        "PreprocessError",
        "invalid JSON",
    )
    usage = run_tool(model, {}, {}, tool=cpp_tool)
    assert usage.returncode == 1 and "give at least one --input" in usage.stderr


def test_a_wrong_preprocess_json_is_caught_by_verify_cpp(cpp_tool, ts_exports, toy_runs, tmp_path):
    """The comparison tests the contract: change one scale in preprocess.json and it fails."""
    src = ts_exports["vit"]
    model = tmp_path / "model.pt"
    shutil.copy(src, model)
    pre = json.loads((src.parent / "preprocess.json").read_text())
    fold = load_fold(toy_runs["vit"], pre["source"]["fold"])
    raw = _inputs(fold, 8)
    runner = CliRunner()
    save_npy(tmp_path / "raw.npy", raw)
    shutil.copy(src.parent / "preprocess.json", tmp_path / "preprocess.json")
    good = runner.invoke(app, ["verify-cpp", str(model), "--raw", str(tmp_path / "raw.npy"), "--tool", str(cpp_tool)])
    assert good.exit_code == 0 and "C++ engine matches PyTorch on 14 samples" in good.output, good.output
    pre["inputs"][0]["preprocess"]["scale"][0] *= 1.01
    (tmp_path / "preprocess.json").write_text(json.dumps(pre))
    bad = runner.invoke(app, ["verify-cpp", str(model), "--raw", str(tmp_path / "raw.npy"), "--tool", str(cpp_tool)])
    assert bad.exit_code == 1 and "differs from PyTorch by up to" in bad.output, bad.output


# ------------------------------------------------------------------------------------ scalars
def _scalar_run(base: Path, task: str = "binary") -> Path:
    """A hand-written (untrained) run whose ResNet-15 fuses two scalars (pt, m0) before its head,
    on a small quark/gluon Parquet file: the runner trains no scalar models yet, the contract must
    still carry them. ``task="regression"`` makes it a regressor with target scaling (the labels
    are then read as targets only by the metadata; the images and scalars are the same)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import save_file

    from e2evision.config import load_config
    from e2evision.training.build import build_module

    run = base / f"run_{task}"
    if (run / "predictions.npz").exists():
        return run
    rng = np.random.default_rng(5)
    n = 24
    x = rng.exponential(2.0, (n, 3, 16, 16)) * (rng.random((n, 3, 16, 16)) < 0.3)
    pt, m0 = rng.uniform(70, 100, n), rng.uniform(5, 40, n)
    data = base / "qg.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"X_jets": pa.array(x.tolist()), "pt": pt, "m0": m0, "y": (np.arange(n) % 2).astype(float)}),
        data,
        row_group_size=4,
    )
    cfg = load_config(
        data={
            "name": "qg_scalars",
            "seed": 1,
            "preprocess": {
                "normalize": "zscore",
                "zero_suppression": 0.05,
                "channel_scale": [1.0, 2.0, 0.5],
                "clip": 4.0,
            },
            "data": {
                "format": "quark-gluon",
                "paths": [str(data)],
                "kwargs": {"image_size": [16, 16]},
                "scalars": ["pt", "m0"],
            },
            "model": {"name": "resnet15", "kwargs": {"widths": [4, 8], "blocks_per_stage": 1}},
        }
    )
    torch.manual_seed(0)
    if task == "regression":
        module = build_module(cfg, (3, 16, 16), "regression", target_shift=172.5, target_scale=25.0).eval()
    else:
        module = build_module(cfg, (3, 16, 16), "binary").eval()
    module.normalizer.centre.copy_(torch.tensor([0.3, 0.5, 0.1]))
    module.normalizer.scale.copy_(torch.tensor([1.2, 2.5, 0.8]))
    module.scalar_normalizer.centre.copy_(torch.tensor([85.0, 22.0]))  # as fitted on training folds
    module.scalar_normalizer.scale.copy_(torch.tensor([8.0, 10.0]))
    with torch.no_grad():
        module.model.head.fc.weight[:, -2:] = torch.tensor([[0.5, -0.3]])  # the scalars matter
    fold_dir = run / "fold_0"
    fold_dir.mkdir(parents=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    (run / "run.json").write_text(
        json.dumps(
            {
                "data": {
                    "image_shape": [3, 16, 16],
                    "channels": ["tracks", "ecal", "hcal"],
                    "scalars": ["pt", "m0"],
                    "class_names": ["quark", "gluon"],
                }
            }
        )
    )
    names = ["quark", "gluon"] if task == "binary" else []
    (run / "metrics.json").write_text(json.dumps({"task": task, "fold_auc": [0.5], "class_names": names}))
    (fold_dir / "normalizer.json").write_text(json.dumps(module.normalizer.to_dict()))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(fold_dir / "model.safetensors"))
    test = np.arange(0, n, 2)
    with torch.no_grad():
        s = torch.from_numpy(np.stack([pt, m0], 1)[test].astype(np.float32))
        out = module.raw(torch.from_numpy(x[test].astype(np.float32)), s)
        scores = (torch.sigmoid(out) if task == "binary" else out * 25.0 + 172.5).numpy()
    np.savez(run / "predictions.npz", test_index=test, test_fold_scores=scores[None].astype(np.float64))
    return run


def test_scalar_inputs_travel_through_the_contract_and_the_engine(cpp_tool, tmp_path):
    run = _scalar_run(tmp_path / "scalar_run")
    ts = export_model(run, "torchscript", tmp_path / "exp" / "model.pt", n_check=12)
    onnx = export_model(run, "onnx", tmp_path / "exp" / "model.onnx", n_check=12)
    assert ts.stored_max_abs_diff <= TOL and max(onnx.max_abs_diff.values()) <= TOL
    pre = json.loads((tmp_path / "exp" / "preprocess.json").read_text())
    image, scalars = pre["inputs"]
    assert {k: v for k, v in scalars.items() if k != "preprocess"} == {
        "name": "scalars",
        "kind": "scalars",
        "dtype": "float32",
        "shape": [-1, 2],
        "names": ["pt", "m0"],
    }
    assert scalars["preprocess"]["centre"] == [85.0, 22.0] and scalars["preprocess"]["scale"] == [8.0, 10.0]
    assert scalars["preprocess"]["clip"] is None and scalars["preprocess"]["zero_suppression"] is None
    assert image["shape"] == [-1, 3, 16, 16] and image["preprocess"]["channel_scale"] == [1.0, 2.0, 0.5]
    assert pre["outputs"][0]["classes"] == ["quark", "gluon"]

    fold = load_fold(run)
    raw, s, _ = read_test_batch(fold, 12)
    result = verify_cpp(ts.path, raw, s, tool=cpp_tool)
    assert max(result.max_abs_diff.values()) <= TOL
    shifted = cpp_predict(ts.path, raw, s + np.float32(20.0), tool=cpp_tool)
    np.testing.assert_allclose(shifted["logit"], reference_outputs(fold, raw, s + 20.0)["logit"], rtol=0, atol=TOL)
    assert np.abs(shifted["logit"] - cpp_predict(ts.path, raw, s, tool=cpp_tool)["logit"]).min() > 0.1

    save_npy(tmp_path / "raw.npy", raw)
    _tool_error(
        run_tool(ts.path, {"image": tmp_path / "raw.npy"}, {"prob": tmp_path / "p.npy"}, tool=cpp_tool),
        "InputError",
        "input 'scalars' is not provided (given: image)",
    )
    save_npy(tmp_path / "s.npy", s[:5])
    _tool_error(
        run_tool(
            ts.path,
            {"image": tmp_path / "raw.npy", "scalars": tmp_path / "s.npy"},
            {"prob": tmp_path / "p.npy"},
            tool=cpp_tool,
        ),
        "InputError",
        "have 12 and 5 rows",
    )
    with pytest.raises(ExportError, match="takes 2 scalar inputs"):
        reference_outputs(fold, raw)


def test_regression_output_is_in_target_units(cpp_tool, tmp_path):
    """A regressor's exported ``value`` is the training module's forward: target scaling included."""
    run = _scalar_run(tmp_path / "reg", task="regression")
    result = export_model(run, "torchscript", tmp_path / "exp" / "model.pt", n_check=12)
    assert result.stored_max_abs_diff is not None and result.stored_max_abs_diff <= 1e-3  # GeV-sized numbers
    pre = json.loads((tmp_path / "exp" / "preprocess.json").read_text())
    assert [o["name"] for o in pre["outputs"]] == ["value"] and "target" in pre["outputs"][0]["meaning"]
    fold = load_fold(run)
    raw, s, stored = read_test_batch(fold, 12)
    got = cpp_predict(result.path, raw, s, tool=cpp_tool)["value"][:, 0]
    want = reference_outputs(fold, raw, s)["value"][:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(got, stored, rtol=1e-6, atol=1e-4)
    assert 100 < got.mean() < 250  # un-scaled: around the 172.5 shift, not around 0


@pytest.mark.slow
def test_cpp_engine_runs_the_aoti_package(cpp_tool, toy_runs, tmp_path_factory, tmp_path):
    """The AOTInductor backend of the engine on the one package the tests compile."""
    path = aoti_export(tmp_path_factory.getbasetemp() / "export_runs", toy_runs)
    pre = json.loads((path.parent / "preprocess.json").read_text())
    fold = load_fold(toy_runs["resnet15"], pre["source"]["fold"])
    raw = _inputs(fold, 16)
    t0 = time.perf_counter()
    result = verify_cpp(path, raw, tool=cpp_tool, atol=TOL, rtol=0.0)
    assert max(result.max_abs_diff.values()) <= TOL, result
    info = run_tool(path, {}, None, tool=cpp_tool, extra=["--info"])
    assert json.loads(info.stdout)["backend"] == "aoti"
    save_npy(tmp_path / "raw.npy", raw)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [str(build_dir() / TEST), "--workdir", str(work), "--model", str(path), "--raw", str(tmp_path / "raw.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(proc.stdout, f"({time.perf_counter() - t0:.1f} s)")
    assert proc.returncode == 0 and "model loads with the aoti backend" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
def test_engine_on_an_export_directory_keeps_the_fastest_verified_export(cpp_tool, toy_runs, tmp_path):
    """The ViT-SD AOTInductor package (SPT + LSA's fused masked attention) beside its TorchScript
    export: on the directory the engine times both and keeps the faster, and either way it equals
    PyTorch within 1e-5; asking for a backend narrows the choice; a directory it cannot use is refused."""
    exp = tmp_path / "exp"
    for fmt, name in (("torchscript", "model.pt"), ("aoti", "model.pt2")):
        result = export_model(toy_runs["vit_sd"], fmt, exp / name, n_check=16)
        assert max(result.max_abs_diff.values()) <= TOL
    pre = json.loads((exp / "preprocess.json").read_text())
    assert set(pre["exports"]) == {"torchscript", "aoti"}
    fold = load_fold(toy_runs["vit_sd"], pre["source"]["fold"])
    raw = _inputs(fold, 16)

    info = json.loads(run_tool(exp, {}, None, tool=cpp_tool, extra=["--info"]).stdout)
    times = {c["backend"]: c["median_ms"] for c in info["candidates"]}
    assert set(times) == {"torchscript", "aoti"} and all(t > 0 for t in times.values())
    assert info["backend"] == min(times, key=times.get)
    assert Path(info["model"]).name == {"torchscript": "model.pt", "aoti": "model.pt2"}[info["backend"]]
    got = verify_cpp(exp, raw, tool=cpp_tool, atol=TOL, rtol=0.0, batch_size=5)
    assert max(got.max_abs_diff.values()) <= TOL, got
    for backend, name in (("aoti", "model.pt2"), ("torchscript", "model.pt")):  # each path on its own
        one = json.loads(run_tool(exp, {}, None, tool=cpp_tool, extra=["--info", "--backend", backend]).stdout)
        assert Path(one["model"]).name == name and [c["backend"] for c in one["candidates"]] == [backend]
        out = cpp_predict(exp, raw, tool=cpp_tool, extra=["--backend", backend])
        np.testing.assert_allclose(out["prob"], reference_outputs(fold, raw)["prob"], rtol=0, atol=TOL)

    only_onnx = tmp_path / "only_onnx"
    only_onnx.mkdir()
    pre["exports"] = {"onnx": {**pre["exports"]["torchscript"], "file": "model.onnx"}}
    (only_onnx / "preprocess.json").write_text(json.dumps(pre))
    proc = run_tool(only_onnx, {}, None, tool=cpp_tool, extra=["--info"])
    assert proc.returncode != 0 and "lists no export this engine can run" in proc.stderr, proc.stderr
    proc = run_tool(tmp_path / "exp_missing_dir", {}, None, tool=cpp_tool, extra=["--info"])
    assert proc.returncode != 0 and "model file not found" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_tool(empty, {}, None, tool=cpp_tool, extra=["--info"])
    assert proc.returncode != 0 and "preprocess.json" in proc.stderr, proc.stderr


def _lens_roi_run(base: Path) -> Path:
    """A hand-written (untrained) three-class lensing run whose model crops and turns each lens
    itself (``preprocess.lens_roi``): 48 × 48 DeepLense images, off-centre rings and arcs, a
    24 × 24 canonical crop inside the graph."""
    import torch
    from safetensors.torch import save_file

    from e2evision.config import load_config
    from e2evision.training.build import build_module

    run = base / "run_lens"
    rng = np.random.default_rng(11)
    classes = ["axion", "cdm", "no_sub"]
    yy, xx = np.mgrid[:48, :48].astype(np.float64)
    for c, cls in enumerate(classes):
        (base / "lenses" / cls).mkdir(parents=True)
        for i in range(6):
            cx, cy = 24 + rng.uniform(-6, 6), 24 + rng.uniform(-6, 6)
            r = np.hypot(xx - cx, yy - cy)
            arc = 1 + 0.8 * np.cos(np.arctan2(yy - cy, xx - cx) - rng.uniform(0, 2 * np.pi))
            img = arc * np.exp(-0.5 * ((r - 7 - 2 * c) / 1.5) ** 2) + rng.normal(0, 0.05, r.shape)
            np.save(base / "lenses" / cls / f"{cls}_{i}.npy", img.astype(np.float32)[None])
    cfg = load_config(
        data={
            "name": "lens_roi_cpp",
            "seed": 1,
            "preprocess": {"normalize": "zscore", "lens_roi": {"size": 24, "rotate": True}},
            "data": {"format": "deeplense", "paths": [str(base / "lenses")]},
            "model": {"name": "vit_sd_micro", "kwargs": {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}},
        }
    )
    torch.manual_seed(0)
    module = build_module(cfg, (1, 48, 48), "multiclass", 3).eval()
    module.normalizer.centre.copy_(torch.tensor([0.1]))
    module.normalizer.scale.copy_(torch.tensor([0.4]))
    fold_dir = run / "fold_0"
    fold_dir.mkdir(parents=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    (run / "run.json").write_text(
        json.dumps(
            {"data": {"image_shape": [1, 48, 48], "channels": ["intensity"], "scalars": [], "class_names": classes}}
        )
    )
    (run / "metrics.json").write_text(json.dumps({"task": "multiclass", "fold_auc": [0.5], "class_names": classes}))
    (fold_dir / "normalizer.json").write_text(json.dumps(module.normalizer.to_dict()))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(fold_dir / "model.safetensors"))
    from e2evision.datasets import open_dataset

    test = np.arange(0, 18, 2)
    x, _ = open_dataset([base / "lenses"]).read(test)
    with torch.no_grad():
        scores = module.scores(torch.from_numpy(np.asarray(x, np.float32))).numpy()
    np.savez(run / "predictions.npz", test_index=test, test_fold_scores=scores[None].astype(np.float64))
    return run


def test_lens_roi_crop_runs_inside_the_engine(cpp_tool, tmp_path):
    """The engine receives whole lensing images; detection, crop and rotation happen in the graph,
    and its scores equal PyTorch's at a batch size other than the export's."""
    run = _lens_roi_run(tmp_path)
    ts = export_model(run, "torchscript", tmp_path / "exp" / "model.pt", n_check=9)
    pre = json.loads((tmp_path / "exp" / "preprocess.json").read_text())
    assert pre["inputs"][0]["shape"] == [-1, 1, 48, 48]  # the full image, not the 24 × 24 crop
    fold = load_fold(run)
    raw, _, _ = read_test_batch(fold, 9)
    result = verify_cpp(ts.path, raw, tool=cpp_tool, atol=TOL, rtol=0.0)
    assert max(result.max_abs_diff.values()) <= TOL
    # lenses moved elsewhere in the frame: the graph finds them there too, as PyTorch does
    shifted = np.roll(raw, (3, -2), axis=(2, 3))
    got = cpp_predict(ts.path, shifted, tool=cpp_tool)
    want = reference_outputs(fold, shifted)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=TOL)


# ---- the oneDNN backend (.onednn programs) -------------------------------------------------------


@pytest.fixture(scope="session")
def onednn_tool(cpp_tool) -> Path:
    if not (build_dir() / "libe2evision_onednn.so").is_file():  # CMake builds it where oneDNN 2.x is found
        pytest.skip("the engine was built without its oneDNN backend (no oneDNN 2.x: apt-get install libdnnl-dev)")
    return cpp_tool


def _program_dir(base: Path, contract: dict, graph, names: list[str], rows: int) -> Path:
    """A .onednn file of ``graph`` with a preprocess.json made from ``contract`` (outputs resized)."""
    import torch

    from e2evision.export.onednn import lower, write_program
    from e2evision.export.run import sha256_file

    base.mkdir(parents=True)
    program, tensors = lower(graph, (torch.zeros(2, 2, 32, 32),), ["image"], names)
    path = base / "model.onednn"
    write_program(path, program, tensors)
    pre = json.loads(json.dumps(contract))
    first = pre["outputs"][0]
    pre["outputs"] = [
        {**first, "name": n, "kind": "value" if n == "value" else first["kind"], "shape": [-1, rows]} for n in names
    ]
    for out in pre["outputs"]:
        out.pop("classes", None)
    pre["exports"] = {"onednn": {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}}
    (base / "preprocess.json").write_text(json.dumps(pre))
    return path


def test_every_onednn_op_in_the_engine_equals_pytorch(onednn_tool, ts_exports, tmp_path):
    """OpZoo (test_onednn.py: every op kind, fused and standalone) through the engine's oneDNN
    primitives, on normalised inputs, equals PyTorch within 1e-5 at batch 1 and across chunks
    (37 rows: 16 + 16 + 5), for a softmax, a sigmoid and a regression head."""
    from test_onednn import images, torch_outputs, zoo_graph, zoo_names

    contract = json.loads((ts_exports["resnet15_plain"].parent / "preprocess.json").read_text())
    x = images(37)
    save_npy(tmp_path / "x.npy", x)
    for task, width in (("multiclass", 3), ("binary", 1), ("regression", 1)):
        graph, names = zoo_graph(task), zoo_names(task)
        path = _program_dir(tmp_path / task, contract, graph, names, width)
        want = torch_outputs(graph, x, names)
        for batch in (37, 1):
            outs = {n: tmp_path / f"{task}_{n}_{batch}.npy" for n in names}
            proc = run_tool(
                path, {"image": tmp_path / "x.npy"}, outs, tool=onednn_tool, batch_size=batch, extra=["--no-preprocess"]
            )
            assert proc.returncode == 0, proc.stderr
            for n in names:
                got = np.load(outs[n])
                np.testing.assert_allclose(got, want[n], rtol=0, atol=TOL * max(1.0, float(np.abs(want[n]).max())))
    info = json.loads(run_tool(path, {}, None, tool=onednn_tool, extra=["--info"]).stdout)
    assert info["backend"] == "onednn"


def test_registry_cnns_as_onednn_programs_in_the_engine(onednn_tool, ts_exports, tmp_path):
    """ResNet-18, VGG-11 (batch norm folded), the simple CNN and LeNet-5 (adaptive pooling to a
    divisor) through the engine's oneDNN primitives equal PyTorch within 1e-5 (relative to the
    logits' size), at batch 1 and across chunks."""
    from test_onednn import LOWERED, images, registry_graph, torch_outputs

    contract = json.loads((ts_exports["resnet15_plain"].parent / "preprocess.json").read_text())
    x = images(19, seed=3)
    save_npy(tmp_path / "x.npy", x)
    for name in LOWERED:
        graph = registry_graph(name)
        path = _program_dir(tmp_path / name, contract, graph, ["prob", "logit"], 1)
        want = torch_outputs(graph, x, ["prob", "logit"])
        for batch in (19, 1):
            out = tmp_path / f"{name}_{batch}.npy"
            proc = run_tool(
                path,
                {"image": tmp_path / "x.npy"},
                {"logit": out},
                tool=onednn_tool,
                batch_size=batch,
                extra=["--no-preprocess"],
            )
            assert proc.returncode == 0, (name, proc.stderr)
            scale = max(1.0, float(np.abs(want["logit"]).max()))
            np.testing.assert_allclose(np.load(out), want["logit"], rtol=0, atol=TOL * scale, err_msg=name)


def test_onednn_export_in_the_engine_and_beside_torchscript(onednn_tool, toy_runs, tmp_path, monkeypatch):
    """A trained ResNet-15 exported as a oneDNN program: the engine on the file and on a directory
    holding it beside the TorchScript export equals PyTorch within 1e-5 on raw inputs (preprocessing
    in C++); the engine test executable's checks (batch invariance, 4 threads, errors) pass on it; and
    an engine whose oneDNN module cannot be loaded says so, and on the directory falls back."""
    exp = tmp_path / "exp"
    for fmt, name in (("torchscript", "model.pt"), ("onednn", "model.onednn")):
        result = export_model(toy_runs["resnet15_plain"], fmt, exp / name, n_check=16)
        assert max(result.max_abs_diff.values()) <= TOL
    pre = json.loads((exp / "preprocess.json").read_text())
    assert (
        set(pre["exports"]) == {"torchscript", "onednn"}
        and "verify-cpp" in pre["exports"]["onednn"]["verified"]["runner"]
    )
    fold = load_fold(toy_runs["resnet15_plain"], pre["source"]["fold"])
    raw = _inputs(fold, 32)
    raw = np.concatenate([raw, raw[:8] * 1.5])  # 38 rows: calls of 37 (chunks of 16, 16, 5) and 1
    got = verify_cpp(exp / "model.onednn", raw, tool=onednn_tool, atol=TOL, rtol=0.0, batch_size=37)
    assert got.rows == raw.shape[0] == 38 and max(got.max_abs_diff.values()) <= TOL, got
    info = json.loads(run_tool(exp, {}, None, tool=onednn_tool, extra=["--info"]).stdout)
    times = {c["backend"]: c["median_ms"] for c in info["candidates"]}
    assert set(times) == {"torchscript", "onednn"} and info["backend"] == min(times, key=times.get)
    got = verify_cpp(exp, raw, tool=onednn_tool, atol=TOL, rtol=0.0, batch_size=5)
    assert max(got.max_abs_diff.values()) <= TOL

    save_npy(tmp_path / "raw.npy", raw[:12])
    expected = []
    for key, value in reference_outputs(fold, raw[:12]).items():
        save_npy(tmp_path / f"ref_{key}.npy", value)
        expected += ["--expected", f"{key}={tmp_path / f'ref_{key}.npy'}"]
    work = tmp_path / "work"
    work.mkdir()
    cmd = [
        str(build_dir() / TEST),
        "--workdir",
        str(work),
        "--model",
        str(exp / "model.onednn"),
        "--raw",
        str(tmp_path / "raw.npy"),
    ]
    proc = subprocess.run(cmd + expected, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "all checks passed" in proc.stdout, proc.stdout + proc.stderr
    assert "model loads with the onednn backend" in proc.stdout and "4 threads" in proc.stdout

    monkeypatch.setenv("E2EVISION_ONEDNN_MODULE", str(tmp_path / "absent.so"))
    _tool_error(
        run_tool(exp / "model.onednn", {}, None, tool=onednn_tool, extra=["--info"]),
        "BackendError",
        "cannot load the oneDNN backend",
    )
    info = json.loads(run_tool(exp, {}, None, tool=onednn_tool, extra=["--info"]).stdout)
    assert [c["backend"] for c in info["candidates"]] == ["torchscript"]


def test_wrong_onednn_programs_are_named(onednn_tool, ts_exports, tmp_path):
    """A program that names a tensor its file lacks, or whose layer does not fit its input, is a
    ModelFileError naming the op, at load."""
    from test_onednn import zoo_graph

    from e2evision.export.onednn import read_program, write_program
    from e2evision.export.run import sha256_file

    contract = json.loads((ts_exports["resnet15_plain"].parent / "preprocess.json").read_text())
    path = _program_dir(tmp_path / "ok", contract, zoo_graph("binary"), ["prob", "logit"], 1)
    program, tensors = read_program(path)

    def rewrite(name: str, prog: dict, tens: dict) -> Path:
        bad = tmp_path / name
        bad.mkdir()
        write_program(bad / "model.onednn", prog, tens)
        pre = json.loads((path.parent / "preprocess.json").read_text())
        f = bad / "model.onednn"
        pre["exports"]["onednn"].update(bytes=f.stat().st_size, sha256=sha256_file(f))
        (bad / "preprocess.json").write_text(json.dumps(pre))
        return f

    missing = json.loads(json.dumps(program))
    missing["ops"][0]["weight"] = "ops.0.nothing"
    f = rewrite("missing", missing, tensors)
    _tool_error(
        run_tool(f, {}, None, tool=onednn_tool, extra=["--info"]),
        "ModelFileError",
        "names tensor 'ops.0.nothing', which the file lacks",
    )
    narrow = dict(tensors)
    narrow["ops.0.weight"] = tensors["ops.0.weight"][:, :1].contiguous()  # 1 input channel for a 2-channel image
    f = rewrite("narrow", program, narrow)
    _tool_error(
        run_tool(f, {}, None, tool=onednn_tool, extra=["--info"]), "ModelFileError", "ops[0] conv weight (8, 1, 3, 3)"
    )
