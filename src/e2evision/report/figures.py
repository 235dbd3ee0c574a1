"""The report's figures, one function per kind, each returning an inline ``<img>`` tag.

Every figure is drawn from arrays a run directory holds (``predictions.npz``, ``metrics.json``,
``saliency.npz``) with matplotlib's object API (no global pyplot state), rendered to PNG and
base64-embedded so that the page stays one file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator
from sklearn.metrics import roc_auc_score, roc_curve

_DPI = 100
_PNG_META = {"Software": None}  # keeps the embedded PNGs free of a matplotlib URL and reproducible


def png(fig: Figure, alt: str) -> str:
    """Render a figure to an inline <img>, so the page carries its own pictures."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata=_PNG_META)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="fig" alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">'


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _grid(n: int, ncols: int = 3, w: float = 4.3, h: float = 3.4) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(n, ncols))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(w * ncols + 0.5, h * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


# ---------------------------------------------------------------------------------------- binary
def _fpr_grid(n_neg: int) -> np.ndarray:
    """FPR points dense at both ends: linear for the ROC plot, logarithmic for the rejection one."""
    lo = max(1.0 / max(n_neg, 1), 1e-6)
    linear = np.linspace(0.0, 1.0, 201)
    return np.unique(np.concatenate([linear, np.logspace(np.log10(lo), 0.0, 200)]))


def _fold_band(label: np.ndarray, fold_scores: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """Per-fold TPR on a common FPR grid, shape (K, len(grid)); None when there is one fold."""
    if fold_scores.ndim != 2 or fold_scores.shape[0] < 2:
        return None
    rows = []
    for s in fold_scores:
        fpr, tpr, _ = roc_curve(label, s)
        rows.append(np.interp(grid, fpr, tpr))
    return np.vstack(rows)


def roc_figure(runs: Sequence[Any], colors: Sequence[str]) -> str:
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
    for e in (0.3, 0.5):
        ax_rej.axvline(e, color="0.6", lw=0.8, ls="--")
    ax_roc.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="background efficiency (false-positive rate)",
        ylabel="signal efficiency (true-positive rate)",
        title="ROC curve (test split)",
    )
    handles.append(random)
    labels.append("random guess")
    ax_rej.set_yscale("log")
    ax_rej.yaxis.set_major_locator(LogLocator(base=10))
    ax_rej.set(
        xlim=(0, 1),
        ylim=(1, max_rej * 1.5),
        xlabel="signal efficiency (true-positive rate)",
        ylabel="background rejection 1 / FPR",
        title="Background rejection (test split)",
    )
    for ax in (ax_roc, ax_rej):
        ax.grid(True, which="major", alpha=0.3)
    # One legend under both panels: the curves of the rejection plot fill every corner.
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), fontsize=10, frameon=False)
    return png(fig, "ROC and background-rejection curves on the test split")


def score_figure(runs: Sequence[Any], colors: Sequence[str]) -> str:
    """Test-score histograms per class, one panel per run, on shared bins for comparability."""
    fig, axes = _grid(len(runs))
    bins = np.linspace(0.0, 1.0, 41)
    for ax, run, color in zip(axes, runs, colors):
        label, score = run.preds["test_label"], run.preds["test_score"]
        ax.hist(
            score[label == 1],
            bins=bins,
            density=True,
            histtype="stepfilled",
            alpha=0.35,
            color=color,
            label=f"signal (n={int((label == 1).sum())})",
        )
        ax.hist(
            score[label == 0],
            bins=bins,
            density=True,
            histtype="step",
            lw=1.6,
            color="0.25",
            label=f"background (n={int((label == 0).sum())})",
        )
        ax.set(xlim=(0, 1), xlabel="score (fold-ensemble mean)", ylabel="density", title=run.name)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # headroom so the legend does not cover the bars
        ax.legend(fontsize=8.5, loc="upper center", ncol=2)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return png(fig, "score distributions per class on the test split")


def binned_auc_figure(runs: Sequence[Any], colors: Sequence[str]) -> str | None:
    """Test AUC in bins of jet pT with its bootstrap interval; None when no run has it."""
    have = [(r, c) for r, c in zip(runs, colors) if isinstance(r.metrics.get("auc_in_bins"), Mapping)]
    if not have:
        return None
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for i, (run, color) in enumerate(have):
        b = run.metrics["auc_in_bins"]
        edges = np.array([_num(e) for e in b.get("edges") or []])
        auc = np.array([_num(a) for a in b.get("auc") or []])
        if edges.size < 2 or auc.size != edges.size - 1:
            continue
        lo = np.array([_num(a) for a in b.get("low") or [math.nan] * auc.size])
        hi = np.array([_num(a) for a in b.get("high") or [math.nan] * auc.size])
        centre = 0.5 * (edges[1:] + edges[:-1])
        width = 0.5 * (edges[1:] - edges[:-1])
        shift = (i - (len(have) - 1) / 2) * 0.08 * width  # side by side, not on top of each other
        yerr = np.vstack([np.clip(auc - lo, 0, None), np.clip(hi - auc, 0, None)])
        yerr = np.nan_to_num(yerr)
        ax.errorbar(centre + shift, auc, xerr=width, yerr=yerr, fmt="o", ms=4, color=color, capsize=2, label=run.name)
    var = str(have[0][0].metrics["auc_in_bins"].get("variable", "pt"))
    ax.set(
        xlabel=f"{var} (bins of equal count on the test split)",
        ylabel="test AUC",
        title=f"AUC in bins of {var} (95 % bootstrap intervals)",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return png(fig, f"AUC in bins of {var}")


# ------------------------------------------------------------------------------------ multiclass
def ovr_roc_figure(runs: Sequence[Any], colors: Sequence[str], class_names: Sequence[str]) -> str:
    """One-vs-rest ROC curves: one panel per class, one line per run."""
    k = int(runs[0].preds["test_score"].shape[1])
    names = list(class_names) if len(class_names) == k else [str(c) for c in range(k)]
    fig, axes = _grid(k)
    for c, ax in enumerate(axes[:k]):
        ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1)
        for run, color in zip(runs, colors):
            y = run.preds["test_label"].astype(int) == c
            s = run.preds["test_score"][:, c]
            if y.all() or not y.any():
                continue
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, color=color, lw=1.6, label=f"{run.name} ({roc_auc_score(y, s):.4f})")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="false-positive rate",
            ylabel="true-positive rate",
            title=f"{names[c]} vs rest",
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return png(fig, "one-vs-rest ROC curves per class on the test split")


def class_score_figure(runs: Sequence[Any], colors: Sequence[str], class_names: Sequence[str]) -> str:
    """Per run: the probability the model gives each event's true class, by class."""
    fig, axes = _grid(len(runs))
    bins = np.linspace(0.0, 1.0, 41)
    for ax, run in zip(axes, runs):
        y = run.preds["test_label"].astype(int)
        s = run.preds["test_score"]
        k = s.shape[1]
        names = list(class_names) if len(class_names) == k else [str(c) for c in range(k)]
        for c in range(k):
            sel = y == c
            if sel.any():
                ax.hist(
                    s[sel, c],
                    bins=bins,
                    density=True,
                    histtype="step",
                    lw=1.6,
                    color=f"C{c}",
                    label=f"{names[c]} (n={int(sel.sum())})",
                )
        ax.set(xlim=(0, 1), xlabel="probability of the true class", ylabel="density", title=run.name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8.5)
    fig.tight_layout()
    return png(fig, "probability of the true class per class on the test split")


def confusion_figure(runs: Sequence[Any], class_names: Sequence[str]) -> str:
    """Row-normalised confusion matrices (per-class efficiencies), counts written in each cell."""
    from e2evision.metrics import confusion_matrix

    fig, axes = _grid(len(runs), w=4.2, h=3.9)
    for ax, run in zip(axes, runs):
        s = run.preds["test_score"]
        k = s.shape[1]
        names = list(class_names) if len(class_names) == k else [str(c) for c in range(k)]
        counts = confusion_matrix(run.preds["test_label"], s, n_classes=k)
        frac = confusion_matrix(run.preds["test_label"], s, n_classes=k, normalize="true")
        ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{frac[i, j]:.2f}\n({counts[i, j]})",
                    ha="center",
                    va="center",
                    fontsize=8.5,
                    color="white" if frac[i, j] > 0.6 else "black",
                )
        ax.set_xticks(range(k), names, rotation=30, ha="right")
        ax.set_yticks(range(k), names)
        ax.set(xlabel="predicted class", ylabel="true class", title=run.name)
    fig.tight_layout()
    return png(fig, "confusion matrices on the test split")


# ------------------------------------------------------------------------------------ regression
def regression_figure(runs: Sequence[Any], colors: Sequence[str]) -> str:
    """Residual distributions, prediction against truth, and bias/resolution in bins of the truth."""
    from e2evision.metrics import regression_in_bins

    fig = Figure(figsize=(15, 4.4))
    ax_res, ax_sc, ax_bin = fig.subplots(1, 3)
    values = np.concatenate([np.r_[r.preds["test_label"], r.preds["test_score"]] for r in runs])
    lo, hi = np.quantile(values, [0.001, 0.999])
    resid_all = np.concatenate([r.preds["test_score"] - r.preds["test_label"] for r in runs])
    r_lo, r_hi = np.quantile(resid_all, [0.005, 0.995])
    rbins = np.linspace(r_lo, r_hi, 51)
    for run, color in zip(runs, colors):
        t, p = run.preds["test_label"], run.preds["test_score"]
        r = p - t
        ax_res.hist(
            r,
            bins=rbins,
            histtype="step",
            lw=1.6,
            color=color,
            label=f"{run.name} (bias {np.mean(r):.3g}, σ {np.std(r, ddof=1):.3g})",
        )
        ax_sc.scatter(t, p, s=4, alpha=0.35, color=color, label=run.name)
        b = regression_in_bins(t, p, bins=5)
        centre = 0.5 * (b["edges"][1:] + b["edges"][:-1])
        ax_bin.plot(centre, b["bias"], marker="o", ms=4, color=color, ls="--")
        ax_bin.plot(centre, b["resolution_robust"], marker="s", ms=4, color=color, label=run.name)
    ax_res.axvline(0, color="0.5", lw=0.8)
    ax_res.set(xlabel="residual (prediction − truth)", ylabel="events", title="Residuals (test split)")
    ax_res.legend(fontsize=8)
    ax_sc.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls=":")
    ax_sc.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="truth", ylabel="prediction", title="Prediction vs truth")
    ax_sc.legend(fontsize=8, markerscale=3)
    ax_bin.axhline(0, color="0.5", lw=0.8)
    ax_bin.set(
        xlabel="truth (5 bins of equal count)",
        ylabel="target units",
        title="Resolution (solid, robust σ) and bias (dashed)",
    )
    ax_bin.legend(fontsize=8)
    for ax in (ax_res, ax_sc, ax_bin):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return png(fig, "regression residuals, prediction against truth, resolution in bins of the truth")


# --------------------------------------------------------------------------------- per-run views
def history_figure(run: Any, color: str) -> str | None:
    """Validation metric and the two losses per epoch, one line per fold; None without history."""
    hist = [h for h in run.metrics.get("history") or [] if isinstance(h, Mapping)]
    if not hist:
        return None
    monitor = "val_mae" if any("val_mae" in h for h in hist) else "val_auc"
    label = "validation MAE" if monitor == "val_mae" else "validation AUC"
    folds = sorted({h.get("fold", 0) for h in hist}, key=lambda f: (str(type(f)), f))
    fig = Figure(figsize=(12.5, 3.6))
    ax_m, ax_loss = fig.subplots(1, 2)
    for i, fold in enumerate(folds):
        rows = sorted((h for h in hist if h.get("fold", 0) == fold), key=lambda h: _num(h.get("epoch")))
        ep = np.array([_num(h.get("epoch")) for h in rows])
        c = color if len(folds) == 1 else f"C{i % 10}"
        ax_m.plot(ep, [_num(h.get(monitor)) for h in rows], marker="o", ms=3, lw=1.4, color=c, label=f"fold {fold}")
        ax_loss.plot(ep, [_num(h.get("train_loss")) for h in rows], lw=1.4, color=c, label=f"fold {fold} train")
        ax_loss.plot(ep, [_num(h.get("val_loss")) for h in rows], lw=1.4, ls="--", color=c, label=f"fold {fold} val")
    ax_m.set(xlabel="epoch", ylabel=label, title=f"{run.name}: {label}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{run.name}: loss (solid train, dashed val)")
    ax_m.legend(fontsize=8, ncol=2 if len(folds) > 5 else 1, loc="best")
    ax_loss.legend(fontsize=7.5, ncol=2, loc="best")
    for ax in (ax_m, ax_loss):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return png(fig, f"learning curves of {run.name}")


def saliency_figure(name: str, sal: Mapping[str, Any], task: str) -> str:
    """Per example: the image (summed over channels) and gradient × input (summed over channels).

    Red pixels push the output (signal logit, true-class logit or regression prediction) up,
    blue ones down; the colour scale is symmetric per example.
    """
    x = np.asarray(sal["images"], dtype=np.float64)
    g = np.asarray(sal["saliency"], dtype=np.float64)
    labels = np.asarray(sal["labels"])
    scores = np.asarray(sal["scores"])
    class_names = [str(c) for c in sal.get("class_names", [])]
    n = x.shape[0]
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.1 * ncols + 0.3, 5.6 * nrows))
    axes = np.atleast_2d(fig.subplots(2 * nrows, ncols, squeeze=False))
    for i in range(2 * nrows * ncols):
        axes.ravel()[i].set_axis_off()
    for i in range(n):
        r, c = divmod(i, ncols)
        ax_img, ax_sal = axes[2 * r, c], axes[2 * r + 1, c]
        img = np.abs(x[i]).sum(axis=0)
        ax_img.imshow(img, cmap="viridis")
        if task == "regression":
            what = f"truth {float(labels[i]):.4g}, pred {float(np.ravel(scores[i])[0]):.4g}"
        else:
            k = int(labels[i])
            cname = class_names[k] if k < len(class_names) else str(k)
            s = np.ravel(scores[i])
            p = float(s[k]) if s.size > 1 else float(s[0])
            what = f"{cname}, P({'true class' if s.size > 1 else 'signal'}) = {p:.3f}"
        ax_img.set_title(what, fontsize=8.5)
        m = g[i].sum(axis=0)
        vmax = float(np.abs(m).max()) or 1.0
        ax_sal.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax_sal.set_title("gradient × input", fontsize=8.5)
    fig.suptitle(f"{name}: fold-0 model, test images (top: Σ|channels|; bottom: saliency)", fontsize=10)
    fig.tight_layout()
    return png(fig, f"saliency maps of {name}")
