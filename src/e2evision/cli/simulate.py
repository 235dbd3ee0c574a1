"""``e2evision simulate ...``: write datasets in the community's public formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from e2evision.cli.app import _fail, simulate_app


@simulate_app.command("egamma")
def simulate_egamma(
    n: Annotated[int, typer.Option("--n", help="Total crops; half photons, half electrons.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the two HDF5 files.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Also write validation plots here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Electron/photon calorimeter crops (CMS HDF5 schema) from the parametric shower model."""
    from e2evision.simulate.calorimeter import egamma_validation_plots, write_egamma

    if n < 2:
        _fail("--n must be at least 2 (one photon, one electron)")
    files = write_egamma(out, n, seed=seed, progress=progress)
    for f in files:
        typer.echo(f"wrote {f}")
    if plots is not None:
        from e2evision.datasets import EgammaHDF5

        with EgammaHDF5(files) as ds:
            x, y = ds.read(range(min(ds.n_samples, 20000)))
        for p in egamma_validation_plots(x.transpose(0, 2, 3, 1), y, plots):
            typer.echo(f"plot {p}")
        from e2evision.simulate.egamma_published_plots import published_plots_from_files

        for p in published_plots_from_files(files[0], files[1], plots):  # photons, electrons
            typer.echo(f"plot {p}")


def _simulate_jets(
    dataset: str,
    n: int,
    out: Path,
    seed: int,
    shard: int,
    num_shards: int,
    workers: int,
    plots: Optional[Path],
    mpi: bool,
    progress: bool,
    response: bool = True,
    pileup: float = 20.0,
) -> None:
    """Shared body of the three jet commands: validate, write one Parquet file, plot."""
    from e2evision.simulate.jets import jet_channels, jet_class_names, jet_config, write_jets
    from e2evision.simulate.response import ResponseConfig

    if n < 1:
        _fail("--n must be at least 1")
    if seed < 0:
        _fail("--seed must be >= 0")
    if num_shards < 1:
        _fail("--num-shards must be >= 1")
    if not 0 <= shard < num_shards:
        _fail(f"--shard must be in [0, --num-shards={num_shards}), got {shard}")
    if workers < 1:
        _fail("--workers must be >= 1")
    if not 0 <= pileup < float("inf"):
        _fail("--pileup must be >= 0 and finite")
    config = jet_config(dataset, mpi=mpi, response=ResponseConfig(pileup_mean=pileup) if response else None)
    result = write_jets(
        dataset,
        out,
        n,
        seed=seed,
        config=config,
        shard=shard,
        num_shards=num_shards,
        workers=workers,
        progress=progress,
    )
    typer.echo(
        f"wrote {result.path} ({result.n_rows} jets, rows {result.row_start}-{result.row_stop} of {n}, "
        f"{result.n_events} events, {result.images_per_second:.1f} jets/s)"
    )
    if plots is not None:
        if result.n_rows == 0:
            typer.echo("no plots: this shard holds no rows")
            return
        from e2evision.simulate.jets_plots import jet_validation_plots

        for p in jet_validation_plots(
            dataset,
            result.truth,
            result.mean_images,
            jet_channels(dataset),
            plots,
            class_names=jet_class_names(dataset),
        ):
            typer.echo(f"plot {p}")
        from e2evision.simulate.response_plots import response_validation_plots

        for p in response_validation_plots(dataset, config, seed, plots, n=min(n, 100), workers=workers):
            typer.echo(f"plot {p}")


_JetN = Annotated[
    int, typer.Option("--n", help="Jets in the whole data set (all shards); classes alternate row by row.")
]


_JetOut = Annotated[Path, typer.Option("--out", help="Directory for the Parquet file.")]


_JetSeed = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same rows, whatever --workers).")]


_JetShard = Annotated[int, typer.Option("--shard", help="Which shard this call writes (0-based).")]


_JetShards = Annotated[int, typer.Option("--num-shards", help="Number of disjoint shards of the data set.")]


_JetWorkers = Annotated[int, typer.Option("--workers", help="Processes generating in parallel on this machine.")]


_JetPlots = Annotated[Optional[Path], typer.Option("--plots", help="Also write validation plots here.")]


_JetMpi = Annotated[
    bool, typer.Option("--mpi/--no-mpi", help="Multiparton interactions (off: ~10x faster, unrealistic).")
]


_JetProgress = Annotated[bool, typer.Option(help="Show a progress bar.")]


_JetResponse = Annotated[
    bool,
    typer.Option(
        "--response/--no-response",
        help="Detector response: pile-up, shower spread, noise, zero suppression (off: generator-level images).",
    ),
]


_JetPileup = Annotated[float, typer.Option("--pileup", help="Mean number of pile-up interactions (with --response).")]


@simulate_app.command("quark-gluon")
def simulate_quark_gluon(
    n: _JetN,
    out: _JetOut,
    seed: _JetSeed = 0,
    shard: _JetShard = 0,
    num_shards: _JetShards = 1,
    workers: _JetWorkers = 1,
    plots: _JetPlots = None,
    mpi: _JetMpi = True,
    progress: _JetProgress = True,
    response: _JetResponse = True,
    pileup: _JetPileup = 20.0,
) -> None:
    """Quark (y=0) vs gluon (y=1) jet images, Z(->nu nu)+jet from Pythia 8 (CMS Parquet schema)."""
    _simulate_jets("quark-gluon", n, out, seed, shard, num_shards, workers, plots, mpi, progress, response, pileup)


@simulate_app.command("top")
def simulate_top(
    n: _JetN,
    out: _JetOut,
    seed: _JetSeed = 0,
    shard: _JetShard = 0,
    num_shards: _JetShards = 1,
    workers: _JetWorkers = 1,
    plots: _JetPlots = None,
    mpi: _JetMpi = True,
    progress: _JetProgress = True,
    response: _JetResponse = True,
    pileup: _JetPileup = 20.0,
) -> None:
    """Boosted top (y=1) vs QCD (y=0) jet images, 8 channels, from Pythia 8 (CMS Parquet schema)."""
    _simulate_jets("top", n, out, seed, shard, num_shards, workers, plots, mpi, progress, response, pileup)


@simulate_app.command("top-mass")
def simulate_top_mass(
    n: _JetN,
    out: _JetOut,
    seed: _JetSeed = 0,
    shard: _JetShard = 0,
    num_shards: _JetShards = 1,
    workers: _JetWorkers = 1,
    plots: _JetPlots = None,
    mpi: _JetMpi = True,
    progress: _JetProgress = True,
    response: _JetResponse = True,
    pileup: _JetPileup = 20.0,
) -> None:
    """Top-quark jets with the top mass spread over a range; target m (CMS top-mass Parquet schema)."""
    _simulate_jets("top-mass", n, out, seed, shard, num_shards, workers, plots, mpi, progress, response, pileup)


@simulate_app.command("lensing")
def simulate_lensing(
    n: Annotated[int, typer.Option("--n", help="Total images, split evenly over axion, cdm, no_sub.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for {axion,cdm,no_sub}/*.npy and metadata.json.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    shard: Annotated[int, typer.Option("--shard", help="Which shard this call writes (0-based).")] = 0,
    num_shards: Annotated[int, typer.Option("--num-shards", help="Number of disjoint shards.")] = 1,
    workers: Annotated[int, typer.Option("--workers", help="Processes rendering in parallel.")] = 1,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Also write validation plots here.")] = None,
    axion_object_arrays: Annotated[
        bool,
        typer.Option(
            "--axion-object-arrays", help="Write axion files as the public pickled [image, axion_mass] object arrays."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Strong-lensing images (DeepLense Model I layout) rendered with lenstronomy."""
    from e2evision.simulate.lensing import (
        LensingConfig,
        lensing_validation_plots,
        load_lensing_images,
        write_lensing,
    )

    if n < 3:
        _fail("--n must be at least 3 (one image per class: axion, cdm, no_sub)")
    if seed < 0:
        _fail("--seed must be >= 0")
    if num_shards < 1:
        _fail("--num-shards must be >= 1")
    if not 0 <= shard < num_shards:
        _fail(f"--shard must be in [0, --num-shards={num_shards}), got {shard}")
    if workers < 1:
        _fail("--workers must be >= 1")
    config = LensingConfig()
    meta = write_lensing(
        out,
        n,
        seed=seed,
        config=config,
        shard=shard,
        num_shards=num_shards,
        workers=workers,
        axion_object_arrays=axion_object_arrays,
        progress=progress,
    )
    info = json.loads(meta.read_text(encoding="utf-8"))
    for name, c in info["classes"].items():
        typer.echo(f"wrote {c['index_stop'] - c['index_start']} images to {out / name}")
    typer.echo(f"wrote {meta}")
    if plots is not None:
        images = load_lensing_images(out, max_per_class=300, allow_pickle=axion_object_arrays)
        for p in lensing_validation_plots(images, plots, seed=seed, config=config):
            typer.echo(f"plot {p}")
