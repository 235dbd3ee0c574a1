"""One self-contained HTML page that compares finished runs, grouped by dataset.

The page must survive being mailed, attached to a ticket or opened years later offline, so
everything is inline: CSS in a ``<style>`` block, figures as base64 PNGs, no JavaScript and no
external URLs. Every piece of text that comes from a run directory is escaped because run names,
paths and commands are user-controlled: the page skeleton is a Jinja2 template with autoescaping,
and the fragments passed into it as ``Markup`` escape each field with :func:`_e`.

A run directory is what the trainer (or ``e2evision ensemble``) writes: ``metrics.json`` and
``predictions.npz`` are required; ``run.json``, ``config.yaml`` and ``saliency.npz`` are shown
when present so that a half-copied run still gives a useful page.

Runs are grouped by dataset (the data fingerprint in ``run.json`` and the task); each group gets
its comparison table with a significance column (a paired test of every run against the group's
best one, on the same test samples only), and the figures its task calls for: ROC and rejection
curves with bands over folds, score distributions and AUC in bins of pT (binary); one-vs-rest
ROC curves and confusion matrices (multi-class); residuals and resolution (regression).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.datasets.task import get_task
from e2evision.report import figures
from e2evision.rundir import SALIENCY_FILE, WEIGHTS_FILE, RunRecord, fold_dir, read_run
from e2evision.utils.io import atomic_write_text, open_npz

__all__ = ["build_report"]

# Versions shown first in the provenance table; any others recorded follow in their own order.
_KEY_PACKAGES = ("e2evision", "torch", "lightning", "numpy")


# --------------------------------------------------------------------------------------- loading
@dataclass
class _Run(RunRecord):
    """A run as the page draws it: the validated record (:func:`e2evision.rundir.read_run`) and
    its place on the page."""

    anchor: str = ""
    color: str = "#1f77b4"
    saliency: dict[str, Any] | None = None
    saliency_note: str = ""


def _load_run(run_dir: str | os.PathLike[str]) -> _Run:
    """Read and validate one run directory (every metric the page shows must be there)."""
    record = read_run(run_dir, complete=True)
    return _Run(**{f.name: getattr(record, f.name) for f in fields(RunRecord)})


def _load_saliency(run: _Run, compute: bool) -> None:
    """saliency.npz if the run has one; else, when asked, computed from fold 0's weights and the data."""
    path = run.path / SALIENCY_FILE
    if path.is_file():
        try:
            with open_npz(path) as npz:
                run.saliency = {k: np.asarray(npz[k]) for k in npz.files}
            run.saliency["class_names"] = [str(c) for c in run.saliency.get("class_names", [])]
            return
        except (OSError, ValueError) as exc:
            run.saliency_note = f"saliency.npz could not be read ({exc})"
            return
    if not compute:
        run.saliency_note = "no saliency.npz in this run"
        return
    if not (fold_dir(run.path, 0) / WEIGHTS_FILE).is_file():
        run.saliency_note = "no saliency.npz and no fold_0/model.safetensors to compute it from"
        return
    try:
        from e2evision.training.saliency import saliency_from_run_dir

        run.saliency = saliency_from_run_dir(run.path)
    except Exception as exc:  # best effort: the rest of the page does not depend on it
        run.saliency_note = f"saliency could not be computed: {type(exc).__name__}: {exc}"


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
        return f"{_e(epochs[0])} &times; {len(epochs)}"
    return ", ".join(_e(e) for e in epochs)


def _short_hash(fingerprint: str, keep: int = 12) -> str:
    algo, _, digest = fingerprint.rpartition(":")
    if len(digest) <= keep:
        return fingerprint
    return f"{algo + ':' if algo else ''}{digest[:keep]}…"


def _colors(n: int) -> list[str]:
    """tab10 colours, one per run, shared by all figures so a run keeps its colour."""
    base = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    return [base[i % len(base)] for i in range(n)]


# -------------------------------------------------------------------------------------- grouping
@dataclass
class _Group:
    """Runs on one dataset and task: compared in one table with one set of figures."""

    key: tuple[str, str]
    runs: list[_Run]
    anchor: str = ""

    @property
    def task(self) -> str:
        return self.key[1]


def _dataset_key(run: _Run) -> str:
    data = run.info.get("data") if isinstance(run.info.get("data"), Mapping) else {}
    if data and data.get("fingerprint"):
        return str(data["fingerprint"])
    if data and data.get("paths"):
        return "paths:" + "|".join(map(str, data["paths"]))
    return "unknown"


def _group_runs(runs: Sequence[_Run]) -> list[_Group]:
    """Groups in the order their first run was given."""
    groups: dict[tuple[str, str], _Group] = {}
    for run in runs:
        key = (_dataset_key(run), run.task)
        groups.setdefault(key, _Group(key, [])).runs.append(run)
    out = list(groups.values())
    for i, g in enumerate(out):
        g.anchor = f"dataset-{i + 1}"
    return out


def _score(run: _Run) -> float:
    """The number runs are ranked by: test AUC (higher is better) or minus the test MAE."""
    return -run.test_mae() if get_task(run.task).is_regression else _num(run.metrics["test_auc"])


def _best(group: _Group) -> _Run | None:
    finite = [r for r in group.runs if math.isfinite(_score(r))]
    return max(finite, key=_score) if finite else None


def _same_test_set(a: _Run, b: _Run) -> str:
    """Empty when the two runs scored the same test samples with the same labels, else why not."""
    ia, ib = a.preds.get("test_index"), b.preds.get("test_index")
    if ia is None or ib is None:
        return "test_index not recorded in predictions.npz"
    if ia.shape != ib.shape or not np.array_equal(ia, ib):
        return "different test samples (test_index differs)"
    if not np.array_equal(a.preds["test_label"], b.preds["test_label"]):
        return "different test labels"
    return ""


@dataclass
class _Significance:
    p_value: float | None
    text: str
    title: str


def _significance(group: _Group) -> dict[int, _Significance]:
    """A paired test of every run against the group's best one (by ``id`` of the run).

    Binary: DeLong's test of the two AUCs; regression: Wilcoxon's signed-rank test of the absolute
    residuals; multi-class: a paired bootstrap of the macro AUC difference (normal approximation).
    Only runs scored on exactly the same test samples are compared.
    """
    best = _best(group)
    out: dict[int, _Significance] = {}
    if best is None:
        return out
    for run in group.runs:
        if run is best:
            out[id(run)] = _Significance(None, "best", "the reference of the paired tests in this table")
            continue
        why = _same_test_set(best, run)
        if why:
            out[id(run)] = _Significance(None, "n/a", f"not comparable with {best.name}: {why}")
            continue
        y = best.preds["test_label"]
        a, b = best.preds["test_score"], run.preds["test_score"]
        try:
            sig = _paired_test(group.task, y, a, b, best.name)
            if sig.p_value is not None:
                sig.title += f"; p = {sig.p_value:.6g}"
            out[id(run)] = sig
        except ValueError as exc:
            out[id(run)] = _Significance(None, "n/a", f"test failed: {exc}")
    return out


def _paired_test(task: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, best: str) -> _Significance:
    if task == "binary":
        from e2evision.metrics import delong_test

        t = delong_test(y, a, b)
        return _Significance(
            t["p_value"],
            f"p = {_fmt_p(t['p_value'])}",
            f"DeLong paired test vs {best}: ΔAUC = {t['difference']:+.4f} ± {t['std_error']:.4f}, z = {t['z']:.2f}",
        )
    if task == "regression":
        from scipy.stats import wilcoxon

        d = np.abs(a - y) - np.abs(b - y)
        if not np.any(d):
            return _Significance(1.0, "p = 1", f"identical absolute residuals to {best}")
        res = wilcoxon(np.abs(a - y), np.abs(b - y))
        return _Significance(
            float(res.pvalue),
            f"p = {_fmt_p(float(res.pvalue))}",
            f"Wilcoxon signed-rank test of |residual| vs {best}: ΔMAE = {float(np.mean(d)):+.4g}",
        )
    from scipy.stats import norm

    from e2evision.metrics import bootstrap_metric, one_vs_rest_auc

    def diff(yy: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> float:
        return one_vs_rest_auc(yy, aa)["macro"] - one_vs_rest_auc(yy, bb)["macro"]

    boot = bootstrap_metric(diff, y, a, b, n_boot=200, seed=0)
    sd = boot["std"]
    p = float(2 * norm.sf(abs(boot["value"]) / sd)) if sd > 0 else (1.0 if boot["value"] == 0 else 0.0)
    return _Significance(
        p,
        f"p = {_fmt_p(p)}",
        f"paired bootstrap (200 resamples) of the macro AUC difference vs {best}: {boot['value']:+.4f} ± {sd:.4f}",
    )


def _fmt_p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


# ---------------------------------------------------------------------------------------- tables
def _rejections(run: _Run) -> list[tuple[float, float, int]]:
    """(ε_S, 1/ε_B, n_background) at 0.3 and 0.5, from the test predictions."""
    from e2evision.metrics import background_rejection

    r = background_rejection(run.preds["test_label"], run.preds["test_score"], (0.3, 0.5))
    return [(float(e), float(x), int(r["n_background"])) for e, x in zip(r["signal_efficiency"], r["rejection"])]


def _fmt_rejection(value: float, n_background: int) -> str:
    if math.isinf(value):
        return f"&gt; {n_background}"  # no background passes: only a bound can be quoted
    return "n/a" if not math.isfinite(value) else f"{value:.3g}"


def _table(group: _Group) -> str:
    """The comparison table; rows carry data-run so tests and scripts can find a run's row."""
    best = _best(group)
    sig = _significance(group)
    task = group.task
    if task == "binary":
        extra_head = (
            "<th>Test AUC [95 % CI]</th><th title='background rejection at signal efficiency 0.3'>"
            "1/&epsilon;<sub>B</sub> @ &epsilon;<sub>S</sub>=0.3</th>"
            "<th>1/&epsilon;<sub>B</sub> @ &epsilon;<sub>S</sub>=0.5</th>"
        )
        lead = "<th>AUC (folds)</th><th>OOF AUC</th>"
    elif task == "multiclass":
        extra_head = "<th>Test macro AUC [95 % CI]</th><th>One-vs-rest AUC per class</th><th>Accuracy</th>"
        lead = "<th>Macro AUC (folds)</th><th>OOF macro AUC</th>"
    else:
        extra_head = "<th>Test MAE [95 % CI]</th><th>Bias</th><th>Resolution (robust &sigma;)</th>"
        lead = "<th>MAE (folds)</th><th>OOF MAE</th>"
    head = (
        f"<tr><th>Run</th><th>Model</th><th>Parameters</th>{lead}{extra_head}"
        "<th title='paired test against the best run on the same test samples'>Significance vs best</th>"
        "<th>Training time</th><th>Epochs</th></tr>"
    )
    rows = []
    for run in group.runs:
        m = run.metrics
        is_best = run is best
        n_params = _num(m["n_params"])
        exact = f"{int(n_params):,} parameters" if math.isfinite(n_params) else "unknown"
        secs = _num(m["train_time_s"])
        time_title = f"{secs:.1f} s summed over folds"
        if math.isfinite(_num(m.get("wall_time_s"))):
            time_title += f"; wall time {_fmt_duration(m['wall_time_s'])}"
        badge = ' <span class="badge">best</span>' if is_best else ""
        badge += _not_learning_badge(m)
        s = sig.get(id(run), _Significance(None, "n/a", "no comparable best run"))
        cells = [
            f'<td class="name"><a href="#{run.anchor}">{_e(run.name)}</a>{badge}</td>',
            _model_cell(m),
            f'<td class="params" title="{_e(exact)}">{_e(_fmt_params(n_params))}</td>',
            *_task_cells(run),
            f'<td class="signif" title="{_e(s.title)}">{_e(s.text)}</td>',
            f'<td class="time" title="{_e(time_title)}">{_e(_fmt_duration(secs))}</td>',
            f'<td class="epochs" title="per fold: {_e(m["epochs"])}">{_fmt_epochs(m["epochs"])}</td>',
        ]
        best_cls = ' class="best"' if is_best else ""
        rows.append(f'<tr data-run="{_e(run.name)}"{best_cls}>' + "".join(cells) + "</tr>")
    body = "\n".join(rows)
    return (
        f'<table class="comparison" id="comparison-{group.anchor}">\n<thead>{head}</thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table>"
    )


def _warnings(m: Mapping[str, Any]) -> list[str]:
    """The run's "did it learn?" warnings (training.health), as strings."""
    found = m.get("warnings")
    return [str(w) for w in found] if isinstance(found, list) else []


def _not_learning_badge(m: Mapping[str, Any]) -> str:
    """A flag beside the run's name: a model that never trained must not pass for one that lost."""
    found = _warnings(m)
    if not found:
        return ""
    return f' <span class="badge warn" title="{_e(" | ".join(found))}">not learning</span>'


def _model_cell(m: dict[str, Any]) -> str:
    """The model column; an ensemble lists its members one per line instead of one long name.

    ``ensemble:stack(run-a, run-b, ...)`` wraps mid-name in a narrow column, so the method and the
    member count lead and each member gets its own line; the full name stays in the tooltip.
    """
    ens = m.get("ensemble")
    members = ens.get("members") if isinstance(ens, dict) else None
    if not isinstance(members, list) or not members:
        return f'<td class="model">{_e(m["model"])}</td>'
    names = "".join(f"<li>{_e(str(row.get('name', '?')))}</li>" for row in members if isinstance(row, dict))
    return (
        f'<td class="model" title="{_e(m["model"])}">{_e(ens.get("method", "ensemble"))} of '
        f'{len(members)}<ul class="members">{names}</ul></td>'
    )


def _ci(values: Any, fmt: Any = None) -> str:
    fmt = fmt or _fmt_auc
    if isinstance(values, (list, tuple)) and len(values) == 2:
        return f' <span class="ci">[{fmt(values[0])}, {fmt(values[1])}]</span>'
    return ""


def _g(value: Any) -> str:
    x = _num(value)
    return "n/a" if not math.isfinite(x) else f"{x:.4g}"


def _task_cells(run: _Run) -> list[str]:
    m = run.metrics
    if run.task == "regression":
        folds = m.get("fold_mae") or []
        fold_title = "per fold: " + ", ".join(_g(a) for a in folds) if isinstance(folds, list) else ""
        mean = m.get("fold_mae_mean", np.mean(folds) if folds else math.nan)
        std = m.get("fold_mae_std", np.std(folds, ddof=1) if len(folds) > 1 else math.nan)
        test = m.get("test") if isinstance(m.get("test"), Mapping) else {}
        t, p = run.preds["test_label"], run.preds["test_score"]
        bias = test.get("bias", float(np.mean(p - t)))
        res = test.get("resolution_robust", math.nan)
        return [
            f'<td class="fold-mae" title="{_e(fold_title)}">{_g(mean)} &plusmn; {_g(std)}</td>',
            f'<td class="oof-mae">{_g(m["oof_mae"])}</td>',
            f'<td class="test-mae">{_g(run.test_mae())}{_ci(m.get("test_mae_ci"), _g)}</td>',
            f'<td class="bias">{_g(bias)}</td>',
            f'<td class="resolution">{_g(res)}</td>',
        ]
    folds = m.get("fold_auc") or []
    fold_title = "per fold: " + ", ".join(_fmt_auc(a) for a in folds) if isinstance(folds, list) else ""
    cells = [
        f'<td class="fold-auc" title="{_e(fold_title)}">{_fmt_auc(m["fold_auc_mean"])} &plusmn; '
        f"{_fmt_auc(m['fold_auc_std'])}</td>",
        f'<td class="oof-auc">{_fmt_auc(m["oof_auc"])}</td>',
        f'<td class="test-auc">{_fmt_auc(m["test_auc"])}{_ci(m.get("test_auc_ci"))}</td>',
    ]
    if run.task == "binary":
        for (eff, rej, nb), cls in zip(_rejections(run), ("rej30", "rej50")):
            cells.append(
                f'<td class="{cls}" title="{_e(f"at signal efficiency {eff:g}, {nb} background events")}">'
                f"{_fmt_rejection(rej, nb)}</td>"
            )
        return cells
    from e2evision.metrics import one_vs_rest_auc

    y, s = run.preds["test_label"], run.preds["test_score"]
    ovr = one_vs_rest_auc(y, s)
    names = run.class_names if len(run.class_names) == s.shape[1] else [str(c) for c in range(s.shape[1])]
    per_class = ", ".join(f"{_e(n)} {_fmt_auc(a, 3)}" for n, a in zip(names, ovr["auc"]))
    acc = float(np.mean(np.argmax(s, axis=1) == y.astype(int)))
    cells += [f'<td class="ovr-auc">{per_class}</td>', f'<td class="accuracy">{acc:.4f}</td>']
    return cells


_TABLE_NOTES = {
    "binary": "AUC mean &plusmn; std over the K validation folds; OOF: AUC of the pooled out-of-fold "
    "predictions; test: AUC of the fold-ensemble mean score on the held-out test split, with its "
    "95 % bootstrap interval; 1/&epsilon;<sub>B</sub>: background rejection at the given signal "
    "efficiency (&gt; N: no background event of N passes). Significance: DeLong's paired test "
    "against the best run (same test samples only). The best test AUC is highlighted.",
    "multiclass": "Macro (unweighted mean) one-vs-rest AUC over the classes; test: the fold-ensemble mean "
    "probabilities on the held-out test split, 95 % bootstrap interval. Significance: paired "
    "bootstrap of the macro AUC difference against the best run. The best test macro AUC is "
    "highlighted.",
    "regression": "Mean absolute error in target units; test: the fold-ensemble mean prediction on the "
    "held-out test split, 95 % bootstrap interval; bias = mean(prediction &minus; truth); "
    "robust resolution = half the 16&ndash;84 % width of the residuals. Significance: "
    "Wilcoxon's signed-rank test of the absolute residuals against the best run. The lowest "
    "test MAE is highlighted.",
}


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
        ("processes", _e(info["processes"]) if "processes" in info else na),
        ("command", f"<code>{_e(info['command'])}</code>" if "command" in info else na),
    ]
    if run.metrics.get("resumed_folds"):
        pairs.append(("resumed folds", _e(", ".join(map(str, run.metrics["resumed_folds"])))))
    return f'<table class="kv">{_kv_rows(pairs)}</table>'


def _run_section(run: _Run) -> str:
    m = run.metrics
    curves = figures.history_figure(run, run.color)
    config = '<p class="note">config.yaml is missing.</p>'
    if run.config is not None:
        config = f"<details><summary>Resolved config (config.yaml)</summary><pre>{_e(run.config)}</pre></details>"
    no_history = '<p class="note">No training history recorded.</p>'
    n_tv, n_te = m.get("n_trainval"), m.get("n_test")
    sizes = f" &middot; {_e(n_tv)} train/val, {_e(n_te)} test examples" if n_tv is not None else ""
    if run.saliency is not None and len(run.saliency.get("images", [])):
        sal = (
            figures.saliency_figure(run.name, run.saliency, run.task)
            + '<p class="note">Gradient &times; input of the fold-0 model (Shrikumar et al. 2016), summed '
            "over channels: red pixels raise the output (signal logit, true-class logit or "
            "prediction), blue ones lower it.</p>"
        )
    else:
        sal = f'<p class="note">No saliency maps: {_e(run.saliency_note or "none recorded")}.</p>'
    versus = m.get("versus_best_member")
    verdict = "".join(f'<p class="warning"><b>Not learning:</b> {_e(w)}</p>\n' for w in _warnings(m))
    if isinstance(versus, Mapping) and versus.get("verdict"):  # an ensemble: is it worth its members?
        verdict += f"<p><b>Against its best member:</b> {_e(versus['verdict'])}.</p>\n"
    return (
        f'<section class="card run" id="{run.anchor}">\n'
        f'<h3><span style="color:{run.color}">&#9632;</span> {_e(run.name)} '
        f'<span class="ci">{_e(m["model"])}{sizes} &middot; <code>{_e(run.path)}</code></span></h3>\n'
        f"{verdict}"
        f"<h4>Learning curves</h4>\n{curves or no_history}\n"
        f"<h4>Saliency</h4>\n{sal}\n"
        f"<h4>Provenance</h4>\n{_provenance(run)}\n{config}\n</section>"
    )


def _group_heading(group: _Group) -> str:
    run = group.runs[0]
    data = run.info.get("data") if isinstance(run.info.get("data"), Mapping) else {}
    fmt = (data or {}).get("format", "unknown format")
    fp = str((data or {}).get("fingerprint", ""))
    classes = ", ".join(run.class_names) if group.task != "regression" and run.class_names else ""
    bits = [f"{len(group.runs)} run(s)", f"{run.preds['test_label'].shape[0]} test samples"]
    if classes:
        bits.append(f"classes: {_e(classes)}")
    if fp:
        bits.append(f'data <code title="{_e(fp)}">{_e(_short_hash(fp))}</code>')
    return (
        f'<h2 id="{group.anchor}">Dataset: {_e(fmt)} &mdash; {_e(group.task)}</h2>\n'
        f'<p class="meta">{" &middot; ".join(bits)}</p>'
    )


def _group_section(group: _Group) -> str:
    runs = group.runs
    colors = [r.color for r in runs]
    parts = [
        _group_heading(group),
        f'<div class="table-wrap">{_table(group)}</div>',
        f'<p class="note">{_TABLE_NOTES[group.task]}</p>',
    ]
    if group.task == "binary":
        parts.append(
            f'<h3>ROC and background rejection (test split)</h3><section class="card">'
            f'{figures.roc_figure(runs, colors)}<p class="note">Shaded: min&ndash;max over the '
            "per-fold models of the TPR at a common FPR grid. Right: background rejection (1/FPR) "
            "against signal efficiency, the usual HEP view; dashed lines at &epsilon;<sub>S</sub> = "
            "0.3 and 0.5.</p></section>"
        )
        parts.append(
            f'<h3>Score distributions (test split)</h3><section class="card">'
            f"{figures.score_figure(runs, colors)}</section>"
        )
        binned = figures.binned_auc_figure(runs, colors)
        if binned:
            parts.append(f'<h3>AUC in bins of jet p<sub>T</sub></h3><section class="card">{binned}</section>')
    elif group.task == "multiclass":
        names = runs[0].class_names
        parts.append(
            f'<h3>One-vs-rest ROC curves (test split)</h3><section class="card">'
            f"{figures.ovr_roc_figure(runs, colors, names)}</section>"
        )
        parts.append(
            f'<h3>Confusion matrices (test split)</h3><section class="card">'
            f'{figures.confusion_figure(runs, names)}<p class="note">Rows: true class; columns: '
            "predicted class (largest probability); fraction of the row, count in brackets.</p></section>"
        )
        parts.append(
            f'<h3>Score distributions (test split)</h3><section class="card">'
            f"{figures.class_score_figure(runs, colors, names)}</section>"
        )
    else:
        parts.append(
            f'<h3>Residuals and resolution (test split)</h3><section class="card">'
            f"{figures.regression_figure(runs, colors)}</section>"
        )
    parts.append("<h3>Runs</h3>")
    parts.extend(_run_section(r) for r in runs)
    return "\n".join(parts)


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
table.comparison { width: 100%; border: 1px solid var(--line); }
.table-wrap { overflow-x: auto; }
table.comparison th, table.comparison td { padding: 8px 12px; border-bottom: 1px solid var(--line);
                                 text-align: right; white-space: nowrap; }
table.comparison td.name, table.comparison td.model { white-space: normal; overflow-wrap: anywhere;
                                            min-width: 8em; }
table.comparison th { background: #eef1f6; font-weight: 600; }
table.comparison ul.members { margin: 2px 0 0; padding-left: 16px; color: var(--muted); font-size: 13px; }
table.comparison th:first-child, table.comparison td:first-child,
table.comparison th:nth-child(2), table.comparison td:nth-child(2) { text-align: left; }
table.comparison td { font-variant-numeric: tabular-nums; }
table.comparison tr.best td { background: var(--best); }
table.comparison tr.best td.test-auc, table.comparison tr.best td.test-mae { font-weight: 700; }
ul.toc { margin: 6px 0 0; padding-left: 18px; color: var(--muted); }
h4 { font-size: 15px; margin: 16px 0 6px; }
.badge { display: inline-block; margin-left: 6px; padding: 0 6px; border-radius: 9px;
         font-size: 12px; background: #2e7d32; color: #fff; vertical-align: 1px; }
.badge.warn { background: #c62828; }
p.warning { color: #c62828; }
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

# The page skeleton, rendered by Jinja2 with autoescaping: every value is escaped unless it is an
# HTML fragment built (and escaped field by field) by the functions above, passed as Markup.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
<p class="meta">{{ n_runs }} run(s) on {{ n_groups }} dataset(s) &middot; generated {{ generated }} &middot; e2evision {{ version }}</p>
<nav><ul class="toc">{{ toc }}</ul></nav>
{{ groups }}
<footer>Self-contained page: all figures are embedded, nothing is loaded from the network.</footer>
</main>
</body>
</html>
"""


def _render_page(**fields: Any) -> str:
    from jinja2 import Environment

    env = Environment(autoescape=True, keep_trailing_newline=True)
    return env.from_string(_PAGE).render(**fields)


def build_report(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    title: str = "e2evision report",
    saliency: bool = True,
) -> Path:
    """Write one self-contained HTML page comparing ``run_dirs`` to ``out`` and return its path.

    Every run is loaded and validated before anything is drawn, so a bad run directory fails fast
    with a message that names it instead of leaving a partial report. Runs are grouped by dataset
    and task. ``saliency``: compute saliency maps from fold 0's weights and the data for runs that
    have no ``saliency.npz`` (needs the data files; skipped with a note when they are gone). The
    file is written atomically; if ``out`` is an existing directory the page is
    ``out/report.html``.
    """
    from e2evision.report import extras as _extras

    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ValueError("build_report needs at least one run directory")
    found: list[_extras.Extra] = []
    plain: list[Path] = []
    for d in run_dirs:
        extra = _extras.classify(Path(d))
        if extra is None:
            plain.append(Path(d))
        else:
            found.append(extra)
            plain.extend(extra.runs)
    seen: set[Path] = set()
    unique = [p for p in plain if not (p.resolve() in seen or seen.add(p.resolve()))]  # type: ignore[func-returns-value]
    runs = [_load_run(d) for d in unique]
    for i, (run, color) in enumerate(zip(runs, _colors(len(runs)))):
        run.anchor = f"run-{i + 1}"
        run.color = color
        _load_saliency(run, saliency)
    groups = _group_runs(runs)

    try:
        from e2evision import __version__
    except ImportError:  # pragma: no cover
        __version__ = "unknown"
    toc = "".join(
        f'<li><a href="#{g.anchor}">{_e((g.runs[0].info.get("data") or {}).get("format", "dataset"))} '
        f"&mdash; {_e(g.task)}</a>: {', '.join(_e(r.name) for r in g.runs)}</li>"
        for g in groups
    )
    extra_html, extra_toc = [], []
    for i, extra in enumerate(found):  # ablations and studies first, in the order given
        anchor = f"{extra.kind}-{i + 1}"
        what = _extras.TITLES[extra.kind]
        name = extra.data.get("name") or extra.data.get("study") or extra.data.get("dataset") or extra.path.name
        extra_toc.append(f'<li><a href="#{anchor}">{what}</a>: {_e(name)}</li>')
        extra_html.append(_extras.section(extra, anchor))
    toc = "".join(extra_toc) + toc
    from markupsafe import Markup

    page = _render_page(
        title=title,
        css=Markup(_CSS),
        n_runs=len(runs),
        n_groups=len(groups),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        toc=Markup(toc),
        groups=Markup("\n".join([*extra_html, *(_group_section(g) for g in groups)])),
    )
    target = Path(out)
    if target.is_dir():
        target = target / "report.html"
    atomic_write_text(target, page)
    return target
