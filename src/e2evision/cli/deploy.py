"""Commands after training: ``export``, ``predict``, ``sample``, ``verify-cpp``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from e2evision.cli.app import AllowPickle, ReaderOptions, _fail, _reader_options, app


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory (from e2evision train).")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx, torchscript, aoti (AOTInductor .pt2) or onednn (a CNN as a oneDNN program for the C++ engine).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Model file to write; preprocess.json goes beside it.")],
    fold: Annotated[
        Optional[int],
        typer.Option(
            "--fold",
            help="Fold to export (default: the best by the run's monitored metric: validation AUC, or MAE for regression).",
        ),
    ] = None,
    ensemble: Annotated[
        bool,
        typer.Option("--ensemble", help="Export the mean of all folds as one model (what the test metrics evaluated)."),
    ] = False,
    data: Annotated[
        Optional[list[Path]], typer.Option("--data", help="The run's data at a new location (for the check).")
    ] = None,
    n_check: Annotated[int, typer.Option("--n-check", help="Test-split samples the export is checked on.")] = 64,
    atol: Annotated[float, typer.Option(help="Absolute tolerance of the check against PyTorch.")] = 1e-5,
    rtol: Annotated[float, typer.Option(help="Relative tolerance of the check against PyTorch.")] = 1e-5,
) -> None:
    """Export one fold (without its normaliser, plus preprocess.json) or the fold ensemble; verified against PyTorch first."""
    from e2evision.export import export_model
    from e2evision.export.ensemble import export_ensemble

    if ensemble and fold is not None:
        _fail("--ensemble exports every fold; drop --fold")
    paths = [str(p) for p in data] if data else None
    if ensemble:
        r = export_ensemble(run_dir, format, out, data=paths, n_check=n_check, atol=atol, rtol=rtol)
    else:
        r = export_model(run_dir, format, out, fold=fold, data=paths, n_check=n_check, atol=atol, rtol=rtol)
    typer.echo(f"chose {r.fold_reason}")
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in r.max_abs_diff.items())
    typer.echo(
        f"verified on {r.rows} samples at batch sizes {', '.join(map(str, r.batch_sizes))}: max |Δ| vs PyTorch "
        f"{diffs} (tolerance {r.atol:g} + {r.rtol:g}·|ref|)"
    )
    for note in r.notes:
        typer.echo(f"note: {note}")
    if not ensemble:
        typer.echo("note: the run's test metrics score the mean of all its folds; --ensemble exports that model")
    typer.echo(f"wrote {r.path} and {r.preprocess_path} in {r.seconds:.0f} s")


@app.command()
def predict(
    model: Annotated[
        Path,
        typer.Argument(
            help="A finished run directory, or an exported model (.onnx, .pt, .pt2, .onednn) with preprocess.json beside it."
        ),
    ],
    data: Annotated[list[Path], typer.Option("--data", help="Files, patterns or directories to score (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Table to write: .parquet (default), .csv or .root.")],
    fold: Annotated[
        Optional[int],
        typer.Option(
            "--fold",
            help="Score with this fold only (default: the mean of all folds, as the run's test split was evaluated).",
        ),
    ] = None,
    format: Annotated[
        Optional[str],
        typer.Option("--format", help="parquet, csv or root (a TTree 'predictions'); default from --out's suffix."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Samples read and scored at once (bounds memory).")
    ] = 512,
    data_format: Annotated[
        Optional[str], typer.Option("--data-format", help="Reader format (default: the run's, or detected).")
    ] = None,
    allow_pickle: AllowPickle = False,
    options: ReaderOptions = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score new data with a run's fold ensemble, one fold, or an exported model, through the run's own preprocessing."""
    from e2evision.inference import predict as run_predict

    try:
        s = run_predict(
            model,
            data,
            out,
            fold=fold,
            fmt=format,
            batch_size=batch_size,
            data_format=data_format,
            progress=progress,
            **_reader_options(allow_pickle, options),
        )
    except (FileNotFoundError, ImportError, ValueError) as err:  # PredictError is a ValueError
        _fail(str(err))
    typer.echo(f"scored {s.rows} samples with {s.model} ({s.task}); columns {', '.join(s.columns)}")
    typer.echo(f"wrote {s.path}")


@app.command()
def sample(
    paths: Annotated[list[Path], typer.Argument(help="Files, patterns or a directory of one dataset.")],
    n: Annotated[int, typer.Option("--n", help="Number of samples.")],
    out: Annotated[Path, typer.Option("--out", help="Raw images (N, C, H, W) as little-endian float32 .npy.")],
    scalars_out: Annotated[
        Optional[Path], typer.Option("--scalars-out", help="Also write the scalar inputs (N, S).")
    ] = None,
    labels_out: Annotated[Optional[Path], typer.Option("--labels-out", help="Also write the labels (N,).")] = None,
    seed: Annotated[
        Optional[int], typer.Option("--seed", help="A random subset (default: the first N samples).")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="Dataset format, or 'auto'.")] = "auto",
    allow_pickle: AllowPickle = False,
    options: ReaderOptions = None,
) -> None:
    """Write a batch of raw (un-normalised) inputs as .npy files for the C++ tool."""
    from e2evision.export import sample_dataset, write_sample

    if n < 1:
        _fail("--n must be at least 1")
    try:
        s = sample_dataset(paths, n, format=format, seed=seed, **_reader_options(allow_pickle, options))
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    for p in write_sample(s, out, scalars_out, labels_out):
        typer.echo(f"wrote {p}")
    typer.echo(
        f"{s.images.shape[0]} samples, images {tuple(s.images.shape[1:])}"
        + (f", scalars {', '.join(s.scalar_names)}" if s.scalar_names else "")
    )


@app.command("verify-cpp")
def verify_cpp_cmd(
    model: Annotated[
        Path,
        typer.Argument(
            help="An exported model (.pt, .pt2 or .onednn) with preprocess.json beside it, or an export directory "
            "(the engine keeps the fastest export it lists)."
        ),
    ],
    raw: Annotated[Path, typer.Option("--raw", help="Raw images .npy (from e2evision sample).")],
    scalars: Annotated[
        Optional[Path], typer.Option("--scalars", help="Scalar inputs .npy, when the model takes them.")
    ] = None,
    tool: Annotated[
        Optional[Path], typer.Option("--tool", help="e2evision-infer (default: cpp/build, built if missing).")
    ] = None,
    atol: Annotated[float, typer.Option(help="Absolute tolerance.")] = 1e-5,
    rtol: Annotated[float, typer.Option(help="Relative tolerance.")] = 0.0,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", help="Rows per engine call (default: all).")
    ] = None,
) -> None:
    """Run the C++ engine on raw inputs and compare with PyTorch's training module on the same inputs."""
    import numpy as np

    from e2evision.export import ExportError, ensure_built, verify_cpp

    try:
        x = np.load(raw, allow_pickle=False)
        s = np.load(scalars, allow_pickle=False) if scalars is not None else None
    except (OSError, ValueError) as err:
        _fail(f"cannot read the inputs: {err}")
    try:
        result = verify_cpp(model, x, s, tool=tool or ensure_built(), atol=atol, rtol=rtol, batch_size=batch_size)
    except ExportError as err:  # a failed check, not a usage error: exit 1, as a failing test
        _fail(str(err), code=1)
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in result.max_abs_diff.items())
    typer.echo(
        f"C++ engine matches PyTorch on {result.rows} samples: max |Δ| {diffs} (tolerance {atol:g} + {rtol:g}·|ref|)"
    )
