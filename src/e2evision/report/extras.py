"""Report sections that are not one run: an ablation folder and a hyper-parameter study folder.

``e2evision report`` accepts, beside run directories,

* an ablation folder (``ablation.json``, from ``e2evision ablation``): its three runs join the
  dataset comparison and a section shows the image / features / both table, the paired
  differences, example crops per class and the scalar inputs' distributions per class;
* a study folder (``trials.json``, from ``e2evision tune``): a section with the best trial, the
  trial table and Optuna's optimisation-history and parameter-importance plots;
* a learning-curve folder (``learning_curve.json``, from ``benchmarks/learning_curve.py``): test
  AUC against the number of training samples for each model and the physics baseline, as a plot
  and a table with the best image model's lead or lag.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ABLATION_FILE = "ablation.json"
STUDY_FILE = "trials.json"
CURVE_FILE = "learning_curve.json"


@dataclass
class Extra:
    kind: str  # "ablation", "study" or "curve"
    path: Path
    data: dict[str, Any]
    runs: list[Path] = field(default_factory=list)


def classify(path: Path) -> Extra | None:
    """An ablation, study or learning-curve folder as an :class:`Extra` (None for anything else)."""
    for kind, name in (("ablation", ABLATION_FILE), ("study", STUDY_FILE), ("curve", CURVE_FILE)):
        f = path / name
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{f}: not valid JSON ({err})") from None
            if not isinstance(data, dict):
                raise ValueError(f"{f}: expected a JSON object")
            runs = [Path(r["run_dir"]) for r in data.get("arms", [])] if kind == "ablation" else []
            runs = [r if r.exists() else path / r.name for r in runs]  # the folder may have moved
            return Extra(kind, path, data, runs)
    return None


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _png_file(path: Path, alt: str) -> str:
    if not path.is_file():
        return f'<p class="note">{_e(path.name)} is missing.</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="fig" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _f(v: Any, digits: int = 4) -> str:
    return "&ndash;" if not isinstance(v, (int, float)) else f"{v:.{digits}f}"


TITLES = {"ablation": "Ablation", "study": "Hyper-parameter search", "curve": "Learning curve"}


def section(extra: Extra, anchor: str) -> str:
    return {"ablation": _ablation, "study": _study, "curve": _curve}[extra.kind](extra, anchor)


def _curve(extra: Extra, anchor: str) -> str:
    """Test AUC against training samples: the plot the benchmark drew, and its numbers."""
    d = extra.data
    rows = [r for r in d.get("rows", []) if isinstance(r, dict) and isinstance(r.get("test_auc"), (int, float))]
    models = list(dict.fromkeys(str(r.get("model")) for r in rows))
    sizes = sorted({int(r.get("size", 0)) for r in rows})
    head = "".join(f"<th>{_e(h)}</th>" for h in ["train + validation samples", *models, "best image model − baseline"])
    body = []
    for size in sizes:
        at = {str(r.get("model")): r for r in rows if int(r.get("size", 0)) == size}
        cells = []
        for m in models:
            r = at.get(m)
            ci = (r or {}).get("test_auc_ci") or [None, None]
            flag = ' <span class="badge warn">not learning</span>' if r and r.get("warnings") else ""
            cells.append(
                "&ndash;"
                if r is None
                else f'{_f(r["test_auc"])} <span class="ci">[{_f(ci[0], 3)}, {_f(ci[1], 3)}]</span>{flag}'
            )
        gap = (at.get("physics_baseline") or {}).get("gap", {}).get(str(size))
        body.append(
            f"<tr><td>{size:,}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + f"<td>{'&ndash;' if gap is None else f'{gap:+.4f}'}</td></tr>"
        )
    table = f'<table class="comparison"><tr>{head}</tr>{"".join(body)}</table>'
    # jets are simulated with or without the detector response (--no-response): say which
    response = {True: " &middot; with detector response", False: " &middot; without detector response"}.get(
        d.get("response"), ""
    )
    return (
        f'<h2 id="{anchor}">Learning curve: {_e(d.get("dataset"))}</h2>\n'
        f'<p class="meta">{int(d.get("test") or 0):,} fixed test samples &middot; {_e(d.get("folds"))}-fold '
        f"models &middot; seed {_e(d.get('seed'))}{response} &middot; folder <code>{_e(extra.path)}</code></p>\n"
        f'<section class="card">{_png_file(extra.path / "learning_curve.png", "learning curve")}</section>\n'
        f'<div class="table-wrap">{table}</div>\n'
        '<p class="note">Every point is scored on the same test samples; a smaller point trains on a '
        "subset of a larger one's samples.</p>"
    )


def _ablation(extra: Extra, anchor: str) -> str:
    d = extra.data
    metric = d.get("metric", "test_auc")
    label = (
        "test MAE"
        if metric == "test_mae"
        else "test AUC (macro one-vs-rest)"
        if d.get("task") == "multiclass"
        else "test AUC"
    )
    classes = []
    for row in d.get("arms", []):
        classes = list((row.get("per_class") or {}).keys()) or classes
    head = ["arm", "model", "parameters", label, "folds (mean ± std)", *[f"AUC {c} vs rest" for c in classes]]
    rows = []
    best = (min if d.get("better") == "lower" else max)(
        (r for r in d.get("arms", []) if isinstance(r.get("test"), (int, float))), key=lambda r: r["test"], default=None
    )
    for r in d.get("arms", []):
        ci = r.get("test_ci") or [None, None]
        cells = [
            _e(r["arm"]),
            f"<code>{_e(r.get('model'))}</code>",
            f"{int(r.get('n_params') or 0):,}",
            f'{_f(r.get("test"))} <span class="ci">[{_f(ci[0])}, {_f(ci[1])}]</span>',
            f"{_f(r.get('fold_mean'))} ± {_f(r.get('fold_std'))}",
            *[_f((r.get("per_class") or {}).get(c)) for c in classes],
        ]
        cls = ' class="best"' if r is best else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = (
        '<table class="comparison"><tr>'
        + "".join(f"<th>{_e(h)}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )
    diffs = []
    for key, v in (d.get("differences") or {}).items():
        a, b = key.removeprefix("both_minus_"), "both"
        diffs.append(
            f"<li><b>{_e(b)} &minus; {_e(a)}</b>: {v['value']:+.4f} "
            f'<span class="ci">[{v["low"]:+.4f}, {v["high"]:+.4f}]</span>, p = {v["p_value"]:.3g}</li>'
        )
    figs = [_png_file(extra.path / Path(p).name, "ablation figure") for p in d.get("figures", [])]
    if d.get("figures_error"):
        figs.append(f'<p class="note">Figures could not be drawn: {_e(d["figures_error"])}</p>')
    scalars = ", ".join(f"<code>{_e(s)}</code>" for s in d.get("scalars", []))
    return (
        f'<h2 id="{anchor}">Ablation: image only / features only / both &mdash; {_e(d.get("name"))}</h2>\n'
        f'<p class="meta">scalar inputs: {scalars} &middot; {int(d.get("n_test", 0))} test samples &middot; '
        f"folder <code>{_e(extra.path)}</code></p>\n"
        f'<div class="table-wrap">{table}</div>\n'
        f'<ul>{"".join(diffs)}</ul><p class="note">{_e(d.get("note", ""))}. The three runs use the same '
        "samples, split and folds; they also appear in the dataset comparison below.</p>\n"
        + "".join(f'<section class="card">{f}</section>' for f in figs)
    )


def _study(extra: Extra, anchor: str) -> str:
    d = extra.data
    best = d.get("best") or {}
    params = "".join(
        f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in (best.get("params") or {}).items()
    )
    trials = sorted(
        (t for t in d.get("trials", []) if isinstance(t.get("value"), (int, float))),
        key=lambda t: t["value"],
        reverse=d.get("direction") != "minimize",
    )[:10]
    keys = sorted({k for t in trials for k in (t.get("params") or {})})
    head = "".join(f"<th>{_e(h)}</th>" for h in ["trial", "state", "value", *keys])
    body = "".join(
        "<tr>"
        + f"<td>{t['number']}</td><td>{_e(t['state'])}</td><td>{_f(t['value'])}</td>"
        + "".join(f"<td>{_e(_g((t.get('params') or {}).get(k)))}</td>" for k in keys)
        + "</tr>"
        for t in trials
    )
    plots = [
        _png_file(extra.path / name, title)
        for name, title in (("history.png", "optimisation history"), ("importance.png", "parameter importances"))
        if (extra.path / name).is_file()
    ]
    return (
        f'<h2 id="{anchor}">Hyper-parameter search: {_e(d.get("study"))}</h2>\n'
        f'<p class="meta">{int(d.get("n_trials", 0))} trials: {int(d.get("n_complete", 0))} complete, '
        f"{int(d.get('n_pruned', 0))} pruned &middot; storage <code>{_e(d.get('storage'))}</code></p>\n"
        f'<section class="card"><h4>Best trial {_e(best.get("number", "–"))}: {_f(best.get("value"))}</h4>'
        f'<table class="kv">{params}</table><p class="note">Ready to train: <code>'
        f"{_e(d.get('best_config', ''))}</code>. Trial values are validation scores (never the test split).</p>"
        f"</section>\n"
        f'<div class="table-wrap"><table class="comparison"><tr>{head}</tr>{body}</table></div>\n'
        + "".join(f'<section class="card">{p}</section>' for p in plots)
    )


def _g(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
