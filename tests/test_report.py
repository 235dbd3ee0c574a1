"""The HTML report: self-contained, right numbers, clear errors, renders in chromium."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from e2evision.report import build_report

K = 3
N_TRAINVAL = 1200
N_TEST = 800


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _scores(rng: np.random.Generator, label: np.ndarray, shift: float) -> np.ndarray:
    """Logits from N(0,1) for background and N(shift,1) for signal: AUC = Phi(shift / sqrt 2)."""
    return rng.normal(0.0, 1.0, label.size) + shift * label


def write_run(
    run_dir: Path, *, name: str, model: str, shift: float, seed: int, n_params: int
) -> dict:
    """A run directory in the trainer's format whose metrics are computed from its own arrays."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    oof_label = rng.integers(0, 2, N_TRAINVAL)
    oof_fold = np.arange(N_TRAINVAL) % K
    oof_score = _sigmoid(_scores(rng, oof_label, shift))
    test_label = rng.integers(0, 2, N_TEST)
    test_logit = _scores(rng, test_label, shift)
    test_fold_scores = np.stack(
        [_sigmoid(test_logit + rng.normal(0, 0.35, N_TEST)) for _ in range(K)]
    )
    test_score = test_fold_scores.mean(axis=0)
    np.savez(
        run_dir / "predictions.npz", oof_score=oof_score, oof_label=oof_label, oof_fold=oof_fold,
        test_score=test_score, test_label=test_label, test_fold_scores=test_fold_scores,
    )

    fold_auc = [
        float(roc_auc_score(oof_label[oof_fold == k], oof_score[oof_fold == k])) for k in range(K)
    ]
    boot = []
    for _ in range(100):
        idx = rng.integers(0, N_TEST, N_TEST)
        boot.append(roc_auc_score(test_label[idx], test_score[idx]))
    epochs = [6, 5, 6]
    history = [
        {"fold": k, "epoch": e, "train_loss": 0.7 - 0.05 * e,
         "val_loss": 0.72 - 0.04 * e + 0.01 * k, "val_auc": 0.6 + 0.03 * e - 0.005 * k}
        for k in range(K) for e in range(epochs[k])
    ]
    metrics = {
        "name": name, "model": model, "task": "binary", "n_params": n_params,
        "fold_auc": fold_auc, "fold_auc_mean": float(np.mean(fold_auc)),
        "fold_auc_std": float(np.std(fold_auc)),
        "oof_auc": float(roc_auc_score(oof_label, oof_score)),
        "test_auc": float(roc_auc_score(test_label, test_score)),
        "test_auc_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "train_time_s": 754.2, "wall_time_s": 801.0, "n_trainval": N_TRAINVAL, "n_test": N_TEST,
        "epochs": epochs, "history": history,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    run_info = {
        "name": name, "seed": seed,
        "versions": {"python": "3.11.7", "torch": "2.3.1", "lightning": "2.3.3",
                     "e2evision": "0.1.0", "numpy": "1.26.4"},
        "data": {"paths": ["/data/egamma/electrons.h5", "/data/egamma/photons.h5"],
                 "fingerprint": "sha256:" + "ab12" * 16},
        "started_at": "2024-06-01T10:00:00+00:00", "finished_at": "2024-06-01T10:13:21+00:00",
        "device": "cpu", "command": f"e2evision train configs/{name}.yaml --data /data/egamma",
    }
    (run_dir / "run.json").write_text(json.dumps(run_info, indent=2))
    config = f"model:\n  name: {model}\ntrain:\n  folds: {K}\n  lr: 0.001\n"
    (run_dir / "config.yaml").write_text(config)
    return metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, model, shift, seed, n_params in (
        ("resnet15", "resnet15", 0.95, 1, 1_234_567),  # AUC ~ 0.75
        ("vit", "vit_tiny", 1.47, 2, 5_432_100),  # AUC ~ 0.85
    ):
        metrics = write_run(root / name, name=name, model=model, shift=shift, seed=seed,
                            n_params=n_params)
        out[name] = (root / name, metrics)
    return out


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    path = build_report([p for p, _ in runs.values()], out, title="Test <report>")
    assert path == out
    return path


class _TableParser(HTMLParser):
    """Collects, per <tr data-run>, its attributes and the text of each cell by class."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict] = {}
        self._row: dict | None = None
        self._cell: str | None = None
        self._in_table = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == "comparison":
            self._in_table = True
        elif self._in_table and tag == "tr" and "data-run" in a:
            self._row = {"attrs": a, "cells": {}, "titles": {}}
            self.rows[a["data-run"]] = self._row
        elif self._row is not None and tag == "td":
            self._cell = a.get("class", "")
            self._row["cells"][self._cell] = ""
            self._row["titles"][self._cell] = a.get("title")

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._in_table = False

    def handle_data(self, data):
        if self._row is not None and self._cell is not None:
            self._row["cells"][self._cell] += data


def _parse_table(text: str) -> dict[str, dict]:
    parser = _TableParser()
    parser.feed(text)
    return parser.rows


def test_report_is_one_self_contained_file(report: Path) -> None:
    assert report.is_file()
    # no side files, no temporary file left behind
    assert [p.name for p in report.parent.iterdir()] == ["report.html"]
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "<script" not in text.lower()
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(pngs) >= 4  # ROC pair, score distributions, learning curves of each run
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "Test &lt;report&gt;" in text and "Test <report>" not in text


def test_table_has_one_row_per_run_with_the_right_numbers(report: Path, runs) -> None:
    rows = _parse_table(report.read_text(encoding="utf-8"))
    assert set(rows) == {"resnet15", "vit"}
    for name, (_, m) in runs.items():
        cells = rows[name]["cells"]
        assert cells["name"].startswith(name)
        assert cells["model"] == m["model"]
        assert cells["fold-auc"] == f"{m['fold_auc_mean']:.4f} ± {m['fold_auc_std']:.4f}"
        assert cells["oof-auc"] == f"{m['oof_auc']:.4f}"
        lo, hi = m["test_auc_ci"]
        assert cells["test-auc"] == f"{m['test_auc']:.4f} [{lo:.4f}, {hi:.4f}]"
        assert rows[name]["titles"]["params"] == f"{m['n_params']:,} parameters"
        assert cells["time"] == "12 min 34 s"
        assert cells["epochs"] == "6, 5, 6"
    assert rows["resnet15"]["cells"]["params"] == "1.23 M"
    assert rows["vit"]["cells"]["params"] == "5.43 M"
    # the synthetic AUCs differ as designed, and the better run is the one marked
    assert 0.70 < runs["resnet15"][1]["test_auc"] < 0.80 < runs["vit"][1]["test_auc"] < 0.90
    assert rows["vit"]["attrs"].get("class") == "best"
    assert rows["resnet15"]["attrs"].get("class") != "best"


def test_report_has_provenance_and_config(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    full = "sha256:" + "ab12" * 16
    assert f'title="{full}"' in text  # full fingerprint in the tooltip ...
    assert ">sha256:ab12ab12ab12…<" in text  # ... a short one on the page
    assert "/data/egamma/electrons.h5" in text
    versions = {"torch": "2.3.1", "lightning": "2.3.3", "e2evision": "0.1.0", "numpy": "1.26.4"}
    for pkg, ver in versions.items():
        assert re.search(rf"{pkg}&nbsp;<code>{re.escape(ver)}</code>", text)
    assert "2024-06-01T10:13:21+00:00" in text
    assert text.count("<details>") == 2 and "lr: 0.001" in text


def test_text_from_run_dirs_is_escaped(tmp_path: Path) -> None:
    evil = "<img src=x onerror=alert(1)>"
    write_run(tmp_path / "evil", name=evil, model="m&m", shift=1.0, seed=3, n_params=999)
    text = build_report([tmp_path / "evil"], tmp_path / "r.html").read_text(encoding="utf-8")
    assert evil not in text
    assert html.escape(evil) in text and "m&amp;m" in text
    assert _parse_table(text)[evil]["cells"]["params"] == "999"


def test_out_directory_gets_report_html(runs, tmp_path: Path) -> None:
    path = build_report([runs["vit"][0]], tmp_path)
    assert path == tmp_path / "report.html" and path.is_file()


def test_missing_run_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_report([missing], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_missing_metrics_json(runs, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(runs["vit"][0], bad)
    (bad / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="metrics.json") as info:
        build_report([runs["resnet15"][0], bad], tmp_path / "r.html")
    assert str(bad) in str(info.value)
    assert not (tmp_path / "r.html").exists()


def test_missing_predictions(runs, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(runs["vit"][0], bad)
    (bad / "predictions.npz").unlink()
    with pytest.raises(FileNotFoundError, match="predictions.npz") as info:
        build_report([bad], tmp_path / "r.html")
    assert str(bad) in str(info.value)


def test_metrics_missing_a_key(runs, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(runs["vit"][0], bad)
    metrics = json.loads((bad / "metrics.json").read_text())
    del metrics["fold_auc"]
    (bad / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="fold_auc") as info:
        build_report([bad], tmp_path / "r.html")
    assert str(bad / "metrics.json") in str(info.value)


def test_non_binary_task_is_not_implemented(runs, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(runs["vit"][0], bad)
    metrics = json.loads((bad / "metrics.json").read_text())
    metrics["task"] = "regression"
    (bad / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(NotImplementedError, match="regression"):
        build_report([bad], tmp_path / "r.html")


def test_no_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_report([], tmp_path / "r.html")


# ---------------------------------------------------------------------------------------- browser
def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not installed: `make browser` (as root) installs Debian's chromium")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.browser
def test_report_renders_in_chromium(report: Path, runs, tmp_path: Path) -> None:
    url = report.resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom").stdout
    rows = _parse_table(dom)
    assert set(rows) == set(runs)
    for name in runs:
        assert rows[name]["cells"]["name"].startswith(name)
    assert rows["vit"]["attrs"].get("class") == "best"

    shot = tmp_path / "report.png"
    _chromium([f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", url],
              tmp_path / "profile-shot")
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000
