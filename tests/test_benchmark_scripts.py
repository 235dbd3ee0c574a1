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
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_suite.sh"), "--smoke", "--out", str(out),
                           "--python", sys.executable], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
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
    small, large = (np.load(Path(r["run_dir"]) / "predictions.npz")["oof_index"]
                    for r in curve["rows"] if r["model"] == "resnet15")
    assert set(small) < set(large)
    assert (out / "curve" / "learning_curve.png").stat().st_size > 1000
    # the report shows the curve: its plot and one row per size, AUCs as the JSON has them
    from e2evision.report import build_report

    page = build_report([out / "curve"], tmp_path / "curve.html").read_text()
    assert "Learning curve: egamma" in page and page.count("data:image/png;base64") >= 1
    for row in curve["rows"]:
        assert f"{row['test_auc']:.4f}" in page
    assert "<td>120</td>" in page and "<td>240</td>" in page
