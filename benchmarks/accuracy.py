"""Accuracy: every image-model family against the physics baseline, on the same simulated data.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/accuracy.py --n 300 --epochs 1 --folds 2 --datasets egamma

For each dataset — electron/photon crops (``e2evision simulate egamma``), quark/gluon jets
(``simulate quark-gluon``), boosted top vs QCD (``simulate top``) and DeepLense lensing
(``simulate lensing``) — it simulates ``--n`` samples with a fixed seed (or reuses the data already
in ``--out/data/<dataset>-n<N>-seed<S>``), then trains every model family from its shipped config
``configs/<dataset>_<family>.yaml`` (resnet15, vit, vit_sd, swin, coatnet) through
:func:`e2evision.training.runner.run_experiment`, and the physics baseline
(:func:`e2evision.baselines.gbdt.physics_baseline`: gradient-boosted trees on shower shapes, jet
observables or lens features) on the same config, hence the same test split and folds.

Every family of a dataset gets the **same budget**: the same samples, seed, test split, folds,
epochs (early stopping off; the best validation epoch's weights are kept, as always), batch size,
preprocessing and input geometry. What stays per family is the shipped recipe: architecture,
optimizer settings, learning rate, weight decay. ``--size cpu`` (the default) shrinks the
GPU-sized configs for a CPU: the micro preset of each family (``vit_micro``, ``vit_sd_micro``,
``swin_micro``, ``coatnet_micro``; ResNet-15 is already small), 8 × 8 ViT patches, and large
images centre-cropped and resized to ``--img`` pixels (jets: crop 64 (quark/gluon) or 96 (top),
lensing: crop 96, then resize); ``--size shipped`` keeps the shipped models and image sizes (a GPU).
The budget used is printed first and stored in ``accuracy.json``.

Output under ``--out``: ``data/`` (reused on the next call with the same dataset, n and seed),
``runs/<dataset>-<budget>/<family>`` (run directories; finished folds are reused and interrupted
ones resumed when the same command runs again), ``report.html`` (``e2evision.report`` over all
runs) and ``accuracy.json`` (the tables below as data). Per dataset it prints: model, parameters,
test AUC (macro one-vs-rest AUC for the 3 lensing classes) with its 95 % bootstrap interval, AUC
over the folds, training time, and the gap "best image model − physics baseline" with a paired
test on the same test samples (DeLong for binary tasks, a paired bootstrap of the macro-AUC
difference for lensing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

FAMILIES = ("resnet15", "vit", "vit_sd", "swin", "coatnet")
#: dataset key -> config prefix, simulator name, how `--size cpu` shrinks its images (centre crop before resize)
DATASETS: dict[str, dict[str, Any]] = {
    "egamma": {"prefix": "egamma", "simulate": "egamma", "crop": None, "label": "electron vs photon"},
    "quark_gluon": {"prefix": "quark_gluon", "simulate": "quark-gluon", "crop": 64, "label": "quark vs gluon jets"},
    "top": {"prefix": "top", "simulate": "top", "crop": 96, "label": "boosted top vs QCD jets"},
    "lensing": {
        "prefix": "lensing",
        "simulate": "lensing",
        "crop": 96,
        "label": "lensing substructure (axion / cdm / no_sub)",
    },
}
#: --size cpu: the CPU-sized preset of each family
CPU_PRESETS = {
    "resnet15": "resnet15",
    "vit": "vit_micro",
    "vit_sd": "vit_sd_micro",
    "swin": "swin_micro",
    "coatnet": "coatnet_micro",
}
PATCHED = ("vit", "vit_sd")  # families whose configs set a patch size that must match the input size


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------- data
def data_dir(out: Path, dataset: str, n: int, seed: int) -> Path:
    return out / "data" / f"{dataset}-n{n}-seed{seed}"


def simulate(dataset: str, n: int, seed: int, workers: int, out: Path) -> tuple[Path, dict[str, Any]]:
    """The dataset's simulated files, generated once per (dataset, n, seed) and reused after."""
    where = data_dir(out, dataset, n, seed)
    marker = where / "COMPLETE.json"
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        info["reused"] = True
        log(f"[{dataset}] reusing {info['n']} simulated samples in {where} (generated in {info['seconds']:.0f} s)")
        return where, info
    if where.exists():  # an interrupted generation: start it again from nothing
        shutil.rmtree(where)
    where.mkdir(parents=True)
    sim = DATASETS[dataset]["simulate"]
    cmd = f"e2evision simulate {sim} --n {n} --out {where} --seed {seed}"
    log(f"[{dataset}] simulating: {cmd}" + (f" --workers {workers}" if sim != "egamma" else ""))
    t0 = time.perf_counter()
    if sim == "egamma":
        from e2evision.simulate.calorimeter import write_egamma

        write_egamma(where, n, seed=seed, progress=False)
    elif sim == "lensing":
        from e2evision.simulate.lensing import write_lensing

        write_lensing(where, n, seed=seed, workers=workers, progress=False)
        cmd += f" --workers {workers}"
    else:
        from e2evision.simulate.jets import jet_config, write_jets

        write_jets(sim, where, n, seed=seed, config=jet_config(sim), workers=workers, progress=False)
        cmd += f" --workers {workers}"
    seconds = time.perf_counter() - t0
    info = {"dataset": dataset, "n": n, "seed": seed, "workers": workers, "seconds": seconds, "command": cmd}
    marker.write_text(json.dumps(info, indent=1), encoding="utf-8")
    log(f"[{dataset}] {n} samples in {seconds:.0f} s")
    info["reused"] = False
    return where, info


# ------------------------------------------------------------------------------------------ configs
def overrides(dataset: str, family: str, args: argparse.Namespace, data: Path, image_side: int) -> list[str]:
    """CLI-style ``--set`` overrides: the common budget, then the CPU shrinking."""
    sets = [
        f"name={dataset}_{family}",
        f"seed={args.seed}",
        "data.paths=" + json.dumps([str(data)]),
        "data.max_samples=null",
        f"train.folds={args.folds}",
        f"train.max_epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"train.warmup_epochs={min(1, args.epochs - 1)}",  # the shipped 3 warm-up epochs would eat a short budget
        "train.early_stopping_patience=null",  # every family trains the same number of epochs
        "train.checkpoint_every_n_steps=null",
        "train.progress=false",
        "train.loggers=[csv]",
    ]
    if args.size == "cpu":
        spec = DATASETS[dataset]
        sets.append(f"model.name={CPU_PRESETS[family]}")
        if spec["crop"] is not None:
            sets.append(f"preprocess.crop=[{spec['crop']}, {spec['crop']}]")
        if image_side != args.img:
            sets.append(f"preprocess.resize=[{args.img}, {args.img}]")
        if family in PATCHED:
            sets.append(f"model.kwargs.patch_size={max(1, args.img // 8)}")  # 8 x 8 tokens
    return sets


def load(
    dataset: str, family: str, args: argparse.Namespace, data: Path, image_side: int, extra: list[str] | None = None
) -> tuple[Any, list[str]]:
    from e2evision.config import load_config

    path = ROOT / "configs" / f"{DATASETS[dataset]['prefix']}_{family}.yaml"
    sets = overrides(dataset, family, args, data, image_side) + list(extra or [])
    return load_config(path, sets), sets


def budget_tag(args: argparse.Namespace) -> str:
    size = f"cpu{args.img}" if args.size == "cpu" else "shipped"
    return f"n{args.n}-seed{args.seed}-k{args.folds}-e{args.epochs}-b{args.batch_size}-{size}"


def check_same_inputs(dataset: str, cfgs: dict[str, Any]) -> list[str]:
    """Families of one dataset should see identical data, preprocessing and augmentation: say where not."""
    notes = []
    ref_family, ref = next(iter(cfgs.items()))
    for family, cfg in cfgs.items():
        for part in ("data", "preprocess", "augment"):
            a, b = getattr(ref, part).model_dump(), getattr(cfg, part).model_dump()
            if a != b:
                diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
                notes.append(f"[{dataset}] {family} differs from {ref_family} in {part}: {', '.join(diff)}")
    return notes


# ------------------------------------------------------------------------------------------ metrics
def gap_test(task: str, best_dir: Path, base_dir: Path, seed: int) -> dict[str, Any]:
    """Paired comparison of the best image model and the baseline on the same test samples."""
    from e2evision.metrics import bootstrap_metric, delong_test, one_vs_rest_auc

    with (
        np.load(best_dir / "predictions.npz", allow_pickle=False) as a,
        np.load(base_dir / "predictions.npz", allow_pickle=False) as b,
    ):
        if not (np.array_equal(a["test_index"], b["test_index"]) and np.array_equal(a["test_label"], b["test_label"])):
            raise RuntimeError(f"{best_dir} and {base_dir} were scored on different test samples")
        y, sa, sb = a["test_label"], a["test_score"], b["test_score"]
    if task == "binary":
        t = delong_test(y, sa, sb)
        return {
            "test": "DeLong",
            "difference": float(t["difference"]),
            "low": float(t["low"]),
            "high": float(t["high"]),
            "p_value": float(t["p_value"]),
        }
    from scipy.stats import norm

    def diff(yy: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> float:
        return one_vs_rest_auc(yy, aa)["macro"] - one_vs_rest_auc(yy, bb)["macro"]

    boot = bootstrap_metric(diff, y, sa, sb, n_boot=500, seed=seed)
    sd = float(boot["std"])
    p = float(2 * norm.sf(abs(boot["value"]) / sd)) if sd > 0 else float(boot["value"] == 0)
    return {
        "test": "paired bootstrap (500)",
        "difference": float(boot["value"]),
        "low": float(boot["low"]),
        "high": float(boot["high"]),
        "p_value": p,
    }


def row_of(kind: str, family: str, m: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    return {
        "kind": kind,
        "family": family,
        "name": m["name"],
        "model": m["model"],
        "params": int(m.get("n_params") or 0),
        "test_auc": m["test_auc"],
        "test_auc_ci": m["test_auc_ci"],
        "fold_auc_mean": m["fold_auc_mean"],
        "fold_auc_std": m["fold_auc_std"],
        "oof_auc": m["oof_auc"],
        "train_time_s": m["train_time_s"],
        "wall_time_s": m.get("wall_time_s"),
        "epochs": m.get("epochs"),
        "best_epochs": m.get("best_epochs"),
        "test_accuracy": m.get("test_accuracy"),
        "run_dir": str(run_dir),
    }


def fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(float(x)) else f"{float(x):.{digits}f}"


def seconds(t: float) -> str:
    return f"{t:.1f} s" if t < 10 else f"{t:.0f} s"


def table(rows: list[dict[str, Any]], task: str) -> str:
    auc = "test macro AUC (3 classes)" if task == "multiclass" else "test AUC"
    lines = [
        f"| model | preset | parameters | {auc} [95 % CI] | AUC over folds | training |",
        "|---|---|---:|---|---|---:|",
    ]
    best = max(
        (r for r in rows if r["kind"] == "image" and r["test_auc"] is not None),
        key=lambda r: r["test_auc"],
        default=None,
    )
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['family']} | — | — | failed: {r['error']} | — | — |")
            continue
        lo, hi = r["test_auc_ci"]
        name = r["family"] if r["kind"] == "image" else "physics baseline"
        value = f"{fmt(r['test_auc'])} [{fmt(lo)}, {fmt(hi)}]"
        if r is best:
            value = f"**{fmt(r['test_auc'])}** [{fmt(lo)}, {fmt(hi)}]"
        params = f"{r['params']:,}" if r["kind"] == "image" else "—"
        lines.append(
            f"| {name} | `{r['model']}` | {params} | {value} | {fmt(r['fold_auc_mean'])} ± "
            f"{fmt(r['fold_auc_std'])} | {seconds(r['train_time_s'])} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1200, help="simulated samples per dataset (the size knob)")
    ap.add_argument("--epochs", type=int, default=4, help="training epochs of every image model")
    ap.add_argument("--folds", type=int, default=3, help="cross-validation folds (>= 2)")
    ap.add_argument("--batch-size", type=int, default=64, help="batch size of every image model")
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list of {', '.join(DATASETS)}")
    ap.add_argument("--models", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    ap.add_argument("--out", type=Path, default=Path("runs/accuracy"), help="data, runs, report.html, accuracy.json")
    ap.add_argument("--seed", type=int, default=7, help="seed of the simulation, the split, the folds and training")
    ap.add_argument("--workers", type=int, default=2, help="processes generating jets and lenses")
    ap.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "1") or 1),
        help="torch CPU threads (default: $OMP_NUM_THREADS, else 1)",
    )
    ap.add_argument(
        "--size",
        choices=("cpu", "shipped"),
        default="cpu",
        help="cpu: micro presets and images resized to --img; shipped: the configs' models and sizes",
    )
    ap.add_argument("--img", type=int, default=32, help="--size cpu: side of the model input in pixels")
    ap.add_argument("--no-report", action="store_true", help="skip report.html")
    ap.add_argument(
        "--no-scalars",
        action="store_true",
        help="skip the image + scalars runs (jets: the pt and m0 the baseline also reads)",
    )
    ap.add_argument(
        "--scalar-models", default="all", help="families also trained with the file's scalars (comma list, or all)"
    )
    args = ap.parse_args(argv)
    args.dataset_list = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [d for d in args.dataset_list if d not in DATASETS] + [m for m in args.model_list if m not in FAMILIES]
    if bad:
        ap.error(
            f"unknown dataset(s)/model(s): {', '.join(bad)}; datasets: {', '.join(DATASETS)}; "
            f"models: {', '.join(FAMILIES)}"
        )
    if not args.dataset_list:
        ap.error("--datasets is empty")
    if args.folds < 2 or args.epochs < 1 or args.n < 12 or args.batch_size < 1 or args.img < 8:
        ap.error("need --folds >= 2, --epochs >= 1, --n >= 12, --batch-size >= 1, --img >= 8")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    logging.getLogger("lightning").setLevel(logging.WARNING)
    from e2evision.baselines import physics_baseline
    from e2evision.datasets import open_dataset
    from e2evision.training.runner import run_experiment
    from e2evision.utils import package_versions

    # absolute, so the runs' configs (which name the data) match when resumed from another directory
    out = args.out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    command = " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else "accuracy.main(" + repr(argv) + ")"
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    budget = {
        "n": args.n,
        "seed": args.seed,
        "folds": args.folds,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "size": args.size,
        "img": args.img if args.size == "cpu" else None,
        "early_stopping": "off (best validation epoch kept)",
        "tag": budget_tag(args),
    }
    log(f"accuracy benchmark: {', '.join(args.dataset_list)} x {', '.join(args.model_list)} + physics baseline")
    log(
        f"budget per dataset: {args.n} simulated samples (seed {args.seed}), 20 % test, {args.folds}-fold CV, "
        f"{args.epochs} epochs, batch {args.batch_size}, early stopping off; "
        + (f"CPU sizes: micro presets, inputs {args.img}x{args.img}" if args.size == "cpu" else "shipped model sizes")
    )
    log(
        f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch threads {machine['torch_threads']}, "
        f"device {machine['device']}"
    )
    summary: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine,
        "versions": package_versions(),
        "budget": budget,
        "datasets": {},
    }
    run_dirs: list[Path] = []
    failures = 0
    for dataset in args.dataset_list:
        t_ds = time.perf_counter()
        data, sim_info = simulate(dataset, args.n, args.seed, args.workers, out)
        reader = open_dataset([data])
        shape = tuple(int(s) for s in reader.image_shape)
        task = reader.task
        side = shape[-1]
        cfgs, sets = {}, {}
        for family in args.model_list:
            cfgs[family], sets[family] = load(dataset, family, args, data, side)
        # a fair fight: where the baseline reads the file's scalars (pt, m0 of jets), image models get them too
        scalars = [] if dataset == "lensing" or args.no_scalars else list(reader.scalar_names)
        for family in args.model_list if scalars else []:
            if args.scalar_models == "all" or family in args.scalar_models.split(","):
                extra = [f"data.scalars={json.dumps(scalars)}", f"name={dataset}_{family}_scalars"]
                cfgs[f"{family}+scalars"], sets[f"{family}+scalars"] = load(dataset, family, args, data, side, extra)
        # the baseline reads the first family's config (only data, seed, test split and folds matter to it)
        base_cfg, _ = load(dataset, args.model_list[0] if args.model_list else "resnet15", args, data, side)
        base_cfg = base_cfg.model_copy(update={"name": f"{dataset}_physics_baseline"})
        for note in check_same_inputs(dataset, {f: c for f, c in cfgs.items() if not f.endswith("+scalars")}):
            log("note: " + note)
        geometry = "x".join(map(str, shape))
        pp = base_cfg.preprocess
        steps = ([f"crop {pp.crop[0]}"] if pp.crop else []) + ([f"resize {pp.resize[0]}"] if pp.resize else [])
        final = pp.resize or pp.pad or pp.crop or shape[1:]
        model_in = f"{shape[0]}x{final[0]}x{final[1]} ({', '.join(steps)})" if steps else geometry
        log(
            f"\n=== {dataset}: {DATASETS[dataset]['label']}, {reader.n_samples} samples {geometry}, task {task}; "
            f"model input {model_in}"
        )
        group = out / "runs" / f"{dataset}-{budget_tag(args)}"
        rows: list[dict[str, Any]] = []

        base_dir = group / "physics_baseline"
        log(f"[{dataset}] physics baseline -> {base_dir}")
        bm = physics_baseline(base_cfg, base_dir)
        rows.append(row_of("baseline", "physics_baseline", bm, base_dir))
        run_dirs.append(base_dir)
        log(
            f"[{dataset}] physics baseline: test AUC {fmt(bm['test_auc'])} [{fmt(bm['test_auc_ci'][0])}, "
            f"{fmt(bm['test_auc_ci'][1])}] ({len(bm['features'])} features, {bm['train_time_s']:.1f} s)"
        )

        for family, cfg in cfgs.items():
            run_dir = group / family
            log(f"[{dataset}] {family} ({cfg.model.name}) -> {run_dir}")
            try:
                cmd = (
                    f"e2evision train configs/{DATASETS[dataset]['prefix']}_{family.split('+')[0]}.yaml "
                    + " ".join(f"--set '{s}'" for s in sets[family])
                    + f" --out {run_dir} --resume"
                )
                m = run_experiment(cfg, run_dir, command=cmd, resume=True)
            except Exception as err:  # one failing family must not lose the others: reported and counted
                failures += 1
                traceback.print_exc()
                rows.append(
                    {"kind": "image", "family": family, "error": f"{type(err).__name__}: {err}", "test_auc": None}
                )
                continue
            rows.append(row_of("image", family, m, run_dir))
            run_dirs.append(run_dir)
            lo, hi = m["test_auc_ci"]
            log(
                f"[{dataset}] {family}: test AUC {fmt(m['test_auc'])} [{fmt(lo)}, {fmt(hi)}], "
                f"{m['n_params']:,} parameters, {m['train_time_s']:.0f} s training"
            )

        entry: dict[str, Any] = {
            "label": DATASETS[dataset]["label"],
            "task": task,
            "data": str(data),
            "simulation": sim_info,
            "image_shape": list(shape),
            "model_input": model_in,
            "n_trainval": bm["n_trainval"],
            "n_test": bm["n_test"],
            "overrides": sets,
            "rows": rows,
            "baseline_features": bm["features"],
        }
        log(
            f"\n{dataset} ({DATASETS[dataset]['label']}; {bm['n_trainval']} train+validation, {bm['n_test']} test, "
            f"{args.folds} folds, {args.epochs} epochs, batch {args.batch_size}, input {model_in}):\n"
        )
        log(table(rows, task))
        # image-only and image + scalars are compared with the baseline apart: the question differs
        for suffix, label in (("", "image model"), ("+scalars", "image + scalars model")):
            group_rows = [
                r
                for r in rows
                if r["kind"] == "image"
                and r.get("test_auc") is not None
                and r["family"].endswith("+scalars") == bool(suffix)
            ]
            best = max(group_rows, key=lambda r: r["test_auc"], default=None)
            if best is None:
                continue
            gap = gap_test(task, Path(best["run_dir"]), base_dir, args.seed)
            verdict = (
                "beats" if gap["low"] > 0 else "is below" if gap["high"] < 0 else "is not significantly different from"
            )
            key = "" if not suffix else "_scalars"
            entry[f"best_image_model{key}"] = best["family"]
            entry[f"gap{key}"] = gap
            entry[f"verdict{key}"] = verdict
            log(
                f"\nbest {label} − physics baseline: {gap['difference']:+.3f} "
                f"[{gap['low']:+.3f}, {gap['high']:+.3f}] ({best['family']}; {gap['test']}, p = {gap['p_value']:.2g}): "
                f"the best {label} {verdict} the physics baseline"
            )
        entry["wall_time_s"] = time.perf_counter() - t_ds
        summary["datasets"][dataset] = entry
        summary["wall_time_s"] = time.perf_counter() - t_start
        (out / "accuracy.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")

    if not args.no_report and run_dirs:
        from e2evision.report import build_report

        page = build_report(run_dirs, out / "report.html", title=f"e2evision accuracy benchmark ({budget_tag(args)})")
        log(f"\nwrote {page}")
    summary["wall_time_s"] = time.perf_counter() - t_start
    (out / "accuracy.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    log(f"wrote {out / 'accuracy.json'}; total wall time {summary['wall_time_s'] / 60:.1f} min")
    if failures:
        log(f"{failures} run(s) failed (see above)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
