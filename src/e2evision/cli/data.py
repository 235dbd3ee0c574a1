"""Commands about data and the zoo: ``inspect``, ``convert``, ``models``, ``configs``, ``features``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from e2evision.cli.app import AllowPickle, ReaderOptions, _fail, _reader_options, app


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Files, patterns or a directory of one dataset.")],
    format: Annotated[str, typer.Option("--format", help="Dataset format, or 'auto'.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar while scanning.")] = True,
    allow_pickle: AllowPickle = False,
    options: ReaderOptions = None,
) -> None:
    """Format, sample count, image shape, label counts and per-channel statistics."""
    from e2evision.datasets import open_dataset

    try:
        with open_dataset(paths, format, **_reader_options(allow_pickle, options)) as ds:
            stats = ds.channel_stats(progress=progress and not as_json)
            info = {
                "format": ds.format,
                "paths": [str(p) for p in ds.paths],
                "n_samples": ds.n_samples,
                "image_shape": list(ds.image_shape),
                "channels": ds.channel_names,
                "labels": ds.label_summary(),
                "channel_stats": stats.as_dict(ds.channel_names),
                "task": ds.task,
                "class_names": ds.class_names,
                "scalars": ds.scalar_names,
            }
            if ds.format == "store":
                info["source_format"] = ds.source_format
                info["layout"] = ds.manifest["layout"]
                info["bytes"] = ds.manifest["bytes"]
    except (FileNotFoundError, TypeError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(
        f"format       {info['format']}" + (f" (from {info['source_format']})" if "source_format" in info else "")
    )
    for p in info["paths"]:
        typer.echo(f"file         {p}")
    typer.echo(f"samples      {info['n_samples']}")
    typer.echo(f"image shape  {tuple(info['image_shape'])} (C, H, W)")
    typer.echo(f"task         {info['task']}" + (f" ({', '.join(info['class_names'])})" if info["class_names"] else ""))
    typer.echo(
        "labels       "
        + ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in info["labels"].items())
    )
    if info["scalars"]:
        typer.echo(f"scalars      {', '.join(info['scalars'])}")
    if "bytes" in info:
        b = info["bytes"]
        typer.echo(
            f"store        {info['layout']}, {b['images'] / 2**20:.1f} MiB "
            f"({b['dense_float32'] / max(b['images'], 1):.1f}× smaller than dense float32)"
        )
    typer.echo(f"{'channel':<14}{'mean':>12}{'std':>12}{'min':>12}{'max':>12}{'nonzero':>10}")
    for name, s in info["channel_stats"].items():
        typer.echo(
            f"{name:<14}{s['mean']:>12.4g}{s['std']:>12.4g}{s['min']:>12.4g}{s['max']:>12.4g}"
            f"{s['nonzero_fraction']:>10.3f}"
        )


@app.command()
def convert(
    paths: Annotated[list[Path], typer.Argument(help="Files, patterns or a directory of one dataset.")],
    out: Annotated[Path, typer.Option("--out", help="Store directory to write.")],
    format: Annotated[str, typer.Option("--format", help="Source format, or 'auto'.")] = "auto",
    layout: Annotated[str, typer.Option(help="auto (smaller of the two), sparse or dense.")] = "auto",
    chunk_size: Annotated[int, typer.Option(help="Samples per chunk file.")] = 4096,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing e2evision store (never any other file or folder).")
    ] = False,
    allow_pickle: AllowPickle = False,
    options: ReaderOptions = None,
    checksums: Annotated[bool, typer.Option(help="Record SHA-256 checksums of the source files.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Convert any supported dataset into the sparse, chunked training store."""
    from e2evision.datasets import open_dataset
    from e2evision.store import TrainingStore, write_store

    if layout not in {"auto", "sparse", "dense"}:
        _fail("--layout must be auto, sparse or dense")
    if chunk_size < 1:
        _fail("--chunk-size must be positive")
    try:
        with open_dataset(paths, format, **_reader_options(allow_pickle, options)) as ds:
            path = write_store(
                ds,
                out,
                layout=layout,
                chunk_size=chunk_size,
                overwrite=overwrite,
                progress=progress,
                source_checksums=checksums,
            )
        store = TrainingStore(path)
    except (FileNotFoundError, FileExistsError, TypeError) as err:
        _fail(str(err))
    b = store.manifest["bytes"]
    typer.echo(
        f"wrote {path}: {store.n_samples} samples, {store.manifest['layout']} layout, "
        f"{b['images'] / 2**20:.1f} MiB of images ({b['dense_float32'] / max(b['images'], 1):.1f}× "
        "smaller than dense float32)"
    )


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    in_chans: Annotated[int, typer.Option(help="Channels of the input used to count parameters.")] = 2,
    img_size: Annotated[int, typer.Option(help="Image side used to count parameters.")] = 32,
    pattern: Annotated[str, typer.Option(help="Only models matching this shell pattern.")] = "*",
    flops: Annotated[bool, typer.Option(help="Count forward FLOPs per image (on the meta device).")] = True,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="The docs table: params at every dataset geometry.")
    ] = False,
) -> None:
    """List the registered models with parameter counts and FLOPs at a given input."""
    from e2evision.models import model_table

    if markdown:
        from e2evision.models.catalog import catalog_markdown, catalog_rows

        typer.echo(catalog_markdown(catalog_rows(pattern)))
        return

    rows = model_table(in_chans=in_chans, img_size=img_size, flops=flops, pattern=pattern)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"input {in_chans}×{img_size}×{img_size}")
    typer.echo(f"{'name':<22}{'family':<9}{'params':>13}{'GFLOPs':>9}  description")
    for r in rows:
        gflops = f"{r['flops'] / 1e9:>9.3f}" if "flops" in r else f"{'-':>9}"
        typer.echo(f"{r['name']:<22}{r['family']:<9}{r['params']:>13,}{gflops}  {r['description']}")


@app.command()
def configs(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The configs shipped with the package; pass a name wherever a CONFIG path goes (e2evision train egamma_resnet15)."""
    from e2evision.config_files import configs_dir, describe, packaged_configs

    rows = [describe(p) for p in packaged_configs().values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        _fail(f"no configs found in {configs_dir()}", code=1)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  {r['format'] or '?':<12} {r['model'] or '?'}")
    typer.echo(f"({len(rows)} configs in {configs_dir()})")


@app.command()
def features(
    data: Annotated[
        Path,
        typer.Argument(help="Lensing images: a DeepLense folder <class>/*.npy (or another single-channel dataset)."),
    ],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Table to write, .csv or .npz (default: DATA/features.csv).")
    ] = None,
    pixel_scale: Annotated[
        Optional[float],
        typer.Option("--pixel-scale", help="Arcsec per pixel (default: the simulator's metadata.json, else 0.05)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images read and measured at once.")] = 256,
    format: Annotated[str, typer.Option("--format", help="Dataset format, or 'auto'.")] = "auto",
    allow_pickle: AllowPickle = False,
    options: ReaderOptions = None,
) -> None:
    """Lens physics features per image (ring area, bright peaks, Einstein radius, asymmetry), stored beside the images."""
    import numpy as np

    from e2evision.features.lensing import LensFeatureParams, read_features, write_features

    if batch_size < 1:
        _fail("--batch-size must be >= 1")
    try:
        params = None if pixel_scale is None else LensFeatureParams(pixel_scale_arcsec=pixel_scale)
        path = write_features(
            data,
            out,
            params,
            format=format,
            reader_kwargs=_reader_options(allow_pickle, options),
            batch_size=batch_size,
        )
    except (FileNotFoundError, TypeError, ValueError) as err:
        _fail(str(err))
    table = read_features(path)
    meta = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    typer.echo(
        f"wrote {path} ({table['index'].size} images; pixel scale {meta['params']['pixel_scale_arcsec']}″ "
        f"from {meta['pixel_scale_source']})"
    )
    for name in meta["features"]:
        v = table[name]
        typer.echo(f"{name:<24} median {float(np.median(v)):>9.4g}   [{float(v.min()):.4g}, {float(v.max()):.4g}]")
