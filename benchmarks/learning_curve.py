"""Learning curves: test AUC against the number of training samples, image models vs the physics baseline.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/learning_curve.py --sizes 1000,4000,16000,64000

It simulates one pool of e/γ crops (``--dataset egamma``, in ``--workers`` parallel chunks with
their own seeds) or quark/gluon jets (``--dataset quark_gluon``), holds out one fixed test split of
``--test`` samples, and for each size trains the shipped configs (``configs/<dataset>_<model>.yaml``,
``--models``) and the physics baseline on that many train+validation samples
(``data.max_trainval_samples``: nested subsets, so a smaller point's samples are among a larger
one's) with ``--folds``-fold cross-validation. Every point is scored on the same test samples.

Printed: a table of test AUC with its 95 % bootstrap interval per model and size, and for each
size the best image model minus the baseline with DeLong's paired test. Written under ``--out``:
``learning_curve.json`` (the table as data), ``learning_curve.png`` (AUC with its interval
against the training samples, log scale) and the run directories (reused when the same command
runs again, so a larger ``--sizes`` list only adds the new points). ``e2evision report
--out ... OUT/runs/*`` puts them on one page.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet15", "vit")
DATASETS = {"egamma": "egamma", "quark_gluon": "quark-gluon"}


def log(msg: str = "") -> None:
    print(msg, flush=True)


def _egamma_chunk(where: str, n: int, seed: int) -> list[str]:
    from e2evision.simulate.calorimeter import write_egamma

    return [str(p) for p in write_egamma(Path(where), n, seed=seed, progress=False)]


def simulate_pool(dataset: str, n: int, seed: int, workers: int, out: Path, response: bool = True) -> list[str]:
    """The pool's files, simulated once per (dataset, n, seed, response) and reused after."""
    where = out / "data" / (f"{dataset}-n{n}-seed{seed}" + ("" if response else "-noresponse"))
    marker = where / "COMPLETE.json"
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        log(f"[{dataset}] reusing {n} simulated samples in {where}")
        return info["files"]
    where.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if dataset == "egamma":
        chunks = max(1, min(workers, n // 2000))
        sizes = [n // chunks + (1 if i < n % chunks else 0) for i in range(chunks)]
        with cf.ProcessPoolExecutor(max_workers=chunks) as pool:
            jobs = [
                pool.submit(_egamma_chunk, str(where / f"chunk{i:02d}"), m, seed * 1000 + i)
                for i, m in enumerate(sizes)
            ]
            files = sorted(f for job in jobs for f in job.result())
    else:
        from e2evision.simulate.jets import jet_config, write_jets

        result = write_jets(
            DATASETS[dataset],
            where,
            n,
            seed=seed,
            config=jet_config(DATASETS[dataset], **({} if response else {"response": None})),
            workers=workers,
            progress=False,
        )
        files = [str(result.path)]
    seconds = time.perf_counter() - t0
    info = {"n": n, "seed": seed, "response": response, "files": files, "seconds": seconds}
    marker.write_text(json.dumps(info), encoding="utf-8")
    log(f"[{dataset}] simulated {n} samples in {seconds:.0f} s ({workers} workers)")
    return files


def overrides(args: argparse.Namespace, files: list[str], size: int, pool: int) -> list[str]:
    sets = [
        f"seed={args.seed}",
        "data.paths=" + json.dumps(files),
        "data.max_samples=null",
        f"data.test_fraction={args.test / pool!r}",
        f"data.max_trainval_samples={size}",
        f"train.folds={args.folds}",
        "train.progress=false",
        "train.checkpoint_every_n_steps=null",
        "train.loggers=[csv]",
    ]
    if args.epochs is not None:
        sets.append(f"train.max_epochs={args.epochs}")
    if args.dataset == "quark_gluon" and args.img:
        sets += ["preprocess.crop=[64, 64]", f"preprocess.resize=[{args.img}, {args.img}]"]
    return sets + list(args.set)


def model_sets(args: argparse.Namespace, model: str) -> list[str]:
    """The ``--model-set MODEL:KEY=VALUE`` overrides that apply to ``model`` only."""
    out = []
    for item in args.model_set:
        name, _, kv = item.partition(":")
        if name == model:
            out.append(kv)
    return out


def run_point(args: argparse.Namespace, model: str, files: list[str], size: int, pool: int) -> dict[str, Any]:
    from e2evision.baselines import physics_baseline
    from e2evision.config import load_config
    from e2evision.training.runner import run_experiment

    cfg_model = "resnet15" if model == "physics_baseline" else model
    cfg = load_config(
        ROOT / "configs" / f"{args.dataset}_{cfg_model}.yaml",
        overrides(args, files, size, pool) + model_sets(args, model) + [f"name={model}"],
    )
    run_dir = args.out.resolve() / "runs" / f"n{size}" / model
    t0 = time.perf_counter()
    if model == "physics_baseline":
        done = run_dir / "metrics.json"
        m = json.loads(done.read_text()) if done.is_file() else physics_baseline(cfg, run_dir)
    else:
        m = run_experiment(cfg, run_dir, resume=True)
    return {
        "model": model,
        "size": size,
        "n_trainval": m.get("n_trainval"),
        "n_test": m.get("n_test"),
        "test_auc": m["test_auc"],
        "test_auc_ci": m["test_auc_ci"],
        "warnings": m.get("warnings", []),
        "seconds": time.perf_counter() - t0,
        "run_dir": str(run_dir),
    }


def gap(best_dir: str, base_dir: str) -> tuple[float, float]:
    """Best image model − baseline on the same test samples, and DeLong's two-sided p."""
    from e2evision.metrics.delong import delong_test

    a, b = np.load(Path(best_dir) / "predictions.npz"), np.load(Path(base_dir) / "predictions.npz")
    assert np.array_equal(a["test_index"], b["test_index"]), "the test splits differ"
    res = delong_test(a["test_label"], a["test_score"], b["test_score"])
    return float(res["auc_a"] - res["auc_b"]), float(res["p_value"])


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model in dict.fromkeys(r["model"] for r in rows):
        pts = sorted((r for r in rows if r["model"] == model), key=lambda r: r["size"])
        x = [r["size"] for r in pts]
        y = np.array([r["test_auc"] for r in pts])
        lo = np.array([r["test_auc_ci"][0] for r in pts])
        hi = np.array([r["test_auc_ci"][1] for r in pts])
        ax.plot(x, y, marker="o", label=model, ls="--" if model == "physics_baseline" else "-")
        ax.fill_between(x, lo, hi, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("training + validation samples")
    ax.set_ylabel("test AUC (95 % bootstrap interval)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="egamma")
    ap.add_argument("--sizes", default="1000,2000,4000,8000,16000", help="train+validation samples per point")
    ap.add_argument("--test", type=int, default=4000, help="fixed test samples (the same for every point)")
    ap.add_argument(
        "--pool",
        type=int,
        default=None,
        help="samples simulated (default: the largest size + --test); give the same value to "
        "calls that add points to one curve, so that they share the data and the test split",
    )
    ap.add_argument("--models", default=",".join(MODELS), help="shipped configs <dataset>_<model>.yaml")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument(
        "--model-max-size",
        action="append",
        default=[],
        metavar="MODEL=N",
        help="train MODEL only up to N samples (e.g. vit=8000: the slow model stops earlier)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="override train.max_epochs (default: the config's)")
    ap.add_argument("--img", type=int, default=32, help="quark_gluon: crop 64 then resize to this side (0: keep)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    ap.add_argument("--set", action="append", default=[], help="override for every image model and the baseline")
    ap.add_argument(
        "--model-set",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE",
        help="override for one model only (e.g. vit:model.name=vit_micro)",
    )
    ap.add_argument(
        "--no-response",
        action="store_true",
        help="jets: simulate without the detector response (generator-level images), to measure its effect",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/learning_curve"))
    args = ap.parse_args(argv)

    sizes = sorted(int(s) for s in args.sizes.split(","))
    models = [m for m in args.models.split(",") if m] + ["physics_baseline"]
    pool = args.pool or sizes[-1] + args.test
    if pool < sizes[-1] + args.test:
        ap.error(f"--pool {pool} is smaller than the largest size plus --test ({sizes[-1] + args.test})")
    if args.no_response and args.dataset == "egamma":
        ap.error("--no-response applies to jets only")
    bad = [m for m in args.model_set if ":" not in m or "=" not in m.partition(":")[2]]
    if bad:
        ap.error(f"--model-set wants MODEL:KEY=VALUE, got {bad[0]!r}")
    files = simulate_pool(args.dataset, pool, args.seed, args.workers, args.out.resolve(), not args.no_response)
    limits = {k: int(v) for k, v in (item.split("=", 1) for item in args.model_max_size)}
    rows: list[dict[str, Any]] = []
    for size in sizes:
        for model in models:
            if size > limits.get(model, size):
                continue
            row = run_point(args, model, files, size, pool)
            rows.append(row)
            partial = {"dataset": args.dataset, "test": args.test, "partial": True, "rows": rows}
            (args.out.resolve() / "learning_curve.json").write_text(json.dumps(partial, indent=1), encoding="utf-8")
            warn = "  NOT LEARNING" if row["warnings"] else ""
            log(
                f"n={size:>7} {model:<17} test AUC {row['test_auc']:.4f} "
                f"[{row['test_auc_ci'][0]:.3f}, {row['test_auc_ci'][1]:.3f}]  {row['seconds']:.0f} s{warn}"
            )
    log(f"\n{args.dataset}: test AUC on {args.test} fixed test samples, {args.folds}-fold models, seed {args.seed}")
    log(f"{'samples':>8}" + "".join(f"{m:>26}" for m in models) + f"{'best image − baseline':>24}{'DeLong p':>10}")
    for size in sizes:
        pts = {r["model"]: r for r in rows if r["size"] == size}
        cells = "".join(
            f"{pts[m]['test_auc']:>10.4f} [{pts[m]['test_auc_ci'][0]:.3f}, {pts[m]['test_auc_ci'][1]:.3f}]"
            if m in pts
            else f"{'—':>26}"
            for m in models
        )
        images = [pts[m] for m in models if m != "physics_baseline" and m in pts]
        best = max(images, key=lambda r: r["test_auc"]) if images else None
        if best is not None:
            d, p = gap(best["run_dir"], pts["physics_baseline"]["run_dir"])
            for r in (best, pts["physics_baseline"]):
                r.setdefault("gap", {})[str(size)] = d
            log(f"{size:>8}{cells}{d:>+16.4f} ({best['model']}){p:>10.2g}")
    summary = {
        "dataset": args.dataset,
        "test": args.test,
        "folds": args.folds,
        "seed": args.seed,
        "epochs": args.epochs,
        "response": not args.no_response if args.dataset != "egamma" else None,
        "sizes": sizes,
        "rows": rows,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    out = args.out.resolve()
    (out / "learning_curve.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    response = (
        "" if args.dataset == "egamma" else (", no detector response" if args.no_response else ", detector response")
    )
    plot(rows, out / "learning_curve.png", f"{args.dataset}{response}: {args.test} test samples, {args.folds} folds")
    log(f"wrote {out / 'learning_curve.json'} and {out / 'learning_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
