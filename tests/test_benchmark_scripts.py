"""The GPU suite and the learning curve run end to end at a smoke size on the CPU, and what they
write is consistent with the run directories they trained (not a GPU measurement: CI has none)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_suite_smoke_runs_every_part_and_summarises(tmp_path):
    out = tmp_path / "suite"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_suite.sh"), "--smoke", "--out", str(out), "--python", sys.executable],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    summary = json.loads((out / "gpu_suite.json").read_text())
    assert summary["throughput"] and summary["trainer"] and summary["learning_curve"]
    md = (out / "gpu_suite.md").read_text()
    for title in ("Training throughput by mode", "Trainer against a bare loop", "Learning curve"):
        assert title in md
    curve = summary["learning_curve"]
    assert curve["sizes"] == [120, 240] and {r["model"] for r in curve["rows"]} == {"resnet15", "physics_baseline"}
    # every point was scored on the same fixed test samples, and its AUC is that of its predictions
    from e2evision.metrics import roc_auc

    tests = []
    for row in curve["rows"]:
        pred = np.load(Path(row["run_dir"]) / "predictions.npz")
        tests.append(pred["test_index"])
        assert row["n_trainval"] == row["size"] and row["n_test"] == 120
        assert row["test_auc"] == pytest.approx(roc_auc(pred["test_label"], pred["test_score"]))
    assert all(np.array_equal(t, tests[0]) for t in tests)
    # the smaller point's training samples are among the larger one's (nested subsets)
    small, large = (
        np.load(Path(r["run_dir"]) / "predictions.npz")["oof_index"] for r in curve["rows"] if r["model"] == "resnet15"
    )
    assert set(small) < set(large)
    assert (out / "curve" / "learning_curve.png").stat().st_size > 1000
    # the report shows the curve: its plot and one row per size, AUCs as the JSON has them
    from e2evision.report import build_report

    page = build_report([out / "curve"], tmp_path / "curve.html").read_text()
    assert "Learning curve: egamma" in page and page.count("data:image/png;base64") >= 1
    for row in curve["rows"]:
        assert f"{row['test_auc']:.4f}" in page
    assert "<td>120</td>" in page and "<td>240</td>" in page


@pytest.mark.slow
def test_training_throughput_smoke_times_whole_epochs_of_both(tmp_path):
    out = tmp_path / "trainer.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/training_throughput.py"),
            "--geometries",
            "2x16",
            "--n",
            "96",
            "--val",
            "16",
            "--batch",
            "16",
            "--rounds",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    (row,) = json.loads(out.read_text())
    assert row["model"] == "resnet15" and row["input"] == "2x16" and row["n"] == 96
    assert len(row["ratios"]) == 2 and row["plain"] > 0 and row["e2evision"] > 0
    assert row["ratio_median"] == pytest.approx(float(np.median(row["ratios"])))
    assert len(row["cpu_ratios"]) == 2 and all(r > 0 for r in row["cpu_ratios"])
    # the trainer ran as the runner runs a fold: one epoch of 6 batches, checkpointed at its end
    (wait,) = row["loader_wait_fraction"]
    assert 0.0 <= wait <= 1.0 and row["checkpoints"] == 1
    assert "e2e/bare" in proc.stdout


@pytest.mark.slow
def test_scale_smoke_synthesises_converts_and_trains_streaming(tmp_path):
    out, work = tmp_path / "scale.json", tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/scale.py"),
            "--n",
            "300",
            "--rows-per-file",
            "128",
            "--steps",
            "3",
            "--batch",
            "8",
            "--loader-batches",
            "4",
            "--workdir",
            str(work),
            "--json",
            str(out),
            "--keep",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    r = json.loads(out.read_text())
    assert r["files"] == 3 and r["n_samples"] == 300 and r["image_shape"] == [3, 125, 125]
    assert r["steps"] == 3 and len(r["step_s"]) == len(r["wait_s"]) == 3 and r["store_layout"] == "sparse"
    assert 0 < r["convert_peak_rss_bytes"] < 4e9 and 0 < r["train_peak_rss_bytes"] < 4e9
    assert r["loader_alone"]["images"] == 4 * 8 and r["loader_alone"]["images_per_s"] > 0
    # the synthetic files are in the public layout: the quark/gluon reader reads them as such
    from e2evision.datasets import open_dataset

    with open_dataset(sorted((work / "parquet").glob("*.parquet")), "auto") as ds:
        assert ds.format == "quark-gluon" and ds.n_samples == 300 and ds.scalar_names == ["pt", "m0"]
        x, y = ds.read(np.arange(0, 300, 37))
        assert x.shape[1:] == (3, 125, 125) and set(np.unique(y)) <= {0.0, 1.0}
        assert 0 < np.count_nonzero(x) < x.size // 20  # sparse, like jet images
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(sorted((work / "parquet").glob("*.parquet"))[0]).metadata
    assert meta.num_rows == meta.num_row_groups == 128  # one row per row group
    assert pq.ParquetFile(sorted((work / "parquet").glob("*.parquet"))[0]).schema_arrow.names == [
        "X_jets",
        "pt",
        "m0",
        "y",
    ]


@pytest.mark.slow
def test_learning_curve_on_jets_without_the_detector_response(tmp_path):
    """The quark/gluon path simulates its pool once (here generator-level, ``--no-response``), and
    every point is scored on the same held-out jets."""
    pytest.importorskip("pythia8mc")
    from e2evision.simulate.jets import read_metadata

    out = tmp_path / "qg"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks/learning_curve.py"),
        "--dataset=quark_gluon",
        "--no-response",
        "--sizes=48,96",
        "--test=48",
        "--models=resnet15",
        "--epochs=1",
        "--img=16",
        "--workers=1",
        "--seed=3",
        f"--out={out}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    curve = json.loads((out / "learning_curve.json").read_text())
    assert curve["dataset"] == "quark_gluon" and curve["response"] is False
    assert {(r["model"], r["size"]) for r in curve["rows"]} == {
        (m, n) for m in ("resnet15", "physics_baseline") for n in (48, 96)
    }
    (pool,) = (out / "data").iterdir()
    assert pool.name == "quark_gluon-n144-seed3-noresponse"
    (parquet,) = pool.glob("*.parquet")
    assert read_metadata(parquet)["config"]["response"] is None
    tests = [np.load(Path(r["run_dir"]) / "predictions.npz")["test_index"] for r in curve["rows"]]
    assert all(len(t) == 48 and np.array_equal(t, tests[0]) for t in tests)
    from e2evision.report import build_report

    page = build_report([out], tmp_path / "qg.html").read_text()
    assert "Learning curve: quark_gluon" in page and "without detector response" in page
    # a second call reuses the pool and the finished points instead of simulating or training again
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0 and "reusing 144 simulated samples" in again.stdout
    # --no-response is for jets only: a clear error, not a silent e/γ run
    bad = subprocess.run(cmd[:2] + ["--dataset=egamma", "--no-response"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--no-response applies to jets only" in bad.stderr


@pytest.mark.slow
def test_inference_latency_smoke_times_every_contender_and_names_the_best_engine_path(tmp_path):
    """The acceptance instrument of the engine-vs-onnxruntime comparison: at a toy size it trains,
    exports, times the engine's paths and onnxruntime, and its ratios are those of its medians."""
    if subprocess.run(["which", "cmake"], capture_output=True).returncode != 0:
        pytest.skip("cmake not found on PATH: the C++ engine cannot be built here")
    out = tmp_path / "latency.json"
    args = ["--models", "resnet15", "--size", "tiny", "--reps", "8", "--warmup", "2", "--rounds", "2"]
    from e2evision.export.cpp import build_dir

    # the oneDNN program too where the engine has that backend (make cpp installs oneDNN as root)
    variants = ["plain", "onednn"] if (build_dir() / "libe2evision_onednn.so").is_file() else ["plain"]
    args += ["--n-train", "64", "--cpp-variants", ",".join(variants), "--no-eager", "--workdir", str(tmp_path)]
    args += ["--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/inference_latency.py"), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["batch"]) for r in rows] == [("resnet15", 1), ("resnet15", 256)]
    for r in rows:
        assert r["reps"] == (8 if r["batch"] == 1 else 4)  # batch 256: max(5, 8 // 10) split over 2 rounds
        assert r["cpp_over_onnxruntime"] == pytest.approx(r["cpp_ms"] / r["onnxruntime_ms"])
        paths = {"TorchScript auto": "cpp", "TorchScript plain": "cpp_plain", "oneDNN program": "cpp_onednn"}
        best = paths[r["best_cpp_path"]]
        assert r[f"{best}_ms"] == min(r[f"{k}_ms"] for k in ["cpp"] + [f"cpp_{v}" for v in variants])
        assert r["best_cpp_over_onnxruntime"] == pytest.approx(r[f"{best}_ms"] / r["onnxruntime_ms"])
    verdict = "yes" if rows[0]["best_cpp_over_onnxruntime"] <= 1 else "no"
    assert f"batch 1, resnet15: engine ({rows[0]['best_cpp_path']}) ≤ onnxruntime: {verdict}" in proc.stdout
