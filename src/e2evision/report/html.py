"""One self-contained HTML page that compares finished runs.

The page must survive being mailed, attached to a ticket or opened years later offline, so
everything is inline: CSS in a ``<style>`` block, figures as base64 PNGs, no JavaScript and no
external URLs. Every piece of text that comes from a run directory is passed through
:func:`html.escape` because run names, paths and commands are user-controlled.

A run directory is what the trainer writes (``metrics.json``, ``run.json``, ``predictions.npz``,
``config.yaml``); ``metrics.json`` and ``predictions.npz`` are required, the other two are shown
when present so that a half-copied run still gives a useful page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator
from sklearn.metrics import roc_auc_score, roc_curve

from e2evision.utils.io import atomic_write_text

__all__ = ["build_report", "REQUIRED_METRICS", "REQUIRED_PREDICTIONS"]

#: Keys of ``metrics.json`` the page cannot be drawn without.
REQUIRED_METRICS: tuple[str, ...] = (
    "name", "model", "task", "n_params", "fold_auc", "fold_auc_mean", "fold_auc_std", "oof_auc",
    "test_auc", "test_auc_ci", "train_time_s", "epochs", "history",
)
#: Arrays of ``predictions.npz`` the test-split figures need (the ``oof_*`` arrays are optional).
REQUIRED_PREDICTIONS: tuple[str, ...] = ("test_score", "test_label", "test_fold_scores")

# Versions shown first in the provenance table; any others recorded follow in their own order.
_KEY_PACKAGES = ("e2evision", "torch", "lightning", "numpy")
_DPI = 100
_PNG_META = {"Software": None}  # keeps the embedded PNGs free of a matplotlib URL and reproducible


# --------------------------------------------------------------------------------------- loading
@dataclass
class _Run:
    """Everything read from one run directory, validated once so that drawing code can trust it."""

    path: Path
    metrics: dict[str, Any]
    preds: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)  # run.json, {} when absent
    config: str | None = None  # config.yaml text, None when absent
    anchor: str = ""

    @property
    def name(self) -> str:
        return str(self.metrics["name"])


def _load_run(run_dir: str | os.PathLike[str]) -> _Run:
    """Read and validate one run directory, naming the path and the culprit in every error."""
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"run directory {path} is not a directory")

    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"{path} is not a finished run: metrics.json is missing ({metrics_path})"
        )
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{metrics_path} is not valid JSON: {exc}") from exc
    if not isinstance(metrics, dict):
        raise ValueError(f"{metrics_path} must hold a JSON object, got {type(metrics).__name__}")
    if "task" not in metrics:
        raise ValueError(f"{metrics_path} lacks the required key 'task'")
    if metrics["task"] != "binary":
        raise NotImplementedError(
            f"{metrics_path}: task {metrics['task']!r} is not supported yet; the report only "
            "handles binary classification runs"
        )
    missing = [k for k in REQUIRED_METRICS if k not in metrics]
    if missing:
        keys = ", ".join(repr(k) for k in missing)
        raise ValueError(f"{metrics_path} lacks the required key(s) {keys}")

    preds_path = path / "predictions.npz"
    if not preds_path.is_file():
        raise FileNotFoundError(
            f"{path} has no predictions: predictions.npz is missing ({preds_path})"
        )
    try:
        with np.load(preds_path, allow_pickle=False) as npz:
            preds = {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{preds_path} could not be read as a numeric .npz: {exc}") from exc
    _check_predictions(preds, preds_path)

    info: dict[str, Any] = {}
    info_path = path / "run.json"
    if info_path.is_file():
        try:
            loaded = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{info_path} is not valid JSON: {exc}") from exc
        info = loaded if isinstance(loaded, dict) else {}
    config_path = path / "config.yaml"
    config = None
    if config_path.is_file():
        config = config_path.read_text(encoding="utf-8", errors="replace")
    return _Run(path=path, metrics=metrics, preds=preds, info=info, config=config)


def _check_predictions(preds: Mapping[str, np.ndarray], where: Path) -> None:
    """Catch shape and label mistakes here, where the message can name the file."""
    missing = [k for k in REQUIRED_PREDICTIONS if k not in preds]
    if missing:
        raise ValueError(f"{where} lacks the required array(s) {', '.join(map(repr, missing))}")
    score, label, folds = preds["test_score"], preds["test_label"], preds["test_fold_scores"]
    if score.ndim != 1 or label.shape != score.shape:
        raise ValueError(
            f"{where}: test_score {score.shape} and test_label {label.shape} must be "
            "equal-length 1-D arrays"
        )
    if folds.ndim != 2 or folds.shape[1] != score.shape[0]:
        raise ValueError(
            f"{where}: test_fold_scores must have shape (K, {score.shape[0]}), got {folds.shape}"
        )
    classes = set(np.unique(label).tolist())
    if not classes <= {0, 1} or len(classes) < 2:
        raise ValueError(
            f"{where}: test_label must contain both classes 0 and 1, found {sorted(classes)}"
        )


# ------------------------------------------------------------------------------------ formatting
def _e(value: Any) -> str:
    """Escape for both element text and quoted attribute values."""
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt_auc(value: Any, digits: int = 4) -> str:
    x = _num(value)
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def _fmt_params(n: Any) -> str:
    """1234567 -> '1.23 M': a table column people compare by eye, exact value in the tooltip."""
    x = _num(n)
    if not math.isfinite(x):
        return "n/a"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{int(x)}"


def _fmt_duration(seconds: Any) -> str:
    s = _num(seconds)
    if not math.isfinite(s):
        return "n/a"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _fmt_epochs(epochs: Any) -> str:
    if not isinstance(epochs, (list, tuple)):
        return _e(epochs)
    if epochs and all(e == epochs[0] for e in epochs):
        return f"{epochs[0]} &times; {len(epochs)}"
    return ", ".join(_e(e) for e in epochs)


def _short_hash(fingerprint: str, keep: int = 12) -> str:
    algo, _, digest = fingerprint.rpartition(":")
    if len(digest) <= keep:
        return fingerprint
    return f"{algo + ':' if algo else ''}{digest[:keep]}…"


def _png(fig: Figure, alt: str) -> str:
    """Render a figure to an inline <img>, so the page carries its own pictures."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata=_PNG_META)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="fig" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _colors(n: int) -> list[str]:
    """tab10 colours, one per run, shared by all figures so a run keeps its colour."""
    base = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    return [base[i % len(base)] for i in range(n)]


# --------------------------------------------------------------------------------------- figures
def _fpr_grid(n_neg: int) -> np.ndarray:
    """FPR points dense at both ends: linear for the ROC plot, logarithmic for the rejection one."""
    lo = max(1.0 / max(n_neg, 1), 1e-6)
    linear = np.linspace(0.0, 1.0, 201)
    return np.unique(np.concatenate([linear, np.logspace(np.log10(lo), 0.0, 200)]))


def _fold_band(label: np.ndarray, fold_scores: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """Per-fold TPR on a common FPR grid, shape (K, len(grid)); None when there is one fold."""
    if fold_scores.shape[0] < 2:
        return None
    rows = []
    for s in fold_scores:
        fpr, tpr, _ = roc_curve(label, s)
        rows.append(np.interp(grid, fpr, tpr))
    return np.vstack(rows)


def _roc_figure(runs: Sequence[_Run], colors: Sequence[str]) -> str:
    """Standard ROC and HEP rejection curve side by side, with the min–max band over folds."""
    fig = Figure(figsize=(12.5, 5.6 + 0.25 * math.ceil((len(runs) + 1) / 3)), layout="constrained")
    ax_roc, ax_rej = fig.subplots(1, 2)
    ax_roc.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1)
    eff = np.linspace(0.01, 1, 100)
    (random,) = ax_rej.plot(eff, 1 / eff, ls=":", color="0.5", lw=1)
    max_rej = 1.0
    handles: list[Any] = []
    labels: list[str] = []
    for run, color in zip(runs, colors):
        label, score = run.preds["test_label"], run.preds["test_score"]
        fpr, tpr, _ = roc_curve(label, score)
        auc = roc_auc_score(label, score)
        (line,) = ax_roc.plot(fpr, tpr, color=color, lw=1.8)
        keep = fpr > 0
        ax_rej.plot(tpr[keep], 1.0 / fpr[keep], color=color, lw=1.8)
        if keep.any():
            max_rej = max(max_rej, float(1.0 / fpr[keep].min()))

        grid = _fpr_grid(int((label == 0).sum()))
        band = _fold_band(label, run.preds["test_fold_scores"], grid)
        handle: Any = line
        if band is not None:
            lo, hi = band.min(axis=0), band.max(axis=0)
            patch = ax_roc.fill_between(grid, lo, hi, color=color, alpha=0.18, lw=0)
            pos = grid > 0
            ax_rej.fill_betweenx(1.0 / grid[pos], lo[pos], hi[pos], color=color, alpha=0.18, lw=0)
            handle = (patch, line)  # one legend entry per run: the line drawn over its band
        handles.append(handle)
        labels.append(f"{run.name} (AUC = {auc:.4f})")

    ax_roc.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="background efficiency (false-positive rate)",
               ylabel="signal efficiency (true-positive rate)", title="ROC curve (test split)")
    handles.append(random)
    labels.append("random guess")
    ax_rej.set_yscale("log")
    ax_rej.yaxis.set_major_locator(LogLocator(base=10))
    ax_rej.set(xlim=(0, 1), ylim=(1, max_rej * 1.5),
               xlabel="signal efficiency (true-positive rate)",
               ylabel="background rejection 1 / FPR", title="Background rejection (test split)")
    for ax in (ax_roc, ax_rej):
        ax.grid(True, which="major", alpha=0.3)
    # One legend under both panels: the curves of the rejection plot fill every corner.
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), fontsize=10,
               frameon=False)
    return _png(fig, "ROC and background-rejection curves on the test split")


def _score_figure(runs: Sequence[_Run], colors: Sequence[str]) -> str:
    """Test-score histograms per class, one panel per run, on shared bins for comparability."""
    n = len(runs)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.3 * ncols + 0.5, 3.4 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    bins = np.linspace(0.0, 1.0, 41)
    for ax, run, color in zip(axes, runs, colors):
        label, score = run.preds["test_label"], run.preds["test_score"]
        ax.hist(score[label == 1], bins=bins, density=True, histtype="stepfilled", alpha=0.35,
                color=color, label=f"signal (n={int((label == 1).sum())})")
        ax.hist(score[label == 0], bins=bins, density=True, histtype="step", lw=1.6, color="0.25",
                label=f"background (n={int((label == 0).sum())})")
        ax.set(xlim=(0, 1), xlabel="score (fold-ensemble mean)", ylabel="density", title=run.name)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # headroom so the legend does not cover the bars
        ax.legend(fontsize=8.5, loc="upper center", ncol=2)
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig, "score distributions per class on the test split")


def _history_figure(run: _Run, color: str) -> str | None:
    """Validation AUC and the two losses per epoch, one line per fold; None without history."""
    hist = [h for h in run.metrics.get("history") or [] if isinstance(h, Mapping)]
    if not hist:
        return None
    folds = sorted({h.get("fold", 0) for h in hist}, key=lambda f: (str(type(f)), f))
    fig = Figure(figsize=(12.5, 3.6))
    ax_auc, ax_loss = fig.subplots(1, 2)
    cmap = [color] if len(folds) == 1 else None
    for i, fold in enumerate(folds):
        rows = sorted((h for h in hist if h.get("fold", 0) == fold),
                      key=lambda h: _num(h.get("epoch")))
        ep = np.array([_num(h.get("epoch")) for h in rows])
        c = cmap[0] if cmap else f"C{i % 10}"
        auc = np.array([_num(h.get("val_auc")) for h in rows])
        ax_auc.plot(ep, auc, marker="o", ms=3, lw=1.4, color=c, label=f"fold {fold}")
        ax_loss.plot(ep, [_num(h.get("train_loss")) for h in rows], lw=1.4, color=c,
                     label=f"fold {fold} train")
        ax_loss.plot(ep, [_num(h.get("val_loss")) for h in rows], lw=1.4, ls="--", color=c,
                     label=f"fold {fold} val")
    ax_auc.set(xlabel="epoch", ylabel="validation AUC", title=f"{run.name}: validation AUC")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{run.name}: loss (solid train, dashed val)")
    ax_auc.legend(fontsize=8, ncol=2 if len(folds) > 5 else 1, loc="best")
    ax_loss.legend(fontsize=7.5, ncol=2, loc="best")
    for ax in (ax_auc, ax_loss):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _png(fig, f"learning curves of {run.name}")


# ----------------------------------------------------------------------------------------- HTML
_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dde5; --accent:#2458a6; --best:#e7f4e4; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: var(--fg); margin: 0; background: #f6f7f9; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 17px; margin: 22px 0 8px; }
p.meta, p.note { color: var(--muted); margin: 4px 0 12px; }
section.card { background: #fff; border: 1px solid var(--line); border-radius: 8px;
               padding: 14px 18px; margin: 14px 0; }
table { border-collapse: collapse; background: #fff; }
#comparison { width: 100%; border: 1px solid var(--line); }
.table-wrap { overflow-x: auto; }
#comparison th, #comparison td { padding: 8px 12px; border-bottom: 1px solid var(--line);
                                 text-align: right; white-space: nowrap; }
#comparison td.name, #comparison td.model { white-space: normal; overflow-wrap: anywhere;
                                            min-width: 8em; }
#comparison th { background: #eef1f6; font-weight: 600; }
#comparison th:first-child, #comparison td:first-child,
#comparison th:nth-child(2), #comparison td:nth-child(2) { text-align: left; }
#comparison td { font-variant-numeric: tabular-nums; }
#comparison tr.best td { background: var(--best); }
#comparison tr.best td.test-auc { font-weight: 700; }
.badge { display: inline-block; margin-left: 6px; padding: 0 6px; border-radius: 9px;
         font-size: 12px; background: #2e7d32; color: #fff; vertical-align: 1px; }
.ci { color: var(--muted); font-size: 13px; font-weight: normal; }
a { color: var(--accent); text-decoration: none; }
[title] { cursor: help; }
img.fig { display: block; max-width: 100%; height: auto; margin: 6px auto; }
table.kv th { text-align: left; color: var(--muted); font-weight: 500; padding: 3px 14px 3px 0;
              vertical-align: top; white-space: nowrap; }
table.kv td { padding: 3px 0; word-break: break-all; }
code { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
ul.paths { margin: 0; padding-left: 18px; }
details { margin-top: 10px; }
summary { cursor: pointer; color: var(--accent); }
pre { background: #f3f4f7; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      overflow-x: auto; font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
footer { color: var(--muted); font-size: 13px; margin-top: 36px; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p class="meta">{n_runs} run(s) &middot; generated {generated} &middot; e2evision {version}</p>

<h2 id="comparison-heading">Comparison</h2>
<div class="table-wrap">{table}</div>
<p class="note">AUC mean &plusmn; std over the K validation folds; OOF: AUC of the pooled
out-of-fold predictions; test: AUC of the fold-ensemble mean score on the held-out test split,
with its 95 % bootstrap interval. The best test AUC is highlighted.</p>

<h2 id="roc">ROC curves (test split)</h2>
<section class="card">{roc}
<p class="note">Shaded: min&ndash;max over the per-fold models of the TPR at a common FPR grid.
Right: background rejection (1/FPR) against signal efficiency, the usual HEP view.</p></section>

<h2 id="scores">Score distributions (test split)</h2>
<section class="card">{scores}</section>

<h2 id="runs">Runs</h2>
{runs}

<footer>Self-contained page: all figures are embedded, nothing is loaded from the network.</footer>
</main>
</body>
</html>
"""


def _table(runs: Sequence[_Run]) -> str:
    """The comparison table; rows carry data-run so tests and scripts can find a run's row."""
    test_aucs = [_num(r.metrics["test_auc"]) for r in runs]
    finite = [a for a in test_aucs if math.isfinite(a)]
    best = max(finite) if finite else math.nan
    head = ("<tr><th>Run</th><th>Model</th><th>Parameters</th><th>AUC (folds)</th><th>OOF AUC</th>"
            "<th>Test AUC [95 % CI]</th><th>Training time</th><th>Epochs</th></tr>")
    rows = []
    for run, auc in zip(runs, test_aucs):
        m = run.metrics
        is_best = math.isfinite(auc) and auc == best
        ci = m.get("test_auc_ci") or []
        ci_txt = (f' <span class="ci">[{_fmt_auc(ci[0])}, {_fmt_auc(ci[1])}]</span>'
                  if isinstance(ci, (list, tuple)) and len(ci) == 2 else "")
        folds = m.get("fold_auc") or []
        fold_title = ""
        if isinstance(folds, list):
            fold_title = "per fold: " + ", ".join(_fmt_auc(a) for a in folds)
        n_params = _num(m["n_params"])
        exact = f"{int(n_params):,} parameters" if math.isfinite(n_params) else "unknown"
        secs = _num(m["train_time_s"])
        time_title = f"{secs:.1f} s summed over folds"
        if math.isfinite(_num(m.get("wall_time_s"))):
            time_title += f"; wall time {_fmt_duration(m['wall_time_s'])}"
        badge = ' <span class="badge">best</span>' if is_best else ""
        best_cls = ' class="best"' if is_best else ""
        rows.append(
            f'<tr data-run="{_e(run.name)}"{best_cls}>'
            f'<td class="name"><a href="#{run.anchor}">{_e(run.name)}</a>{badge}</td>'
            f'<td class="model">{_e(m["model"])}</td>'
            f'<td class="params" title="{_e(exact)}">{_e(_fmt_params(n_params))}</td>'
            f'<td class="fold-auc" title="{_e(fold_title)}">'
            f'{_fmt_auc(m["fold_auc_mean"])} &plusmn; '
            f'{_fmt_auc(m["fold_auc_std"])}</td>'
            f'<td class="oof-auc">{_fmt_auc(m["oof_auc"])}</td>'
            f'<td class="test-auc">{_fmt_auc(auc)}{ci_txt}</td>'
            f'<td class="time" title="{_e(time_title)}">{_e(_fmt_duration(secs))}</td>'
            f'<td class="epochs" title="per fold: {_e(m["epochs"])}">'
            f'{_fmt_epochs(m["epochs"])}</td>'
            "</tr>"
        )
    body = "\n".join(rows)
    return f'<table id="comparison">\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _kv_rows(pairs: Iterable[tuple[str, str]]) -> str:
    """Rows of a key/value table; values are already-escaped HTML."""
    return "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _provenance(run: _Run) -> str:
    """What someone needs to reproduce the run: seed, data identity, versions, when and where."""
    info = run.info
    if not info:
        return '<p class="note">run.json is missing: no provenance recorded for this run.</p>'
    data = info.get("data") if isinstance(info.get("data"), Mapping) else {}
    fp = str(data.get("fingerprint", "")) if data else ""
    paths = data.get("paths") or [] if data else []
    if isinstance(paths, (str, bytes)):
        paths = [paths]
    versions = info.get("versions") if isinstance(info.get("versions"), Mapping) else {}
    ordered = [k for k in _KEY_PACKAGES if k in versions]
    ordered += [k for k in versions if k not in _KEY_PACKAGES]
    path_items = "".join(f"<li><code>{_e(p)}</code></li>" for p in paths)
    version_items = ", ".join(f"{_e(k)}&nbsp;<code>{_e(versions[k])}</code>" for k in ordered)
    na = '<span class="ci">not recorded</span>'
    pairs: list[tuple[str, str]] = [
        ("seed", _e(info["seed"]) if "seed" in info else na),
        ("data fingerprint", f'<code title="{_e(fp)}">{_e(_short_hash(fp))}</code>' if fp else na),
        ("data paths", f'<ul class="paths">{path_items}</ul>' if paths else na),
        ("versions", version_items or na),
        ("started", _e(info["started_at"]) if "started_at" in info else na),
        ("finished", _e(info["finished_at"]) if "finished_at" in info else na),
        ("device", _e(info["device"]) if "device" in info else na),
        ("command", f'<code>{_e(info["command"])}</code>' if "command" in info else na),
    ]
    return f'<table class="kv">{_kv_rows(pairs)}</table>'


def _run_section(run: _Run, color: str) -> str:
    m = run.metrics
    curves = _history_figure(run, color)
    config = '<p class="note">config.yaml is missing.</p>'
    if run.config is not None:
        config = ("<details><summary>Resolved config (config.yaml)</summary>"
                  f"<pre>{_e(run.config)}</pre></details>")
    no_history = '<p class="note">No training history recorded.</p>'
    n_tv, n_te = m.get("n_trainval"), m.get("n_test")
    sizes = f" &middot; {_e(n_tv)} train/val, {_e(n_te)} test examples" if n_tv is not None else ""
    return (
        f'<section class="card run" id="{run.anchor}">\n'
        f'<h3><span style="color:{color}">&#9632;</span> {_e(run.name)} '
        f'<span class="ci">{_e(m["model"])}{sizes} &middot; '
        f"<code>{_e(run.path)}</code></span></h3>\n"
        f"<h4>Learning curves</h4>\n"
        f"{curves or no_history}\n"
        f"<h4>Provenance</h4>\n{_provenance(run)}\n{config}\n</section>"
    )


def build_report(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    title: str = "e2evision report",
) -> Path:
    """Write one self-contained HTML page comparing ``run_dirs`` to ``out`` and return its path.

    Every run is loaded and validated before anything is drawn, so a bad run directory fails fast
    with a message that names it instead of leaving a partial report. The file is written
    atomically. If ``out`` is an existing directory the page is written to ``out/report.html``.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ValueError("build_report needs at least one run directory")
    runs = [_load_run(d) for d in run_dirs]
    for i, run in enumerate(runs):
        run.anchor = f"run-{i + 1}"
    colors = _colors(len(runs))

    try:
        from e2evision import __version__
    except ImportError:  # pragma: no cover
        __version__ = "unknown"
    page = _PAGE.format(
        title=_e(title),
        css=_CSS,
        n_runs=len(runs),
        generated=_e(datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        version=_e(__version__),
        table=_table(runs),
        roc=_roc_figure(runs, colors),
        scores=_score_figure(runs, colors),
        runs="\n".join(_run_section(r, c) for r, c in zip(runs, colors)),
    )
    target = Path(out)
    if target.is_dir():
        target = target / "report.html"
    atomic_write_text(target, page)
    return target
