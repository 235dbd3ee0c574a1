"""Collect what ``gpu_suite.sh`` measured into one JSON and one markdown page.

    python3 benchmarks/gpu_suite_summary.py runs/gpu_suite --seconds 412

Reads ``throughput.json`` (gpu_throughput.py), ``trainer.json`` (training_throughput.py) and
``curve/learning_curve.json`` (learning_curve.py) where present, and writes ``gpu_suite.json`` and
``gpu_suite.md`` beside them. A part that did not run is named as missing, not left out silently.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def throughput_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | input | mode | images/s | MFU | peak GB |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a"
        mem = f"{r['peak_mem_gb']:.2f}" if r.get("peak_mem_gb") is not None else "n/a"
        lines.append(f"| {r['model']} | {r['input']} | {r['mode']} | {r['images_per_s']:,.0f} | {mfu} | {mem} |")
    return lines


def trainer_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | input | bare loop img/s | e2evision img/s | ratio | PNG seed img/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['plain']:,.0f} | {r['e2evision']:,.0f} | "
            f"{r['e2evision'] / r['plain']:.2f} | {r['seed_png']:,.0f} |"
        )
    return lines


def curve_table(curve: dict[str, Any]) -> list[str]:
    models = list(dict.fromkeys(r["model"] for r in curve["rows"]))
    lines = ["| samples | " + " | ".join(models) + " |", "|---:|" + "---|" * len(models)]
    for size in curve.get("sizes") or sorted({r["size"] for r in curve["rows"]}):  # partial: rows so far
        cells = []
        for m in models:
            r = next((r for r in curve["rows"] if r["model"] == m and r["size"] == size), None)
            cells.append(
                "—"
                if r is None
                else f"{r['test_auc']:.4f} [{r['test_auc_ci'][0]:.3f}, {r['test_auc_ci'][1]:.3f}]"
                + (" ⚠" if r.get("warnings") else "")
            )
        lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=None, help="the suite's wall time")
    args = ap.parse_args(argv)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    parts = {
        "throughput": _load(args.out / "throughput.json"),
        "trainer": _load(args.out / "trainer.json"),
        "learning_curve": _load(args.out / "curve" / "learning_curve.json"),
    }
    summary = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "wall_time_s": args.seconds,
        **parts,
    }
    (args.out / "gpu_suite.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    md = [f"# GPU suite on {device} (torch {torch.__version__}; {args.seconds or 0:.0f} s)", ""]
    for title, key, fn in (
        ("Training throughput by mode", "throughput", throughput_table),
        ("Trainer against a bare loop", "trainer", trainer_table),
        ("Learning curve (test AUC [95 % CI])", "learning_curve", curve_table),
    ):
        md += [f"## {title}", ""]
        md += fn(parts[key]) if parts[key] else ["not measured (the part did not run or failed)"]
        md.append("")
    (args.out / "gpu_suite.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    return 0 if all(parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
