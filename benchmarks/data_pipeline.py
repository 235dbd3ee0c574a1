"""Reading quark/gluon jet images three ways, side by side on the same generated Parquet file.

    .venv/bin/python benchmarks/data_pipeline.py --n 1000

1. **seed reader** — what the seed projects do: ``pandas.read_parquet`` of the whole file, then
   per row a nested ``tolist()`` and ``np.array`` to get a float32 ``(3, 125, 125)`` image;
2. **direct reader** — :class:`e2evision.datasets.JetParquet`: row groups decoded by pyarrow and
   flattened through the list offsets, in memory-bounded batches;
3. **training store** — :class:`e2evision.store.TrainingStore` after ``e2evision convert``:
   sparse chunks memory-mapped from disk.

All three produce the same float32 images (their pixel sums are checked to agree).

Each method runs in its own process pinned to one core (``sched_setaffinity``; one thread for
NumPy and Arrow), so images/s are single-core figures and the peak resident memory (``ru_maxrss``)
is that method's alone. Direct reader and store are also timed on shuffled batches of 64, the
access pattern of training; the full pass reads consecutive batches of the same size. The file comes from the Pythia 8 + FastJet simulator when the
``sim`` extra is installed (``--source sim``), or from a synthetic sparse-jet generator
(``--source synthetic``) otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- data
def synthetic_file(path: Path, n: int, seed: int) -> Path:
    """Sparse jet-like images in the public quark/gluon schema, one row per row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, 125, 125), np.float64)
    for i in range(n):
        k = int(rng.integers(60, 400))
        c = rng.integers(0, 3, k)
        r = np.clip(np.round(rng.normal(62, 8, (2, k))).astype(int), 0, 124)
        x[i, c, r[0], r[1]] += rng.exponential(2.0, k)
    arr = pa.array(x.reshape(-1))
    for dim, count in ((125, n * 3 * 125), (125, n * 3), (3, n)):
        arr = pa.ListArray.from_arrays(pa.array(np.arange(0, count * dim + 1, dim, dtype=np.int32)), arr)
    table = pa.table(
        {
            "X_jets": arr,
            "pt": rng.uniform(70, 100, n),
            "m0": rng.uniform(5, 40, n),
            "y": (rng.random(n) < 0.5).astype(np.float64),
        }
    )
    pq.write_table(table, path, row_group_size=1, compression="snappy")
    return path


def simulated_file(out_dir: Path, n: int, seed: int) -> Path:
    from e2evision.simulate.jets import write_jets

    return Path(write_jets("quark-gluon", out_dir, n, seed=seed, workers=2, progress=True).path)


# ----------------------------------------------------------------------------------- workers
def _pin_one_core() -> None:
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass


def run_method(method: str, path: Path, batch: int) -> dict:
    """Time one method in this process; returns images/s for a full pass (and shuffled batches)."""
    _pin_one_core()
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    out: dict = {"method": method}
    if method == "seed":
        import pandas as pd

        t0 = time.perf_counter()
        df = pd.read_parquet(path)
        images = np.array(
            [np.array([[row.tolist() for row in ch] for ch in jet], dtype=np.float32) for jet in df["X_jets"].tolist()]
        )
        labels = np.array(df["y"].tolist(), dtype=np.float32)
        dt = time.perf_counter() - t0
        out.update(
            n=int(images.shape[0]),
            seq_img_s=images.shape[0] / dt,
            checksum=float(images.sum()),
            label_sum=float(labels.sum()),
        )
    else:
        if method == "direct":
            from e2evision.datasets import JetParquet

            ds = JetParquet(path)
        else:
            from e2evision.store import TrainingStore

            ds = TrainingStore(path)
        ds.read([0])  # open files, warm up kernels
        t0 = time.perf_counter()
        total, count = 0.0, 0
        for x, _ in ds.iter_batches(batch):
            total += float(x.sum())
            count += x.shape[0]
        dt = time.perf_counter() - t0
        out.update(n=count, seq_img_s=count / dt, checksum=total, label_sum=float(ds.labels().sum()))
        order = np.random.default_rng(0).permutation(ds.n_samples)
        t0 = time.perf_counter()
        for start in range(0, order.size, batch):
            ds.read(order[start : start + batch])
        out["shuffled_img_s"] = order.size / (time.perf_counter() - t0)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _spawn(method: str, path: Path, batch: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, __file__, "--worker", method, "--file", str(path), "--batch", str(batch)],
        capture_output=True,
        text=True,
        env=env,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="jets in the generated file (the size knob)")
    ap.add_argument("--source", choices=["auto", "sim", "synthetic"], default="auto")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64, help="batch size of the shuffled-access timing")
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_method(args.worker, args.file, args.batch)))
        return

    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    source = args.source
    if source == "auto":
        try:
            import fastjet  # noqa: F401
            import pythia8mc  # noqa: F401

            from e2evision.simulate import jets  # noqa: F401

            source = "sim"
        except ImportError:
            source = "synthetic"
    t0 = time.perf_counter()
    if source == "sim":
        path = simulated_file(work / "qg", args.n, args.seed)
    else:
        path = synthetic_file(work / "qg_synthetic.snappy.parquet", args.n, args.seed)
    gen_s = time.perf_counter() - t0

    from e2evision.datasets import JetParquet
    from e2evision.store import TrainingStore, write_store

    t0 = time.perf_counter()
    store = write_store(JetParquet(path), work / "qg.store", overwrite=True, progress=False)
    convert_s = time.perf_counter() - t0
    manifest = TrainingStore(store).manifest

    results = {m: _spawn(m, store if m == "store" else path, args.batch) for m in ("seed", "direct", "store")}
    sums = {m: r["checksum"] for m, r in results.items()}
    if not np.allclose(list(sums.values()), sums["seed"], rtol=1e-6):
        raise SystemExit(f"the three readers disagree on the pixel sum: {sums}")

    n = manifest["n_samples"]
    dense = manifest["bytes"]["dense_float32"]
    images = manifest["bytes"]["images"]
    seed_rate = results["seed"]["seq_img_s"]
    print(
        f"\nquark/gluon jets: {n} images 3×125×125 ({source}, generated in {gen_s:.1f} s), "
        f"one core per method, numpy {np.__version__}"
    )
    print(f"{'method':<16}{'images/s':>12}{'× seed':>9}{'shuffled/s':>12}{'peak RSS MB':>13}")
    for m, label in (("seed", "seed reader"), ("direct", "direct Parquet"), ("store", "training store")):
        r = results[m]
        shuf = f"{r['shuffled_img_s']:>12.0f}" if "shuffled_img_s" in r else f"{'-':>12}"
        print(f"{label:<16}{r['seq_img_s']:>12.0f}{r['seq_img_s'] / seed_rate:>9.1f}{shuf}{r['peak_rss_mb']:>13.0f}")
    print(
        f"\nsizes: dense float32 {dense / 2**20:.1f} MiB, Parquet file {path.stat().st_size / 2**20:.1f} MiB, "
        f"store images {images / 2**20:.2f} MiB ({manifest['layout']}) -> store is {dense / images:.1f}× "
        f"smaller than dense float32; conversion took {convert_s:.1f} s "
        f"({n / convert_s:.0f} images/s); mean non-zero pixels per image {manifest['nnz'] / n:.0f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "n": n,
                    "source": source,
                    "results": results,
                    "dense_bytes": dense,
                    "store_bytes": images,
                    "parquet_bytes": path.stat().st_size,
                    "convert_s": convert_s,
                },
                indent=2,
            )
        )
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
