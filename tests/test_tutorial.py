"""docs/tutorial.ipynb runs end to end (at a tiny size) and its numbers are the run's own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    tiny = {"N": "160", "FOLDS": "2", "EPOCHS": "1", "TINY": "1", "DIR": str(tmp_path)}
    for key, value in tiny.items():
        monkeypatch.setenv(f"E2E_TUTORIAL_{key}", value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "max |predict − predictions.npz| on the test split:" in text
    assert "max |ONNX − predictions.npz|" in text
    # the notebook's own comparisons are within the acceptance bounds
    for line in text.splitlines():
        if line.startswith("max |predict"):
            assert float(line.rsplit(" ", 1)[1]) <= 1e-6, line
        if line.startswith("max |ONNX"):
            assert float(line.rsplit(" ", 1)[1]) <= 1e-5, line
    run = tmp_path / "resnet15"
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["fold_auc"]) == 2 and (tmp_path / "report.html").is_file()
    assert (tmp_path / "export" / "model.onnx").is_file()
    assert (tmp_path / "export" / "preprocess.json").is_file()
    assert np.load(run / "predictions.npz")["test_score"].size == metrics["n_test"]
