"""Build, find and run the C++ engine's tool, and compare its predictions with PyTorch's.

The build is the Makefile's ``cpp`` target, in Python so that tests can build it when it is missing:
configure ``cpp/build`` once (only when it has no CMake cache), then ``cmake --build -j2``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2evision.export.errors import ExportError

TOOL = "e2evision-infer"
TEST = "e2evision-engine-test"


def source_dir() -> Path:
    """``cpp/`` of the source checkout this package runs from (an editable install)."""
    root = Path(__file__).resolve().parents[3]
    return root / "cpp"


def build_dir() -> Path:
    """Where the C++ build lives: ``$E2EVISION_CPP_BUILD`` or ``cpp/build`` of the checkout."""
    env = os.environ.get("E2EVISION_CPP_BUILD")
    return Path(env) if env else source_dir() / "build"


def tool_path() -> Path:
    return build_dir() / TOOL


def build_cpp(jobs: int = 2, quiet: bool = True) -> float:
    """Configure (only without a CMake cache) and build the C++ engine; returns the seconds spent."""
    src, build = source_dir(), build_dir()
    if not (src / "CMakeLists.txt").is_file():
        raise ExportError(f"{src}: no CMakeLists.txt (the C++ engine builds from a source checkout)")
    cmake = shutil.which("cmake")
    if cmake is None:
        raise ExportError("cmake not found on PATH: it is needed to build the C++ engine")
    import torch.utils

    t0 = time.perf_counter()
    steps = []
    if not (build / "CMakeCache.txt").is_file():
        steps.append(
            [
                cmake,
                "-S",
                str(src),
                "-B",
                str(build),
                "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            ]
        )
    steps.append([cmake, "--build", str(build), f"-j{jobs}"])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=quiet, text=True)
        if proc.returncode != 0:
            tail = ((proc.stdout or "") + (proc.stderr or ""))[-4000:]
            raise ExportError(f"C++ build step failed ({' '.join(cmd)}):\n{tail}")
    return time.perf_counter() - t0


def ensure_built() -> Path:
    """The tool, built first when missing."""
    if not tool_path().is_file():
        build_cpp()
    return tool_path()


def run_tool(
    model: str | os.PathLike[str],
    inputs: dict[str, str | os.PathLike[str]],
    outputs: dict[str, str | os.PathLike[str]] | None = None,
    *,
    tool: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    threads: int = 1,
    extra: list[str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``e2evision-infer`` (no check of its exit status: callers test failures too)."""
    cmd = [str(tool or tool_path()), "--model", str(model), "--threads", str(threads)]
    for name, path in inputs.items():
        cmd += ["--input", f"{name}={path}"]
    for name, path in (outputs or {}).items():
        cmd += ["--output", f"{name}={path}"]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    cmd += list(extra or [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def cpp_predict(
    model: str | os.PathLike[str],
    raw: np.ndarray,
    scalars: np.ndarray | None = None,
    *,
    tool: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    extra: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Every output of the C++ engine for raw inputs (written to and read back from .npy files);
    ``extra``: more tool arguments (e.g. ``["--graph-mode", "plain"]``)."""
    from e2evision.export.contract import contract_beside, read_contract

    contract = read_contract(contract_beside(model))
    names = [o["name"] for o in contract["outputs"]]
    with tempfile.TemporaryDirectory(prefix="e2evision-cpp-") as tmp:
        t = Path(tmp)
        inputs = {"image": t / "raw.npy"}
        save_npy(inputs["image"], raw)
        if scalars is not None:
            inputs["scalars"] = t / "scalars.npy"
            save_npy(inputs["scalars"], scalars)
        outs = {n: t / f"{n}.npy" for n in names}
        proc = run_tool(model, inputs, outs, tool=tool, batch_size=batch_size, extra=extra)
        if proc.returncode != 0:
            raise ExportError(f"{TOOL} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return {n: np.load(p, allow_pickle=False) for n, p in outs.items()}


def save_npy(path: str | os.PathLike[str], x: np.ndarray) -> Path:
    """Little-endian float32, C order: the only .npy layout the C++ reader accepts."""
    from e2evision.utils import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(x, dtype="<f4"), allow_pickle=False)
    return Path(path)


@dataclass
class CppComparison:
    rows: int
    max_abs_diff: dict[str, float]
    atol: float
    rtol: float


def verify_cpp(
    model: str | os.PathLike[str],
    raw: np.ndarray,
    scalars: np.ndarray | None = None,
    *,
    tool: str | os.PathLike[str] | None = None,
    atol: float = 1e-5,
    rtol: float = 0.0,
    batch_size: int | None = None,
) -> CppComparison:
    """C++ engine (raw → preprocess.json → exported model) vs PyTorch (raw → training module).

    The fold comes from the model's preprocess.json (its weights' sha256 is checked). Raises
    ExportError when any output differs by more than ``atol + rtol·|ref|``.
    """
    from e2evision.export.exporters import compare_outputs, load_source_fold, reference_outputs

    pre, fold = load_source_fold(model)
    check_inputs(pre, {"image": raw, "scalars": scalars})
    want = reference_outputs(fold, raw, scalars)
    got = cpp_predict(model, raw, scalars, tool=tool, batch_size=batch_size)
    diffs = compare_outputs(got, want, atol, rtol, f"C++ engine on {model}")
    return CppComparison(rows=int(raw.shape[0]), max_abs_diff=diffs, atol=atol, rtol=rtol)


def check_inputs(contract: dict, arrays: dict[str, np.ndarray | None]) -> None:
    """Shapes and values against preprocess.json before anything runs: one-line errors."""
    for spec in contract["inputs"]:
        x = arrays.get(spec["name"])
        if x is None:
            raise ExportError(
                f"input {spec['name']!r}: the model needs it (shape {spec['shape']}); give --{spec['name']}"
            )
        want = tuple(int(d) for d in spec["shape"][1:])
        if x.ndim != len(spec["shape"]) or tuple(x.shape[1:]) != want:
            hint = ""
            if x.ndim == 4 and len(want) == 3 and tuple(x.shape[1:]) == (want[1], want[2], want[0]):
                hint = " (channels-last? the engine takes channels-first (N, C, H, W))"
            raise ExportError(
                f"input {spec['name']!r}: shape {tuple(x.shape)}, preprocess.json "
                f"expects (N, {', '.join(map(str, want))}){hint}; write it with "
                "e2evision sample"
            )
        if x.shape[0] < 1:
            raise ExportError(f"input {spec['name']!r}: holds no samples (shape {tuple(x.shape)}); give at least one")
        if x.dtype.kind not in "fiu":
            raise ExportError(
                f"input {spec['name']!r}: dtype {x.dtype}, expected float32; write it with e2evision sample"
            )
        if not np.isfinite(x).all():
            raise ExportError(
                f"input {spec['name']!r}: has NaN or infinite values; the engine "
                "refuses non-finite inputs (clean or drop those samples)"
            )


def benchmark_cpp(
    model: str | os.PathLike[str],
    raw_npy: str | os.PathLike[str],
    batch_size: int,
    reps: int,
    warmup: int = 10,
    threads: int = 1,
    tool: str | os.PathLike[str] | None = None,
    scalars_npy: str | os.PathLike[str] | None = None,
    graph_mode: str | None = None,
) -> dict[str, float]:
    """The tool's own latency measurement of one run() call (JSON from ``--bench``).

    ``graph_mode`` (TorchScript only): ``plain``, ``inference`` or ``fused``; None is the engine's default.
    """
    inputs = {"image": raw_npy, **({"scalars": scalars_npy} if scalars_npy else {})}
    extra = ["--bench", str(reps), "--warmup", str(warmup)]
    if graph_mode:
        extra += ["--graph-mode", graph_mode]
    proc = run_tool(model, inputs, None, tool=tool, batch_size=batch_size, threads=threads, extra=extra)
    if proc.returncode != 0:
        raise ExportError(f"{TOOL} --bench failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # python -m e2evision.export.cpp: build the engine
    print(f"built {build_dir()} in {build_cpp(quiet=False):.0f} s", file=sys.stderr)
