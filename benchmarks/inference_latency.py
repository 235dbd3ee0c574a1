"""Inference latency, one thread: the C++ engine vs PyTorch eager vs onnxruntime (Python), side by side.

    .venv/bin/python benchmarks/inference_latency.py                      # ResNet-15, ViT, ViT-SD
    .venv/bin/python benchmarks/inference_latency.py --size tiny --reps 50  # seconds, for a smoke test
    .venv/bin/python benchmarks/inference_latency.py --models resnet15 --out latency.json

For each model it simulates electron/photon crops, trains a 2-fold, 1-epoch run (the weights do not
change the latency, but the export path is the real one), exports the best fold to TorchScript and
ONNX, and times one call on raw images at batch 1 and 256. Every contender starts from the same raw
float32 images and applies the normalisation itself, as a CMSSW producer would:

* C++: ``e2evision-infer --bench`` (the engine's default path: TorchScript, ``GraphMode::Auto``;
  preprocessing in C++; timed inside the process around ``Engine::run``), ``at::set_num_threads(1)``;
  ``--cpp-variants`` adds other engine paths (``plain``/``inference`` graph modes, an ``aoti`` package,
  ``onednn``: the model lowered to a oneDNN program, for the CNNs; ``dir``: the export directory,
  holding every export made, of which the engine keeps the fastest);
* PyTorch eager: the training module's ``forward`` (normaliser included), ``torch.set_num_threads(1)``,
  inference mode;
* onnxruntime: NumPy preprocessing from preprocess.json + ``InferenceSession.run``, one intra-op and
  one inter-op thread.

Reported: the median and the minimum of ``--reps`` timed calls, taken in ``--rounds`` interleaved
rounds (C++, its variants, onnxruntime, eager, again ...) so that load from other processes affects
all alike, and the C++ engine's time over onnxruntime's (≤ 1: the engine is as fast or faster): for
the default path, and for the engine's fastest path timed (``best``, named), which is the export to
ship for that model (docs/deployment.md, "Latency"). On a shared machine the minimum is the
steadier figure.
``--size`` is the knob: ``tiny`` (the test suite's toy widths), ``default`` (the registry presets:
ResNet-15 16→32 channels, vit_micro/vit_sd_micro 64 wide × 4 blocks) or ``large`` (ResNet-15
32→64, ViT 192 wide × 6 blocks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    "resnet15": ("egamma_resnet15.yaml", "resnet15"),
    "vit": ("egamma_vit.yaml", "vit_micro"),
    "vit_sd": ("egamma_vit.yaml", "vit_sd_micro"),
}
SIZES: dict[str, dict[str, list[str]]] = {
    "tiny": {
        "resnet15": ["model.kwargs.widths=[4, 8]", "model.kwargs.blocks_per_stage=1"],
        "vit": ["model.kwargs.embed_dim=16", "model.kwargs.depth=1", "model.kwargs.num_heads=2"],
        "vit_sd": ["model.kwargs.embed_dim=16", "model.kwargs.depth=1", "model.kwargs.num_heads=2"],
    },
    "default": {"resnet15": [], "vit": [], "vit_sd": []},
    "large": {
        "resnet15": ["model.kwargs.widths=[32, 64]"],
        "vit": ["model.kwargs.embed_dim=192", "model.kwargs.depth=6", "model.kwargs.num_heads=3"],
        "vit_sd": ["model.kwargs.embed_dim=192", "model.kwargs.depth=6", "model.kwargs.num_heads=3"],
    },
}


def times_ms(fn, reps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def prepare(name: str, args: argparse.Namespace, work: Path, files: list[Path]) -> dict:
    """Train (once) the 1-epoch run of ``name``, export it (TorchScript, ONNX, optionally AOTI)."""
    from e2evision.config import load_config
    from e2evision.export import ExportError, export_model, load_fold, read_contract
    from e2evision.training import run_experiment

    config, model_name = MODELS[name]
    run = work / f"{name}-{args.size}"
    if not (run / "metrics.json").is_file():
        cfg = load_config(
            ROOT / "configs" / config,
            [
                f"data.paths={json.dumps([str(f) for f in files])}",
                f"model.name={model_name}",
                "train.folds=2",
                "train.max_epochs=1",
                "train.progress=false",
                "augment.test_time=false",  # one forward pass per image: the latency of the network itself
                *SIZES[args.size][name],
            ],
        )
        run_experiment(cfg, run)
    paths = {"torchscript": run / "export" / "model.pt", "onnx": run / "export" / "model.onnx"}
    if "aoti" in args.cpp_variants:
        paths["aoti"] = run / "export" / "model.pt2"
    if "onednn" in args.cpp_variants:
        paths["onednn"] = run / "export" / "model.onednn"
    for fmt, path in list(paths.items()):
        if not path.is_file():
            t0 = time.perf_counter()
            try:
                export_model(run, fmt, path, n_check=16)
            except ExportError as err:
                if fmt != "onednn":
                    raise
                print(f"{name}: no oneDNN program ({str(err).splitlines()[0][:120]})", file=sys.stderr)
                del paths[fmt]
                continue
            print(f"{name}: {fmt} export {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    contract = read_contract(paths["torchscript"].parent / "preprocess.json")
    fold = load_fold(run, contract["source"]["fold"])
    return {
        "paths": paths,
        "contract": contract,
        "fold": fold,
        "params": sum(p.numel() for p in fold.model.parameters()),
    }


def time_batch(
    model: dict, batch: int, raw256: np.ndarray, raw_npy: Path, tool: Path, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Times of every contender at one batch size, in ``--rounds`` interleaved rounds."""
    import onnxruntime as ort
    import torch

    from e2evision.export import apply_preprocess
    from e2evision.export.cpp import benchmark_cpp

    reps = args.reps if batch == 1 else max(5, args.reps // 10)
    warm = args.warmup if batch == 1 else max(3, args.warmup // 5)
    x_np = raw256[:batch].copy()
    x_t = torch.from_numpy(x_np)
    spec = model["contract"]["inputs"][0]["preprocess"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model["paths"]["onnx"]), opts, providers=["CPUExecutionProvider"])
    module = model["fold"].module

    def eager() -> None:
        with torch.inference_mode():
            module(x_t)

    def onnxrt() -> None:
        session.run(["prob"], {"image": apply_preprocess(x_np, spec)})

    def cpp(path: Path, graph_mode: str | None) -> Callable[[int], list[float]]:
        return lambda n: benchmark_cpp(
            path, raw_npy, batch, n, warmup=warm, threads=1, tool=tool, graph_mode=graph_mode
        )["times_ms"]

    ts = model["paths"]["torchscript"]
    contenders: dict[str, Callable[[int], list[float]]] = {"cpp": cpp(ts, None)}
    for variant in args.cpp_variants:
        if variant in ("aoti", "onednn"):
            if variant in model["paths"]:  # a ViT has no oneDNN program
                contenders[f"cpp_{variant}"] = cpp(model["paths"][variant], None)
        elif variant == "dir":  # the engine on the export directory: it keeps the fastest export
            contenders["cpp_dir"] = cpp(ts.parent, None)
        else:
            contenders[f"cpp_{variant}"] = cpp(ts, variant)
    contenders["onnxruntime"] = lambda n: times_ms(onnxrt, n, warm)
    if not args.no_eager:
        contenders["eager"] = lambda n: times_ms(eager, n, warm)
    got: dict[str, list[float]] = {k: [] for k in contenders}
    per_round = max(1, reps // args.rounds)
    for _ in range(args.rounds):  # interleaved, so that load from other processes hits all alike
        for key, fn in contenders.items():
            got[key] += fn(per_round)
    return got


PATH_NAMES = {
    "cpp": "TorchScript auto",
    "cpp_plain": "TorchScript plain",
    "cpp_inference": "TorchScript inference",
    "cpp_fused": "TorchScript fused",
    "cpp_aoti": "AOTInductor",
    "cpp_onednn": "oneDNN program",
    "cpp_dir": "export directory",
}


def best_engine_path(med: dict[str, float]) -> str:
    """The engine path (a ``cpp*`` contender) with the lowest median."""
    return min((k for k in med if k.startswith("cpp")), key=lambda k: med[k])


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    """C++ and onnxruntime side by side with their ratio first, then the other contenders."""
    extra = [f"cpp_{v}" for v in args.cpp_variants] + ([] if args.no_eager else ["eager"])
    head = [
        "model",
        "params",
        "batch",
        "C++ engine ms",
        "onnxruntime ms",
        "C++ / ORT",
        "best C++ / ORT",
        *[f"{k} ms" for k in extra],
    ]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for r in rows:  # median (minimum) of the timed calls
        cells = [
            r["model"],
            f"{r['params']:,}",
            str(r["batch"]),
            f"{r['cpp_ms']:.3f} ({r['cpp_min_ms']:.3f})",
            f"{r['onnxruntime_ms']:.3f} ({r['onnxruntime_min_ms']:.3f})",
            f"**{r['cpp_over_onnxruntime']:.2f}** ({r['cpp_over_onnxruntime_min']:.2f})",
            f"**{r['best_cpp_over_onnxruntime']:.2f}** ({r['best_cpp_path']})",
            *[f"{r[k + '_ms']:.3f} ({r[k + '_min_ms']:.3f})" if k + "_ms" in r else "—" for k in extra],
        ]
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        if r["batch"] == 1:
            verdict = "yes" if r["best_cpp_over_onnxruntime"] <= 1 else "no"
            print(
                f"batch 1, {r['model']}: engine ({r['best_cpp_path']}) ≤ onnxruntime: {verdict} "
                f"({r['best_cpp_over_onnxruntime']:.2f})"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet15,vit,vit_sd", help="comma list of resnet15, vit, vit_sd")
    ap.add_argument("--size", choices=sorted(SIZES), default="default", help="model size knob")
    ap.add_argument("--reps", type=int, default=200, help="timed calls at batch 1 (batch 256: reps // 10, at least 5)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls before each round")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds of C++, eager and onnxruntime")
    ap.add_argument(
        "--cpp-variants",
        default="plain",
        help="comma list of other engine paths to time beside the default: plain, inference "
        "(TorchScript graph modes), aoti (exports an AOTInductor package, ~10-90 s per model), onednn (the "
        "model as a oneDNN program, CNNs only), dir (the engine on the export directory, which keeps its "
        "fastest export)",
    )
    ap.add_argument("--no-eager", action="store_true", help="skip PyTorch eager")
    ap.add_argument("--n-train", type=int, default=400, help="simulated crops for the 1-epoch training")
    ap.add_argument("--workdir", type=Path, default=None, help="keep runs and exports here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    args.cpp_variants = [v.strip() for v in args.cpp_variants.split(",") if v.strip()]
    bad = set(args.cpp_variants) - {"plain", "inference", "fused", "aoti", "onednn", "dir"}
    if bad:
        ap.error(f"unknown --cpp-variants {sorted(bad)}; choose from plain, inference, fused, aoti, onednn, dir")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import onnxruntime as ort
    import torch

    from e2evision.export import ensure_built, save_npy
    from e2evision.simulate.calorimeter import write_egamma

    torch.set_num_threads(1)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        ap.error(f"unknown models {sorted(unknown)}; choose from {sorted(MODELS)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="e2evision-latency-"))
    t_build = time.perf_counter()
    tool = ensure_built()
    print(f"C++ tool {tool} ready ({time.perf_counter() - t_build:.0f} s)", file=sys.stderr)
    data = work / "data"
    files = sorted(data.glob("*.hdf5")) if data.is_dir() else []
    if not files:
        files = write_egamma(data, args.n_train, seed=1, progress=False)
    from e2evision.datasets import open_dataset

    with open_dataset(files) as ds:
        raw256, _ = ds.read(np.arange(256) % ds.n_samples)
    raw256 = np.ascontiguousarray(raw256, dtype=np.float32)
    raw_npy = save_npy(work / "raw256.npy", raw256)

    rows = []
    for name in names:
        model = prepare(name, args, work, files)
        for batch in (1, 256):
            got = time_batch(model, batch, raw256, raw_npy, tool, args)
            med = {k: statistics.median(v) for k, v in got.items()}
            low = {k: min(v) for k, v in got.items()}
            row = {
                "model": model["fold"].config.model.name,
                "size": args.size,
                "params": model["params"],
                "batch": batch,
                "reps": len(got["cpp"]),
                **{f"{k}_ms": med[k] for k in got},
                **{f"{k}_min_ms": low[k] for k in got},
                "cpp_over_onnxruntime": med["cpp"] / med["onnxruntime"],
                "cpp_over_onnxruntime_min": low["cpp"] / low["onnxruntime"],
                "best_cpp_path": PATH_NAMES[best_engine_path(med)],
                "best_cpp_over_onnxruntime": med[best_engine_path(med)] / med["onnxruntime"],
            }
            rows.append(row)
            print(
                f"{row['model']:<14}{row['params']:>9,} batch {batch:>3}: median (min) ms "
                + ", ".join(f"{k} {med[k]:.3f} ({low[k]:.3f})" for k in got)
                + f"; C++/ORT {row['cpp_over_onnxruntime']:.2f}",
                file=sys.stderr,
            )

    print_table(rows, args)
    meta = {
        "threads": 1,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "cores": os.cpu_count(),
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta["load_average_1min_at_end"] = round(load, 2)
    print(
        f"\none thread each; median (minimum) of timed calls in {args.rounds} interleaved rounds; raw float32 images "
        f"in, normalisation included; {meta}"
    )
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
