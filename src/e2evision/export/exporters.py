"""Export one fold to ONNX, TorchScript or an AOTInductor package, verified before it is published.

The exported graph starts *after* the normaliser: raw images go through ``preprocess.json`` (applied
by the consumer: the C++ engine, a CMSSW producer) and then through the graph, which holds any crop,
pad or resize, the model and the output head (sigmoid/softmax). Verification runs the exported
file with its own runtime on real test-split inputs preprocessed by the NumPy implementation of the
contract and compares with the training module on the same raw inputs, at several batch sizes.
Nothing is written where the caller asked until that comparison passes.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from e2evision.datasets.task import get_task
from e2evision.export.contract import (
    FILE_NAME,
    build_contract,
    contract_beside,
    merge_contract,
    preprocess_inputs,
    read_contract,
)
from e2evision.export.errors import ExportError
from e2evision.export.run import LoadedFold, load_fold, read_test_batch, reference_raw, sha256_file
from e2evision.utils import atomic_path, atomic_write_json

FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt", "aoti": ".pt2", "onednn": ".onednn"}
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5


class ExportGraph(nn.Module):
    """Normalised image → geometry → model → (probability, logit), or (value,) for regression.

    The link functions are those of the training module's ``scores``: sigmoid (binary), softmax
    (multiclass), and for regression the target un-scaling ``raw · target_scale + target_shift``.
    A run trained with ``augment.test_time`` exports its averaging over the flips too (the views
    are built from the normalised image, as the training module builds them), so that the
    deployed model scores what was evaluated.
    """

    def __init__(
        self,
        geometry: nn.Module,
        model: nn.Module,
        task: str,
        target_shift: float = 0.0,
        target_scale: float = 1.0,
        test_time: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.geometry = geometry
        self.model = model
        self.task = task
        self.test_time = test_time
        self.register_buffer("target_shift", torch.tensor(float(target_shift)))
        self.register_buffer("target_scale", torch.tensor(float(target_scale)))

    def _outputs(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.task == "binary":
            return torch.sigmoid(z), z
        if self.task == "multiclass":
            return torch.softmax(z, dim=-1), z
        return (z * self.target_scale + self.target_shift,)

    def _run(self, image: torch.Tensor, *scalars: torch.Tensor) -> torch.Tensor:
        if self.test_time is None:
            return self.model(self.geometry(image), *scalars)
        n, k = image.shape[0], self.test_time.n_views
        out = self.model(self.geometry(self.test_time.views(image)), *(s.repeat(k, 1) for s in scalars))
        return self.test_time.average(out, n)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._outputs(self._run(image))


class ExportGraphWithScalars(ExportGraph):
    """The same with the model's scalar inputs (pt, η, ...) fused before its head."""

    def forward(self, image: torch.Tensor, scalars: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return self._outputs(self._run(image, scalars))


def export_graph(fold: LoadedFold) -> ExportGraph:
    cls = ExportGraphWithScalars if fold.num_scalars else ExportGraph
    shift = float(getattr(fold.module, "target_shift", 0.0))
    scale = float(getattr(fold.module, "target_scale", 1.0))
    test_time = getattr(fold.module, "test_time", None)
    return cls(fold.geometry, fold.model, fold.task, shift, scale, test_time).eval()


def reference_outputs(fold: LoadedFold, raw: np.ndarray, scalars: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """PyTorch's outputs on raw inputs, keyed by preprocess.json output name (the ground truth)."""
    z = torch.from_numpy(reference_raw(fold, raw, scalars))
    if fold.task == "binary":
        return {"prob": torch.sigmoid(z).numpy(), "logit": z.numpy()}
    if fold.task == "multiclass":
        return {"prob": torch.softmax(z, dim=-1).numpy(), "logit": z.numpy()}
    shift = float(getattr(fold.module, "target_shift", 0.0))
    scale = float(getattr(fold.module, "target_scale", 1.0))
    return {"value": (z * scale + shift).numpy()}


def compare_outputs(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float, rtol: float, what: str
) -> dict[str, float]:
    """Max |got − want| per output; ExportError unless |Δ| ≤ atol + rtol·|want| everywhere."""
    diffs: dict[str, float] = {}
    for name, ref in want.items():
        if name not in got:
            raise ExportError(f"{what}: output {name!r} is missing (got {sorted(got)})")
        arr = np.asarray(got[name], dtype=np.float32).reshape(ref.shape) if np.size(got[name]) == ref.size else None
        if arr is None:
            raise ExportError(f"{what}: output {name!r} has shape {np.shape(got[name])}, expected {ref.shape}")
        delta = np.abs(arr.astype(np.float64) - ref.astype(np.float64))
        diffs[name] = float(delta.max()) if delta.size else 0.0
        bad = ~(delta <= atol + rtol * np.abs(ref.astype(np.float64)))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ExportError(
                f"{what}: output {name!r} differs from PyTorch by up to {diffs[name]:.3g} "
                f"(tolerance {atol:g} + {rtol:g}·|ref|; first at flat index {i}: {arr.flat[i]!r} vs {ref.flat[i]!r})"
            )
    return diffs


@dataclass
class ExportResult:
    """What an export wrote and how well it matched PyTorch."""

    format: str
    path: Path
    preprocess_path: Path
    fold: int
    fold_reason: str
    rows: int
    batch_sizes: list[int]
    max_abs_diff: dict[str, float]
    stored_max_abs_diff: float | None
    atol: float
    rtol: float
    seconds: float
    notes: list[str] = field(default_factory=list)


def _quiet() -> contextlib.ExitStack:
    """Silence the exporters' progress prints and deprecation chatter (errors still propagate)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def _write_torchscript(graph: ExportGraph, example: tuple[torch.Tensor, ...], path: Path) -> None:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(graph, example, strict=True)
        # optimize_numerics=False: no folding that changes float results.
        frozen = torch.jit.freeze(traced, optimize_numerics=False)
        frozen.save(str(path))


def _write_onnx(
    graph: ExportGraph, example: tuple[torch.Tensor, ...], path: Path, input_names: list[str], output_names: list[str]
) -> None:
    batch = torch.export.Dim("batch")
    dynamic = {name: {0: batch} for name in input_names}
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            graph,
            example,
            None,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic,
            dynamo=True,
        )
        program.save(str(path), external_data=False)
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            raise ExportError(
                f"ONNX export fixed the batch axis of {value.name!r} at {dims[0].dim_value if dims else '?'}; "
                "it must stay dynamic"
            )


# Inductor bakes the OpenMP thread count of its C++ kernels into the package (by default the
# compiling process's torch.get_num_threads()); the engine runs one intra-op thread by default, as
# CMSSW does, so the kernels are compiled serial. Freezing is left off: with it the convolutions
# become oneDNN-packed calls that were slower at batch 1 here (docs/deployment.md, "Latency").
AOTI_INDUCTOR_CONFIG: dict[str, Any] = {"cpp.threads": 1}


def _write_aoti(graph: ExportGraph, example: tuple[torch.Tensor, ...], path: Path, input_names: list[str]) -> None:
    import torch._inductor.config as inductor_config

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    dynamic = {name: {0: batch} for name in input_names}
    with _quiet(), torch.no_grad(), inductor_config.patch(AOTI_INDUCTOR_CONFIG):
        program = torch.export.export(graph, example, dynamic_shapes=dynamic)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))


def runner_for(
    fmt: str, path: Path, input_names: list[str], output_names: list[str]
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Run the exported file with its own runtime (what a consumer would use)."""
    if fmt == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        got_in = [i.name for i in session.get_inputs()]
        got_out = [o.name for o in session.get_outputs()]
        if got_in != input_names or got_out != output_names:
            raise ExportError(
                f"{path}: ONNX inputs {got_in} / outputs {got_out} are not {input_names} / {output_names}"
            )
        return lambda feeds: dict(zip(output_names, session.run(output_names, feeds)))
    if fmt == "onednn":
        from e2evision.export.onednn import onednn_runner

        return onednn_runner(path, output_names)
    if fmt == "torchscript":
        with _quiet():
            module = torch.jit.load(str(path), map_location="cpu")
    else:
        with _quiet():
            module = torch._inductor.aoti_load_package(str(path))

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feeds[n]) for n in input_names))
        out = [out] if isinstance(out, torch.Tensor) else list(out)
        return {n: o.numpy() for n, o in zip(output_names, out)}

    return run


def check_export_target(fmt: str, out: str | os.PathLike[str], n_check: int) -> Path:
    """The output path, after the checks every export makes before it loads anything."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_path = Path(out)
    if fmt == "aoti" and out_path.suffix != ".pt2":
        raise ExportError(f"{out_path}: an AOTInductor package must be named *.pt2")
    if fmt == "onednn" and out_path.suffix != ".onednn":
        raise ExportError(f"{out_path}: a oneDNN program must be named *.onednn")
    if out_path.name == FILE_NAME:
        raise ExportError(f"{out_path}: that name is reserved for the contract file")
    if n_check < 1:
        raise ExportError("n_check must be at least 1")
    return out_path


def check_against_training(
    loaded: LoadedFold, reference: dict[str, np.ndarray], stored: np.ndarray | None, atol: float, rtol: float
) -> float | None:
    """Max |Δ| between the rebuilt fold's scores and those the run stored during training, or
    None when the run stored none for this fold. A rebuilt fold that does not reproduce its own
    predictions (the model code or its config changed) must not be exported."""
    score_key = get_task(loaded.task).score_key
    if stored is None or stored.size != reference[score_key].size:
        return None
    want = reference[score_key].astype(np.float64)
    delta = np.abs(want - stored.reshape(want.shape))
    stored_diff = float(delta.max())
    if not (delta <= atol + rtol * np.abs(want)).all():
        raise ExportError(
            f"{loaded.weights_path}: the rebuilt fold does not reproduce the run's own test predictions "
            f"(predictions.npz, max |Δ| {stored_diff:.3g}); the model code or its config changed since training"
        )
    return stored_diff


def export_model(
    run_dir: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    *,
    fold: int | None = None,
    data: list[str] | None = None,
    n_check: int = 64,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> ExportResult:
    """Export fold ``fold`` (default: the best by the run's monitored metric) of ``run_dir`` to ``out``.

    Writes ``out`` and ``preprocess.json`` beside it only after the exported file, run by its own
    runtime on ``n_check`` test-split samples (batch sizes n, 1 and 3), matches PyTorch within
    ``atol + rtol·|ref|``; on any failure nothing new is left at ``out``.
    """
    t0 = time.perf_counter()
    out_path = check_export_target(fmt, out, n_check)

    loaded = load_fold(run_dir, fold)
    raw, scalars, stored = read_test_batch(loaded, n_check, data)
    n = raw.shape[0]
    if n == 0:
        raise ExportError(f"{run_dir}: no test samples to check the export on")
    reference = reference_outputs(loaded, raw, scalars)
    notes: list[str] = []
    stored_diff = check_against_training(loaded, reference, stored, atol, rtol)
    if stored_diff is None:
        notes.append("predictions.npz has no test scores for this fold: not checked against training")

    contract = build_contract(loaded)
    input_names = [spec["name"] for spec in contract["inputs"]]
    output_names = [spec["name"] for spec in contract["outputs"]]
    raw_inputs = {"image": raw, **({"scalars": scalars} if scalars is not None else {})}

    def batch_of(rows: np.ndarray) -> dict[str, np.ndarray]:
        return preprocess_inputs(contract, {k: v[rows] for k, v in raw_inputs.items()})

    # A batch-2 example: with batch 1 and a dynamic Dim, some exporters silently fix the batch at 1.
    example_rows = np.arange(2) % n
    example = tuple(torch.from_numpy(batch_of(example_rows)[name]) for name in input_names)
    graph = export_graph(loaded)

    inputs_desc = "test-split samples of the run's data" if stored is not None else "first samples of the run's data"
    sizes, worst = stage_verify_publish(
        fmt,
        graph,
        example,
        input_names,
        output_names,
        batch_of,
        reference,
        n,
        out_path,
        contract,
        loaded.config.model.name,
        inputs_desc,
        atol,
        rtol,
    )
    return ExportResult(
        format=fmt,
        path=out_path,
        preprocess_path=out_path.parent / FILE_NAME,
        fold=loaded.fold,
        fold_reason=loaded.fold_reason,
        rows=n,
        batch_sizes=sizes,
        max_abs_diff=worst,
        stored_max_abs_diff=stored_diff,
        atol=atol,
        rtol=rtol,
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


def _write_export(
    fmt: str,
    graph: nn.Module,
    example: tuple[torch.Tensor, ...],
    staged: Path,
    input_names: list[str],
    output_names: list[str],
    model_name: str,
) -> None:
    """Write ``graph`` in ``fmt`` to ``staged``; any exporter failure becomes an ExportError naming the model."""
    try:
        if fmt == "torchscript":
            _write_torchscript(graph, example, staged)
        elif fmt == "onnx":
            _write_onnx(graph, example, staged, input_names, output_names)
        elif fmt == "onednn":
            from e2evision.export.onednn import write_onednn

            write_onednn(graph, example, staged, input_names, output_names)
        else:
            _write_aoti(graph, example, staged, input_names)
    except ExportError:
        raise
    except Exception as err:  # exporter failures come as many types; name the step and the model
        raise ExportError(f"{fmt} export of {model_name} failed: {type(err).__name__}: {err}") from err


def _verify_batches(
    fmt: str,
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    batch_of: Callable[[np.ndarray], dict[str, np.ndarray]],
    reference: dict[str, np.ndarray],
    sizes: list[int],
    model_name: str,
    atol: float,
    rtol: float,
) -> dict[str, float]:
    """Run the exported file at each batch size against the reference; the worst |Δ| per output."""
    worst: dict[str, float] = {}
    for b in sizes:
        rows = np.arange(b)
        try:
            got = run(batch_of(rows))
        except Exception as err:  # e.g. a shape the exporter fixed at the example's batch size
            raise ExportError(
                f"the {fmt} export of {model_name} fails at batch size {b}: "
                f"{type(err).__name__}: {str(err).strip().splitlines()[-1]}"
            ) from err
        want = {k: v[rows] for k, v in reference.items()}
        diffs = compare_outputs(got, want, atol, rtol, f"{fmt} export at batch size {b}")
        worst = {k: max(worst.get(k, 0.0), d) for k, d in diffs.items()}
    return worst


def stage_verify_publish(
    fmt: str,
    graph: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    batch_of: Callable[[np.ndarray], dict[str, np.ndarray]],
    reference: dict[str, np.ndarray],
    n: int,
    out_path: Path,
    contract: dict[str, Any],
    model_name: str,
    inputs_desc: str,
    atol: float,
    rtol: float,
    against: str = "the training module on the same raw inputs (normaliser included)",
) -> tuple[list[int], dict[str, float]]:
    """Write ``graph`` as ``fmt`` in a staging folder, run it with its own runtime at batch sizes
    n, 1 and 3 against ``reference``, and only then move it to ``out_path`` with preprocess.json.

    Shared by single-fold and fold-ensemble exports, so both are verified the same way.
    """
    if fmt == "onnx":
        from e2evision.utils.extras import require

        for module in ("onnx", "onnxscript", "onnxruntime"):
            try:
                require(module, "export")
            except ImportError as err:
                raise ExportError(str(err)) from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        staged = tmp_dir / out_path.name
        _write_export(fmt, graph, example, staged, input_names, output_names, model_name)
        run = runner_for(fmt, staged, input_names, output_names)
        sizes = list(dict.fromkeys([n, 1, min(3, n)]))
        worst = _verify_batches(fmt, run, batch_of, reference, sizes, model_name, atol, rtol)

        contract["exports"][fmt] = {
            "file": out_path.name,
            "bytes": staged.stat().st_size,
            "sha256": sha256_file(staged),
            "verified": {
                "rows": n,
                "inputs": inputs_desc,
                "batch_sizes": sizes,
                "max_abs_diff": worst,
                "atol": atol,
                "rtol": rtol,
                "against": against,
                **(
                    {"runner": "the program run with PyTorch's ops; the engine's oneDNN kernels: verify-cpp"}
                    if fmt == "onednn"
                    else {}
                ),
            },
        }
        pre_path = out_path.parent / FILE_NAME
        if pre_path.exists():
            contract = merge_contract(read_contract(pre_path), contract, pre_path)
        with atomic_path(out_path) as tmp:
            os.replace(staged, tmp)
        atomic_write_json(pre_path, contract)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return sizes, worst


def load_source_fold(model_path: str | os.PathLike[str]) -> tuple[dict[str, Any], LoadedFold]:
    """The preprocess.json of an exported model (file or directory) and the fold it was exported from
    (weights checked)."""
    pre = read_contract(contract_beside(model_path))
    src = pre["source"]
    if src.get("folds") is not None:
        raise ExportError(
            f"{contract_beside(model_path)}: a fold-ensemble export; verify-cpp compares "
            "with one fold's training module: export a single fold (--fold K) to check the engine"
        )
    fold = load_fold(src["run_dir"], int(src["fold"]))
    if fold.weights_sha256 != src.get("weights_sha256"):
        raise ExportError(
            f"{fold.weights_path}: weights changed since the export (sha256 differs from preprocess.json)"
        )
    return pre, fold
