"""Image only / features only / both: what fusing physics features with the image is worth.

``run_ablation(cfg, out)`` takes a config whose model reads scalar inputs beside the image
(``data.scalars``, e.g. the lens features of ``data.features``) and cross-validates three arms on
exactly the same samples, split and folds (same seed):

* ``image``    — the same model and preprocessing without scalar inputs;
* ``features`` — ``scalar_mlp`` on the scalar inputs alone (the image is ignored);
* ``both``     — the config as given.

It writes ``OUT/{image,features,both}/`` (ordinary run directories), ``OUT/ablation.json`` (the
table, with paired bootstrap differences on the common test split) and the figures the report's
ablation section shows: example crops per class as the model sees them (before and after the
region-of-interest crop and rotation) and the distribution of every scalar input per class.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import norm

from e2evision.config import ExperimentConfig, load_config
from e2evision.datasets.experiment import open_experiment_data
from e2evision.datasets.task import get_task
from e2evision.metrics import bootstrap_metric, one_vs_rest_auc, roc_auc
from e2evision.rundir import PREDICTIONS_FILE, RUN_FILE, load_fold_module
from e2evision.training.runner import run_experiment
from e2evision.utils import atomic_write_json

ARMS: tuple[str, ...] = ("image", "features", "both")
ABLATION_FILE = "ablation.json"
CROPS_FIGURE = "examples.png"
FEATURES_FIGURE = "features.png"


def arm_configs(cfg: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """The three configs of the ablation, named ``<name>_<arm>``."""
    if not cfg.data.scalars:
        raise ValueError(f"{cfg.name}: an ablation needs scalar inputs (data.scalars) beside the image")
    base = cfg.model_dump(mode="json")
    base["tune"] = None
    # overrides edit nested sections in place: every arm starts from its own copy
    image = load_config(data=copy.deepcopy(base), overrides=[f"name={cfg.name}_image", "data.scalars=[]"])
    features = load_config(
        data=copy.deepcopy(base),
        overrides=[
            f"name={cfg.name}_features",
            "model.name=scalar_mlp",
            "model.kwargs={}",
            "model.init_from=null",
            "preprocess.lens_roi=null",
            "preprocess.crop=null",
            "preprocess.pad=null",
            "preprocess.resize=null",
            "augment.flip_eta=false",
            "augment.flip_phi=false",
            "augment.roll_phi=false",
            "augment.rot90=false",
            "train.stages=[]",
        ],
    )
    both = load_config(data=copy.deepcopy(base), overrides=[f"name={cfg.name}_both"])
    return {"image": image, "features": features, "both": both}


def run_ablation(
    cfg: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    command: str | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Train the three arms (finished ones are reused) and write the comparison; returns it."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = arm_configs(cfg)
    metrics = {arm: run_experiment(c, out_dir / arm, resume=resume, command=command) for arm, c in configs.items()}
    summary = summarize(out_dir, cfg, metrics, n_boot=n_boot)
    try:
        summary["figures"] = write_figures(cfg, out_dir)
    except Exception as err:  # figures are a convenience: the table stands without them
        summary["figures_error"] = f"{type(err).__name__}: {err}"
    atomic_write_json(out_dir / ABLATION_FILE, summary)
    return summary


def _score_fn(task: str):
    if task == "multiclass":
        return lambda y, s: one_vs_rest_auc(y, s)["macro"]
    if task == "binary":
        return roc_auc
    return lambda y, s: float(np.mean(np.abs(np.asarray(s, np.float64) - y)))


def summarize(
    out_dir: Path, cfg: ExperimentConfig, metrics: dict[str, dict[str, Any]], n_boot: int = 1000
) -> dict[str, Any]:
    """Per-arm scores and paired bootstrap differences ``both − image`` and ``both − features``."""
    preds = {}
    for arm in ARMS:
        with np.load(out_dir / arm / PREDICTIONS_FILE, allow_pickle=False) as npz:
            preds[arm] = {k: npz[k] for k in ("test_index", "test_label", "test_score")}
    for arm in ARMS[:-1]:
        if not np.array_equal(preds[arm]["test_index"], preds["both"]["test_index"]):
            raise ValueError(
                f"{out_dir / arm}: its test split differs from the fused run's; the arms are not comparable"
            )
    task = metrics["both"]["task"]
    key = get_task(task).headline
    rows = []
    for arm in ARMS:
        m = metrics[arm]
        rows.append(
            {
                "arm": arm,
                "run_dir": str(out_dir / arm),
                "model": m["model"],
                "n_params": m["n_params"],
                "metric": key,
                "test": m.get(key),
                "test_ci": m.get(f"{key}_ci"),
                "fold_mean": m.get("fold_auc_mean", m.get("fold_mae_mean")),
                "fold_std": m.get("fold_auc_std", m.get("fold_mae_std")),
                "per_class": m.get("test_ovr_auc"),
                "train_time_s": m.get("train_time_s"),
            }
        )
    score = _score_fn(task)
    y = preds["both"]["test_label"]
    strat = None if get_task(task).is_regression else y
    diffs = {}
    for other in ("image", "features"):
        a, b = preds["both"]["test_score"], preds[other]["test_score"]
        boot = bootstrap_metric(
            lambda yy, sa, sb: score(yy, sa) - score(yy, sb), y, a, b, n_boot=n_boot, seed=cfg.seed, stratify=strat
        )
        z = boot["value"] / boot["std"] if boot["std"] > 0 else np.inf
        diffs[f"both_minus_{other}"] = {
            "value": boot["value"],
            "low": boot["low"],
            "high": boot["high"],
            "std": boot["std"],
            "p_value": float(2 * norm.sf(abs(z))),
        }
    better = "higher" if get_task(task).higher_is_better else "lower"
    return {
        "name": cfg.name,
        "task": task,
        "metric": key,
        "better": better,
        "scalars": list(cfg.data.scalars),
        "features_table": cfg.data.features,
        "n_test": int(y.size),
        "arms": rows,
        "differences": diffs,
        "note": "differences: paired percentile bootstrap over the common test split (stratified by class), "
        "p from its normal approximation",
    }


def write_figures(cfg: ExperimentConfig, out_dir: Path, per_class: int = 3) -> list[str]:
    """Example crops per class (raw and as the fused model sees them) and scalar distributions.

    Drawn on :class:`matplotlib.figure.Figure` objects (Agg canvas, no pyplot state), so that
    nothing about the process's plotting changes.
    """
    info = json.loads((out_dir / "both" / RUN_FILE).read_text(encoding="utf-8"))
    reader = open_experiment_data(cfg, info["data"]["paths"])
    labels = reader.labels()
    names = list(reader.class_names) or ["0", "1"]
    written = []

    module = load_fold_module(out_dir / "both", 0)
    picks = [np.flatnonzero(labels == k)[:per_class] for k in range(len(names))]
    fig = Figure(figsize=(2.1 * 2 * per_class, 2.2 * len(names)))
    axes = fig.subplots(len(names), 2 * per_class, squeeze=False)
    for k, idx in enumerate(picks):
        if idx.size == 0:
            continue
        x, _ = reader.read(idx)
        with torch.no_grad():
            seen = module.geometry(module.normalizer(torch.from_numpy(x))).numpy()
        for j in range(per_class):
            for col, (img, what) in enumerate(((x, "raw"), (seen, "model input"))):
                ax = axes[k, 2 * j + col]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < idx.size:
                    ax.imshow(img[j, 0], cmap="inferno", origin="lower")
                    ax.set_title(f"{names[k]} #{int(idx[j])}: {what}", fontsize=8)
    fig.suptitle(
        "Examples per class: raw image and what the fused model sees (after ROI crop and rotation)", fontsize=10
    )
    fig.tight_layout()
    path = out_dir / CROPS_FIGURE
    fig.savefig(path, dpi=90)
    written.append(str(path))

    scalars = np.asarray(reader.read_scalars(np.arange(reader.n_samples)), np.float64)
    cols = [reader.scalar_names.index(s) for s in cfg.data.scalars]
    n = len(cols)
    ncols = min(3, n)
    fig = Figure(figsize=(4.2 * ncols, 3.1 * -(-n // ncols)))
    axes = fig.subplots(-(-n // ncols), ncols, squeeze=False)
    for ax, c, sname in zip(axes.flat, cols, cfg.data.scalars):
        values = scalars[:, c]
        bins = np.histogram_bin_edges(values, bins=30)
        if len(np.unique(values)) <= 12:  # counts (peaks): one bin per value
            u = np.unique(values)
            bins = np.concatenate([u - 0.5, [u[-1] + 0.5]])
        for k, cname in enumerate(names):
            ax.hist(values[labels == k], bins=bins, histtype="step", density=True, label=cname, lw=1.5)
        ax.set_xlabel(sname)
        ax.set_ylabel("density")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Scalar inputs per class (all samples)", fontsize=10)
    fig.tight_layout()
    path = out_dir / FEATURES_FIGURE
    fig.savefig(path, dpi=90)
    written.append(str(path))
    return written
