"""Recipes side by side: input transforms and training settings of one config, on one split.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/recipes.py --n 16000 --seed 101 \\
        --config configs/egamma_resnet15.yaml --variants linear,log1p
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/recipes.py --n 10000 --seed 101 \\
        --config configs/quark_gluon_resnet15.yaml --set 'preprocess.crop=[64, 64]' \\
        --set 'preprocess.resize=[32, 32]' \\
        --variants 'shipped,log1p_1:preprocess.log1p=1.0;preprocess.normalize=none;preprocess.clip=null'

Every variant trains the same config on the same simulated data of the config's format (e/γ
crops, or quark-gluon / top jets with the default detector response; ``--n``, ``--seed``; the
data are simulated once under ``--out/data``), the same test split and the same folds, with only
the overrides that define the variant changed; the physics baseline runs once on that split. It
prints, per variant, the test AUC with its 95 % bootstrap interval, the AUC over the folds, the
first and last epoch's training loss (a model that never learned shows at once) and the time.
Variants are named presets (``--list``) or ``name:key=value;key=value`` on the command line.
This is the evidence behind each shipped config's ``preprocess`` and learning rate
(docs/training.md, "Input transforms for detector images").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> overrides. ``linear`` is the recipe shipped before log transforms existed.
PRESETS: dict[str, list[str]] = {
    "linear": [
        "preprocess.normalize=scale",
        "preprocess.clip=50.0",
        "preprocess.log1p=null",
        "preprocess.per_sample=null",
        "preprocess.channel_scale=null",
    ],
    "global_max": [
        "preprocess.normalize=minmax",
        "preprocess.clip=null",
        "preprocess.log1p=null",
        "preprocess.per_sample=null",
        "preprocess.channel_scale=null",
    ],
    "per_sample_sum": [
        "preprocess.normalize=scale",
        "preprocess.clip=50.0",
        "preprocess.log1p=null",
        "preprocess.per_sample=[sum, none]",
        "preprocess.channel_scale=null",
    ],
    "log1p": [
        "preprocess.normalize=none",
        "preprocess.clip=null",
        "preprocess.log1p=[1.0, null]",
        "preprocess.per_sample=null",
        "preprocess.channel_scale=[1.0, 0.1]",
    ],
    "log1p_scale": [
        "preprocess.normalize=scale",
        "preprocess.clip=null",
        "preprocess.log1p=[1.0, null]",
        "preprocess.per_sample=null",
        "preprocess.channel_scale=[1.0, 0.1]",
    ],
    "log1p_0.1": [
        "preprocess.normalize=none",
        "preprocess.clip=null",
        "preprocess.log1p=[0.1, null]",
        "preprocess.per_sample=null",
        "preprocess.channel_scale=[1.0, 0.1]",
    ],
    "log1p_zscore": [
        "preprocess.normalize=zscore",
        "preprocess.clip=null",
        "preprocess.log1p=[1.0, null]",
        "preprocess.per_sample=null",
        "preprocess.channel_scale=[1.0, 0.1]",
    ],
    "shipped": [],
}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """A preset name, or ``name:key=value;key=value`` (``name:`` may extend a preset: ``log1p+lr=3e-4``)."""
    if ":" not in text:
        if "+" in text:
            base, extra = text.split("+", 1)
            return text, PRESETS[base] + [f"train.{extra}" if "." not in extra.split("=")[0] else extra]
        if text not in PRESETS:
            raise SystemExit(f"unknown variant {text!r}: one of {', '.join(PRESETS)} or name:key=value;...")
        return text, PRESETS[text]
    name, body = text.split(":", 1)
    return name, [item for item in body.split(";") if item]


def split_variants(text: str) -> list[str]:
    """Split on commas outside brackets, so ``name:preprocess.log1p=[0.1, null]`` stays whole."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in parts + [cur] if p.strip()]


def loss_curve(run_dir: Path) -> tuple[float, float]:
    """Mean over folds of the first and the last epoch's training loss."""
    first, last = [], []
    for fold in sorted(run_dir.glob("fold_*/fold.json")):
        hist = json.loads(fold.read_text())["history"]
        losses = [h.get("train_loss") for h in hist if h.get("train_loss") is not None]
        if losses:
            first.append(losses[0])
            last.append(losses[-1])

    def mean(v: list[float]) -> float:
        return sum(v) / len(v) if v else float("nan")

    return mean(first), mean(last)


def simulated_files(fmt: str, n: int, seed: int, out: Path) -> list[Path]:
    """The config's kind of data, simulated once per (format, n, seed) under ``out/data`` and reused
    (accuracy.py's simulate-once step, so both benchmarks lay out and reuse data the same way)."""
    from accuracy import simulate

    dataset = {"egamma": "egamma", "auto": "egamma", "quark-gluon": "quark_gluon", "top": "top"}.get(fmt)
    if dataset is None:
        raise SystemExit(f"recipes.py simulates e/γ crops and quark-gluon or top jets, not {fmt!r} data")
    where, _ = simulate(dataset, n, seed, os.cpu_count() or 1, out)
    return sorted(p for p in where.iterdir() if p.suffix in (".hdf5", ".parquet"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "egamma_resnet15.yaml"))
    ap.add_argument("--variants", default="linear,log1p", help="comma list of presets or name:k=v;k=v")
    ap.add_argument("--n", type=int, default=4000, help="simulated crops or jets (the size knob)")
    ap.add_argument("--seed", type=int, default=101, help="simulation seed (the split and training use the config's)")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="overrides common to every variant")
    ap.add_argument("--out", type=Path, default=Path("runs/recipes"))
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--list", action="store_true", help="print the presets and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, ov in PRESETS.items():
            print(f"{name:<16} {' '.join(ov) or '(the config as shipped)'}")
        return 0

    from e2evision.baselines import physics_baseline
    from e2evision.config import load_config
    from e2evision.training.runner import run_experiment

    out = args.out.resolve()
    files = simulated_files(load_config(args.config).data.format, args.n, args.seed, out)
    common = [
        f"data.paths={json.dumps([str(f) for f in files])}",
        f"train.folds={args.folds}",
        "train.progress=false",
        *args.set,
    ]
    rows = []
    if not args.no_baseline:
        cfg = load_config(args.config, common + ["name=physics_baseline"])
        t0 = time.perf_counter()
        m = physics_baseline(cfg, out / f"n{args.n}-seed{args.seed}" / "physics_baseline")
        rows.append(("physics_baseline", m, (float("nan"), float("nan")), time.perf_counter() - t0))
    for text in split_variants(args.variants):
        name, ov = parse_variant(text)
        cfg = load_config(args.config, common + ov + [f"name={name.replace('.', '_').replace('+', '_')}"])
        run_dir = out / f"n{args.n}-seed{args.seed}" / Path(args.config).stem / cfg.name
        t0 = time.perf_counter()
        m = run_experiment(cfg, run_dir, resume=True)
        rows.append((name, m, loss_curve(run_dir), time.perf_counter() - t0))
        print(f"{name}: test AUC {m['test_auc']:.4f}", flush=True)
    print(f"\n{Path(args.config).name}, {args.n} simulated samples (seed {args.seed}), {args.folds} folds")
    print(f"{'variant':<22}{'test AUC':>9}  {'95 % CI':<17}{'folds':>16}{'loss first→last':>18}{'time s':>8}")
    for name, m, (l0, l1), dt in rows:
        ci = m.get("test_auc_ci") or [float("nan")] * 2
        folds = m.get("fold_auc") or []
        fold_txt = f"{sum(folds) / len(folds):.3f}±{(max(folds) - min(folds)) / 2:.3f}" if folds else "—"
        loss_txt = f"{l0:.3f}→{l1:.3f}" if l0 == l0 else "—"
        print(f"{name:<22}{m['test_auc']:>9.4f}  [{ci[0]:.3f}, {ci[1]:.3f}]{fold_txt:>16}{loss_txt:>18}{dt:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
