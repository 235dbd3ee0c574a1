"""Seed 003 end to end: top-quark mass regression by five CNNs with scalar inputs, stacked.

    .venv/bin/python benchmarks/top_mass_ensemble.py --n 1200 --epochs 6 --out runs/top_mass_ensemble

1. Simulate ``--n`` top-like jets with the top mass drawn over a range (Pythia 8 + FastJet,
   ``e2evision simulate top-mass``; reused when ``OUT/data`` already holds that many).
2. Train the five members of ``configs/top_mass_{lenet5,alexnet,vgg,resnet,inception}.yaml`` with
   the same budget, seed and folds: every image resized to ``--size`` pixels (CPU) and the jet's
   pt, ieta and iphi fed into the head (``data.scalars``); MAE on the scaled target.
3. Stack them (``e2evision ensemble --method stack``: a ridge regression on the members'
   out-of-fold predictions, fitted fold by fold) and take the plain mean for reference.
4. Fit the physics baseline on the same split (``e2evision baseline``: gradient boosting on the
   jet observables — jet mass, multiplicity, girth, N-subjettiness ratios — plus pt, ieta, iphi)
   and stack it with the five as well.
5. Print every model's test MAE with its bootstrap interval, each ensemble's paired difference with
   its best member, and write ``OUT/report.html``.

The members' sizes are the configs' (GPU-sized); on CPU keep ``--size`` small. Timings are for the
machine it runs on; ratios between members are what compare across machines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ("lenet5", "alexnet", "vgg", "resnet", "inception")


def simulate(out: Path, n: int, seed: int, workers: int) -> Path:
    from e2evision.simulate.jets import write_jets

    stamp = out / "simulated.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == {"n": n, "seed": seed}:
        return out
    t0 = time.perf_counter()
    write_jets("top-mass", out, n, seed=seed, workers=workers)
    print(f"simulated {n} top-mass jets in {time.perf_counter() - t0:.0f} s ({workers} workers)")
    stamp.write_text(json.dumps({"n": n, "seed": seed}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1200, help="simulated jets (size knob)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--size", type=int, default=32, help="images are resized to SIZE × SIZE (0: keep 125)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--members", default=",".join(MEMBERS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2, help="simulation processes")
    ap.add_argument("--out", type=Path, default=Path("runs/top_mass_ensemble"))
    args = ap.parse_args()

    from e2evision.baselines import physics_baseline
    from e2evision.config import load_config
    from e2evision.ensemble import build_ensemble
    from e2evision.report import build_report
    from e2evision.training import run_experiment

    args.out = args.out.resolve()  # the configs name the data: absolute, so a rerun from elsewhere reuses runs
    data = simulate(args.out / "data", args.n, args.seed, args.workers)
    budget = [
        f"data.paths=[{data}]",
        f"seed={args.seed}",
        f"train.folds={args.folds}",
        f"train.max_epochs={args.epochs}",
        f"train.batch_size={args.batch}",
        "train.progress=false",
        "train.early_stopping_patience=null",
        "train.checkpoint_every_n_steps=null",
    ]
    if args.size:
        budget.append(f"preprocess.resize=[{args.size}, {args.size}]")
    print(
        f"budget: {args.n} jets, {args.folds} folds, {args.epochs} epochs, batch {args.batch}, "
        f"images {args.size or 125}², scalars pt/ieta/iphi"
    )
    runs, rows = [], []
    for member in args.members.split(","):
        cfg = load_config(ROOT / "configs" / f"top_mass_{member}.yaml", budget)
        t0 = time.perf_counter()
        m = run_experiment(cfg, args.out / member)
        runs.append(args.out / member)
        rows.append(
            (cfg.name, cfg.model.name, m["n_params"], m["test_mae"], m["test_mae_ci"], time.perf_counter() - t0)
        )
    t0 = time.perf_counter()
    base_cfg = load_config(
        ROOT / "configs" / f"top_mass_{args.members.split(',')[0]}.yaml", [*budget, "name=topmass_physics_baseline"]
    )
    b = physics_baseline(base_cfg, args.out / "baseline")
    rows.append((b["name"], "gbdt", 0, b["test_mae"], b["test_mae_ci"], time.perf_counter() - t0))
    ens = {}
    for method in ("stack", "mean"):
        ens[method] = build_ensemble(
            runs, args.out / f"ensemble_{method}", method=method, name=f"topmass_{method}", seed=args.seed
        )
    ens["stack_with_baseline"] = build_ensemble(
        [*runs, args.out / "baseline"],
        args.out / "ensemble_stack_all",
        method="stack",
        name="topmass_stack_with_baseline",
        seed=args.seed,
    )
    runs.append(args.out / "baseline")
    print(f"\n{'model':<20} {'arch':<10} {'params':>10}  {'test MAE [GeV] (95 % CI)':<28} {'time':>7}")
    for name, arch, n_params, mae, ci, secs in rows:
        print(f"{name:<20} {arch:<10} {n_params:>10,}  {mae:7.2f} [{ci[0]:6.2f}, {ci[1]:6.2f}]        {secs:6.0f}s")
    for m in ens.values():
        lo, hi = m["test_mae_ci"]
        print(f"{m['name']:<20} {'ensemble':<10} {m['n_params']:>10,}  {m['test_mae']:7.2f} [{lo:6.2f}, {hi:6.2f}]")
    for method, m in ens.items():
        print(f"{method}: {m['versus_best_member']['verdict']}")
    page = build_report(
        [*runs, *(args.out / f"ensemble_{k}" for k in ("stack", "mean", "stack_all"))],
        args.out / "report.html",
        title="Top-quark mass: five CNNs, the physics baseline and their stacks",
    )
    print(f"report: {page}")


if __name__ == "__main__":
    main()
