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
from sklearn.metrics import accuracy_score, roc_auc_score, roc_curve

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
    run_dir: Path,
    *,
    name: str,
    model: str,
    shift: float,
    seed: int,
    n_params: int,
    test_seed: int | None = None,
    fingerprint: str = "sha256:" + "ab12" * 16,
) -> dict:
    """A run directory in the trainer's format whose metrics are computed from its own arrays."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    oof_label = rng.integers(0, 2, N_TRAINVAL)
    oof_fold = np.arange(N_TRAINVAL) % K
    oof_score = _sigmoid(_scores(rng, oof_label, shift))
    test_rng = np.random.default_rng(test_seed) if test_seed is not None else rng
    test_label = test_rng.integers(0, 2, N_TEST)
    test_logit = _scores(rng, test_label, shift)
    test_fold_scores = np.stack([_sigmoid(test_logit + rng.normal(0, 0.35, N_TEST)) for _ in range(K)])
    test_score = test_fold_scores.mean(axis=0)
    np.savez(
        run_dir / "predictions.npz",
        oof_score=oof_score,
        oof_label=oof_label,
        oof_fold=oof_fold,
        test_score=test_score,
        test_label=test_label,
        test_fold_scores=test_fold_scores,
        **({"test_index": np.arange(N_TEST) + 5000} if test_seed is not None else {}),
    )

    fold_auc = [float(roc_auc_score(oof_label[oof_fold == k], oof_score[oof_fold == k])) for k in range(K)]
    boot = []
    for _ in range(100):
        idx = rng.integers(0, N_TEST, N_TEST)
        boot.append(roc_auc_score(test_label[idx], test_score[idx]))
    epochs = [6, 5, 6]
    history = [
        {
            "fold": k,
            "epoch": e,
            "train_loss": 0.7 - 0.05 * e,
            "val_loss": 0.72 - 0.04 * e + 0.01 * k,
            "val_auc": 0.6 + 0.03 * e - 0.005 * k,
        }
        for k in range(K)
        for e in range(epochs[k])
    ]
    metrics = {
        "name": name,
        "model": model,
        "task": "binary",
        "n_params": n_params,
        "fold_auc": fold_auc,
        "fold_auc_mean": float(np.mean(fold_auc)),
        "fold_auc_std": float(np.std(fold_auc)),
        "oof_auc": float(roc_auc_score(oof_label, oof_score)),
        "test_auc": float(roc_auc_score(test_label, test_score)),
        "test_auc_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "train_time_s": 754.2,
        "wall_time_s": 801.0,
        "n_trainval": N_TRAINVAL,
        "n_test": N_TEST,
        "epochs": epochs,
        "history": history,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    run_info = {
        "name": name,
        "seed": seed,
        "versions": {
            "python": "3.11.7",
            "torch": "2.3.1",
            "lightning": "2.3.3",
            "e2evision": "0.1.0",
            "numpy": "1.26.4",
        },
        "data": {
            "paths": ["/data/egamma/electrons.h5", "/data/egamma/photons.h5"],
            "fingerprint": fingerprint,
            "format": "egamma-hdf5",
        },
        "started_at": "2024-06-01T10:00:00+00:00",
        "finished_at": "2024-06-01T10:13:21+00:00",
        "device": "cpu",
        "command": f"e2evision train configs/{name}.yaml --data /data/egamma",
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
        metrics = write_run(root / name, name=name, model=model, shift=shift, seed=seed, n_params=n_params)
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
        if tag == "table" and "comparison" in (a.get("class") or "").split():
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


def test_task_checks_name_the_file(runs, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(runs["vit"][0], bad)
    metrics = json.loads((bad / "metrics.json").read_text())
    metrics["task"] = "segmentation"
    (bad / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=r"metrics\.json: unknown task 'segmentation'"):
        build_report([bad], tmp_path / "r.html")
    metrics["task"] = "regression"  # a binary run's keys are not a regression run's
    (bad / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(
        ValueError,
        match=r"lacks the required key\(s\) 'fold_mae', 'oof_mae', 'test_mae' of a "
        r"regression run",
    ):
        build_report([bad], tmp_path / "r.html")


def test_no_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_report([], tmp_path / "r.html")


def _delong_p(label: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """DeLong's paired p-value from the O(m·n) definition (independent of the metrics module)."""
    from scipy.stats import norm

    def components(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = s[label == 1][:, None], s[label == 0][None, :]
        psi = (x > y) + 0.5 * (x == y)
        return psi.mean(axis=1), psi.mean(axis=0)

    (va10, va01), (vb10, vb01) = components(a), components(b)
    s10, s01 = np.cov(np.vstack([va10, vb10])), np.cov(np.vstack([va01, vb01]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / va10.size + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / va01.size
    return float(2 * norm.sf(abs(va10.mean() - vb10.mean()) / np.sqrt(var)))


def _rejection(label: np.ndarray, score: np.ndarray, eff: float) -> float:
    fpr, tpr, _ = roc_curve(label, score, drop_intermediate=False)
    k = int(np.argmax(tpr >= eff))
    eps = fpr[k - 1] + (eff - tpr[k - 1]) / (tpr[k] - tpr[k - 1]) * (fpr[k] - fpr[k - 1])
    return 1.0 / eps


def _cells(text: str, table_id: str) -> dict[str, dict]:
    part = text.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return _parse_table('<table class="comparison"' + part + "</table>")


def test_runs_are_grouped_by_dataset_with_a_significance_column(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", name="cnn", model="resnet15", shift=1.0, seed=1, n_params=10, test_seed=11)
    b = write_run(tmp_path / "b", name="vit", model="vit", shift=1.3, seed=2, n_params=20, test_seed=11)
    write_run(tmp_path / "c", name="old", model="vit", shift=0.5, seed=3, n_params=30)  # no test_index
    write_run(
        tmp_path / "d",
        name="other",
        model="cnn",
        shift=1.0,
        seed=4,
        n_params=40,
        test_seed=12,
        fingerprint="sha256:" + "cd34" * 16,
    )
    out = build_report([tmp_path / n for n in "abcd"], tmp_path / "r.html", saliency=False)
    text = out.read_text(encoding="utf-8")
    assert text.count('<table class="comparison"') == 2
    assert text.count('<h2 id="dataset-') == 2 and "3 run(s)" in text and "1 run(s)" in text
    first = _cells(text, "comparison-dataset-1")
    assert set(first) == {"cnn", "vit", "old"}
    assert b["test_auc"] > a["test_auc"] and first["vit"]["attrs"].get("class") == "best"
    assert first["vit"]["cells"]["signif"] == "best"
    with np.load(tmp_path / "a" / "predictions.npz") as pa, np.load(tmp_path / "b" / "predictions.npz") as pb:
        y, sa, sb = pa["test_label"], pa["test_score"], pb["test_score"]
        np.testing.assert_array_equal(y, pb["test_label"])
    p = _delong_p(y, sb, sa)
    assert first["cnn"]["cells"]["signif"] == f"p = {p:.3f}"  # the cell rounds, the tooltip has it in full
    assert float(first["cnn"]["titles"]["signif"].rsplit("p = ", 1)[1]) == pytest.approx(p, rel=1e-5)
    assert first["old"]["cells"]["signif"] == "n/a"
    assert "test_index not recorded" in first["old"]["titles"]["signif"]
    # background rejection at ε_S = 0.3 and 0.5, recomputed from the test scores
    for name, score in (("cnn", sa), ("vit", sb)):
        for cls, eff in (("rej30", 0.3), ("rej50", 0.5)):
            assert first[name]["cells"][cls] == f"{_rejection(y, score, eff):.3g}"
    second = _cells(text, "comparison-dataset-2")
    assert set(second) == {"other"} and second["other"]["cells"]["signif"] == "best"


def _multiclass_run(run_dir: Path, name: str, sharp: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    k, n = 3, 300
    label = np.repeat(np.arange(k), n // k)
    logits = rng.normal(0, 1, (n, k)) + sharp * np.eye(k)[label]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    folds = np.stack([prob, prob[::-1][::-1]])
    oof_label = np.repeat(np.arange(k), 40)
    oof = np.exp(rng.normal(0, 1, (120, k)) + sharp * np.eye(k)[oof_label])
    oof /= oof.sum(axis=1, keepdims=True)
    np.savez(
        run_dir / "predictions.npz",
        test_score=prob,
        test_label=label,
        test_fold_scores=folds,
        test_index=np.arange(n),
        oof_score=oof,
        oof_label=oof_label,
        oof_fold=np.arange(120) % 2,
    )
    auc = float(roc_auc_score(label, prob, multi_class="ovr"))
    metrics = {
        "name": name,
        "model": "m",
        "task": "multiclass",
        "class_names": ["axion", "cdm", "no_sub"],
        "n_params": 5,
        "train_time_s": 1.0,
        "epochs": [2, 2],
        "history": [],
        "fold_auc": [auc, auc],
        "fold_auc_mean": auc,
        "fold_auc_std": 0.0,
        "oof_auc": auc,
        "test_auc": auc,
        "test_auc_ci": [auc - 0.01, auc + 0.01],
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "run.json").write_text(json.dumps({"data": {"fingerprint": "sha256:lens", "format": "deeplense"}}))


def _regression_run(run_dir: Path, name: str, noise: float, seed: int, ensemble: bool = False) -> None:
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    truth = np.random.default_rng(99).uniform(100, 250, 400)
    pred = truth + rng.normal(2.0, noise, truth.size)
    np.savez(
        run_dir / "predictions.npz",
        test_score=pred,
        test_label=truth,
        test_fold_scores=np.stack([pred, pred]),
        test_index=np.arange(truth.size),
    )
    mae = float(np.mean(np.abs(pred - truth)))
    metrics = {
        "name": name,
        "model": "m",
        "task": "regression",
        "n_params": 5,
        "train_time_s": 1.0,
        "epochs": [2, 2],
        "history": [{"fold": 0, "epoch": 0, "train_loss": 1.0, "val_loss": 1.0, "val_mae": mae}],
        "fold_mae": [mae, mae],
        "oof_mae": mae,
    }
    if ensemble:  # what `e2evision ensemble` writes: the summary under "test"
        metrics["test"] = {"mae": mae, "bias": float(np.mean(pred - truth)), "resolution_robust": 1.0}
    else:
        metrics.update(test_mae=mae, test_mae_ci=[mae - 1, mae + 1])
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "run.json").write_text(json.dumps({"data": {"fingerprint": "sha256:mass", "format": "top-mass"}}))


def test_multiclass_and_regression_sections(tmp_path: Path) -> None:
    from scipy.stats import wilcoxon

    _multiclass_run(tmp_path / "l1", "lens_a", 2.0, 1)
    _multiclass_run(tmp_path / "l2", "lens_b", 1.0, 2)
    _regression_run(tmp_path / "m1", "mass_a", 5.0, 3)
    _regression_run(tmp_path / "m2", "mass_b", 9.0, 4, ensemble=True)
    runs = [tmp_path / n for n in ("l1", "l2", "m1", "m2")]
    text = build_report(runs, tmp_path / "r.html", saliency=False).read_text(encoding="utf-8")
    assert 'alt="confusion matrices on the test split"' in text
    assert 'alt="one-vs-rest ROC curves per class on the test split"' in text
    assert 'alt="regression residuals, prediction against truth, resolution in bins of the truth"' in text
    lens = _cells(text, "comparison-dataset-1")
    with np.load(tmp_path / "l2" / "predictions.npz") as npz:
        y, s = npz["test_label"], npz["test_score"]
    per_class = ", ".join(f"{n} {roc_auc_score(y == c, s[:, c]):.3f}" for c, n in enumerate(["axion", "cdm", "no_sub"]))
    assert lens["lens_b"]["cells"]["ovr-auc"] == per_class
    assert lens["lens_b"]["cells"]["accuracy"] == f"{accuracy_score(y, s.argmax(1)):.4f}"
    assert lens["lens_a"]["cells"]["signif"] == "best" and lens["lens_b"]["cells"]["signif"].startswith("p = ")
    mass = _cells(text, "comparison-dataset-2")
    with np.load(tmp_path / "m1" / "predictions.npz") as a, np.load(tmp_path / "m2" / "predictions.npz") as b:
        t, pa, pb = a["test_label"], a["test_score"], b["test_score"]
    assert mass["mass_a"]["attrs"].get("class") == "best"  # the lower MAE
    assert mass["mass_a"]["cells"]["test-mae"].startswith(f"{np.mean(np.abs(pa - t)):.4g}")
    assert mass["mass_b"]["cells"]["test-mae"] == f"{np.mean(np.abs(pb - t)):.4g}"  # ensemble: test.mae, no CI
    assert mass["mass_a"]["cells"]["bias"] == f"{np.mean(pa - t):.4g}"
    p = wilcoxon(np.abs(pa - t), np.abs(pb - t)).pvalue
    assert float(mass["mass_b"]["titles"]["signif"].rsplit("p = ", 1)[1]) == pytest.approx(p, rel=1e-5)


def test_saliency_maps_from_the_run_or_its_weights(egamma_pair, tmp_path: Path) -> None:
    from e2evision.config import load_config
    from e2evision.training import run_experiment

    p, e, *_ = egamma_pair
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(
        root / "configs/egamma_resnet15.yaml",
        [
            f"data.paths={json.dumps([str(p), str(e)])}",
            "train.max_epochs=1",
            "train.folds=2",
            "train.progress=false",
            "model.kwargs.widths=[4, 8]",
        ],
    )
    run = tmp_path / "run"
    run_experiment(cfg, run)
    alt = 'alt="saliency maps of resnet15"'
    assert alt in build_report([run], tmp_path / "a.html").read_text(encoding="utf-8")  # saliency.npz
    (run / "saliency.npz").unlink()
    assert alt in build_report([run], tmp_path / "b.html").read_text(encoding="utf-8")  # from fold 0's weights
    text = build_report([run], tmp_path / "c.html", saliency=False).read_text(encoding="utf-8")
    assert alt not in text and "No saliency maps: no saliency.npz in this run" in text


# ---------------------------------------------------------------------------------------- browser
def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not installed: `make browser` (as root) installs Debian's chromium")
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
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
    _chromium([f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", url], tmp_path / "profile-shot")
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000
