"""The training store: exact round trips, manifest contents, atomicity, integrity checks, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from schema_files import sparse_jets, write_jet_parquet
from typer.testing import CliRunner

from e2evision.cli import app
from e2evision.datasets import DatasetError, JetParquet, open_dataset
from e2evision.datasets.base import ChannelStats
from e2evision.store import TrainingStore, decode_sparse, encode_sparse, write_store


@pytest.fixture
def qg_file(tmp_path: Path):
    rng = np.random.default_rng(11)
    n = 30
    cols = {
        "X_jets": sparse_jets(n, 3, rng),
        "pt": rng.uniform(70, 100, n),
        "m0": rng.uniform(5, 40, n),
        "y": (np.arange(n) % 3 == 0).astype(np.float64),
    }
    return write_jet_parquet(tmp_path / "qg.snappy.parquet", cols), cols


def test_sparse_codec_round_trips_any_rows():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((9, 2, 5, 7)) < 0.1, rng.normal(size=(9, 2, 5, 7)), 0).astype(np.float32)
    x[4] = 0  # an empty image
    indptr, index, values = encode_sparse(x)
    assert index.dtype == np.uint16 and indptr[-1] == np.count_nonzero(x)
    for rows in ([0, 1, 2], [8, 4, 4, 0], [3, 4, 5, 6, 7, 8], [4]):
        np.testing.assert_array_equal(decode_sparse(indptr, index, values, np.array(rows), (2, 5, 7)), x[rows])


def test_store_round_trip_manifest_and_size(tmp_path, qg_file):
    path, cols = qg_file
    src = JetParquet(path)
    store_path = write_store(src, tmp_path / "qg.store", chunk_size=8)
    st = open_dataset(store_path)
    assert isinstance(st, TrainingStore) and st.source_format == "quark-gluon"
    order = np.array([29, 0, 7, 8, 8, 15, 16, 23, 24])  # crosses every chunk boundary, with a repeat
    x, y = st.read(order)
    np.testing.assert_array_equal(x, cols["X_jets"][order].astype(np.float32))
    np.testing.assert_array_equal(y, cols["y"][order].astype(np.float32))
    np.testing.assert_array_equal(
        st.read_scalars(order), np.stack([cols["pt"], cols["m0"]], 1)[order].astype(np.float32)
    )
    assert (st.channel_names, st.class_names, st.scalar_names, st.task) == (
        src.channel_names,
        ["quark", "gluon"],
        ["pt", "m0"],
        "binary",
    )

    m = st.manifest
    assert m["n_samples"] == 30 and m["layout"] == "sparse" and [c["n"] for c in m["chunks"]] == [8, 8, 8, 6]
    assert m["labels"] == {"0": 20, "1": 10}
    assert m["nnz"] == int(np.count_nonzero(cols["X_jets"]))
    assert m["source"]["files"][0]["sha256"].startswith("sha256:")
    # statistics recorded at conversion equal an independent NumPy computation
    flat = cols["X_jets"].astype(np.float32).transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    for i, name in enumerate(st.channel_names):
        s = m["channel_stats"]["per_channel"][name]
        assert s["mean"] == pytest.approx(flat[i].mean(), rel=1e-9)
        assert s["std"] == pytest.approx(flat[i].std(), rel=1e-9)
        assert s["max"] == pytest.approx(flat[i].max())
    assert isinstance(st.channel_stats(), ChannelStats)
    np.testing.assert_allclose(st.channel_stats().std, flat.std(axis=1), rtol=1e-9)
    # sparse jets: far smaller than dense float32
    assert m["bytes"]["dense_float32"] == 30 * 3 * 125 * 125 * 4
    assert m["bytes"]["dense_float32"] / m["bytes"]["images"] > 10
    st.verify()


def test_dense_layout_for_dense_images(tmp_path):
    from schema_files import write_egamma_file

    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 32, 32, 2)).astype(np.float32)
    p = write_egamma_file(tmp_path / "dense.h5", x, (np.arange(10) % 2).astype(np.float32))
    st = TrainingStore(write_store(open_dataset(p), tmp_path / "s", chunk_size=4))
    assert st.manifest["layout"] == "dense"
    np.testing.assert_array_equal(st.read([9, 1])[0], x[[9, 1]].transpose(0, 3, 1, 2))
    sparse = TrainingStore(write_store(open_dataset(p), tmp_path / "s2", layout="sparse"))
    np.testing.assert_array_equal(sparse.read([9, 1])[0], x[[9, 1]].transpose(0, 3, 1, 2))


class _Exploding(JetParquet):
    """A reader that fails part-way, as a killed or crashing conversion would."""

    def read(self, indices):
        if np.max(indices) >= 12:
            raise RuntimeError("disk on fire")
        return super().read(indices)

    def default_batch_size(self) -> int:
        return 4


def test_interrupted_conversion_leaves_nothing_that_reads_as_a_store(tmp_path, qg_file):
    path, _ = qg_file
    target = tmp_path / "out.store"
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_store(_Exploding(path), target, chunk_size=4)
    assert not target.exists() and not list(tmp_path.glob(".out.store.partial-*"))
    with pytest.raises(DatasetError, match="store directory not found"):
        TrainingStore(target)
    # an existing store survives a failed overwrite, and refuses a plain rewrite
    write_store(JetParquet(path), target, chunk_size=8)
    with pytest.raises(RuntimeError):
        write_store(_Exploding(path), target, chunk_size=4, overwrite=True)
    assert TrainingStore(target).n_samples == 30
    with pytest.raises(FileExistsError, match="already exists"):
        write_store(JetParquet(path), target)
    # a partial directory (what a SIGKILL leaves) has no manifest and is refused by name
    partial = tmp_path / ".out.store.partial-999"
    (partial / "chunks").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no manifest.json: not a store, or a conversion that did not finish"):
        TrainingStore(partial)
    write_store(JetParquet(path), target, overwrite=True)  # cleans up stale partial directories
    assert not partial.exists()


def test_truncated_and_corrupted_store_files(tmp_path, qg_file):
    path, _ = qg_file
    target = write_store(JetParquet(path), tmp_path / "s", chunk_size=8)
    values = target / "chunks" / "000001.values.npy"
    data = values.read_bytes()
    values.write_bytes(data[:-10])
    with pytest.raises(DatasetError, match=r"000001\.values\.npy: size .* the manifest says .* \(truncated\?\)"):
        TrainingStore(target)
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    values.write_bytes(bytes(flipped))
    st = TrainingStore(target)
    with pytest.raises(DatasetError, match=r"000001\.values\.npy: checksum differs"):
        st.verify()
    (target / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="manifest is not valid JSON"):
        TrainingStore(target)


def test_convert_and_inspect_cli_on_every_format(tmp_path, qg_file, egamma_pair):
    path, cols = qg_file
    runner = CliRunner()
    res = runner.invoke(
        app, ["convert", str(path), "--out", str(tmp_path / "cli.store"), "--chunk-size", "16", "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert "sparse layout" in res.output and "smaller than dense float32" in res.output
    res = runner.invoke(app, ["inspect", str(tmp_path / "cli.store"), "--json"])
    info = json.loads(res.output)
    assert info["format"] == "store" and info["source_format"] == "quark-gluon" and info["n_samples"] == 30
    res_src = json.loads(runner.invoke(app, ["inspect", str(path), "--json", "--no-progress"]).output)
    assert res_src["channel_stats"]["ecal"]["mean"] == pytest.approx(info["channel_stats"]["ecal"]["mean"], rel=1e-9)
    for key in ("format", "paths", "n_samples", "image_shape", "channels", "labels", "channel_stats"):
        assert key in res_src and key in info
    res = runner.invoke(app, ["convert", str(path), "--out", str(tmp_path / "cli.store")])
    assert res.exit_code == 2 and "already exists" in res.output
    p, e, _, _ = egamma_pair
    res = runner.invoke(app, ["convert", str(p), str(e), "--out", str(tmp_path / "eg.store"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert TrainingStore(tmp_path / "eg.store").label_counts() == {"0": 60, "1": 60}


def test_training_reads_a_store(tmp_path, egamma_pair):
    """A run on the store equals a run on the source files (same seed, same numbers)."""
    import json as _json

    from e2evision.config import load_config
    from e2evision.training import run_experiment

    p, e, _, _ = egamma_pair
    store = write_store(open_dataset([p, e]), tmp_path / "eg.store", chunk_size=32)
    root = Path(__file__).resolve().parents[1]
    fast = [
        "train.max_epochs=1",
        "train.folds=2",
        "train.progress=false",
        "train.batch_size=32",
        "model.kwargs.widths=[8, 16]",
    ]
    results = []
    for i, data in enumerate(([str(p), str(e)], [str(store)])):
        cfg = load_config(
            root / "configs/egamma_resnet15.yaml",
            [f"data.paths={_json.dumps(data)}", "data.in_memory_limit_gb=0", *fast],
        )
        results.append(run_experiment(cfg, tmp_path / f"run{i}"))
    assert results[0]["fold_auc"] == pytest.approx(results[1]["fold_auc"], abs=1e-6)
    assert results[0]["test_auc"] == pytest.approx(results[1]["test_auc"], abs=1e-6)


def test_streaming_loader_is_deterministic_by_seed_with_or_without_workers(tmp_path, qg_file):
    import torch

    from e2evision.training.data import ReaderDataset, make_loader

    path, cols = qg_file
    st = TrainingStore(write_store(JetParquet(path), tmp_path / "s", chunk_size=8))
    rows = np.arange(2, 30)
    ds = ReaderDataset(st, rows)

    def epoch(seed: int, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(make_loader(ds, 8, shuffle=True, seed=seed, num_workers=workers))

    a, b, c = epoch(5, 0), epoch(5, 2), epoch(6, 0)
    assert [x.shape[0] for x, _ in a] == [8, 8, 8, 4]
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    # every sample once per epoch, with its own label
    seen = torch.cat([y for _, y in a]).numpy()
    np.testing.assert_array_equal(np.sort(seen), np.sort(cols["y"][rows].astype(np.float32)))
    xs = torch.cat([x for x, _ in a]).numpy()
    assert sorted(float(v) for v in xs.sum(axis=(1, 2, 3))) == pytest.approx(
        sorted(float(v) for v in cols["X_jets"][rows].astype(np.float32).sum(axis=(1, 2, 3))), rel=1e-6
    )
    ordered = list(make_loader(ds, 16, shuffle=False, seed=0))
    np.testing.assert_array_equal(torch.cat([x for x, _ in ordered]).numpy(), cols["X_jets"][rows].astype(np.float32))


def test_mapped_chunks_stay_within_the_budget_and_are_verified_once(tmp_path, qg_file, monkeypatch):
    """A read over the whole store never keeps more chunk maps than the budget allows (resident
    memory stays bounded whatever the store's size), and closing and re-mapping a chunk neither
    changes the images nor checks its SHA-256 again."""
    from e2evision.datasets import store as fmt

    path, cols = qg_file
    store_path = write_store(JetParquet(path), tmp_path / "qg.store", chunk_size=4)  # 8 chunks
    calls: list[str] = []
    real = fmt.verify_file
    monkeypatch.setattr(fmt, "verify_file", lambda root, p, entry: calls.append(Path(p).name) or real(root, p, entry))
    st = TrainingStore(store_path)
    calls.clear()  # labels and scalars are verified at open
    sizes = [sum(f["bytes"] for f in ch["files"]) for ch in st.manifest["chunks"]]
    st.map_budget_bytes = 2 * max(sizes)  # room for two chunks
    order = np.random.default_rng(3).permutation(30)
    for _ in range(2):  # the second pass re-maps chunks that were closed
        for start in range(0, 30, 3):
            x, _ = st.read(order[start : start + 3])
            np.testing.assert_array_equal(x, cols["X_jets"][order[start : start + 3]].astype(np.float32))
            assert 1 <= len(st._chunks) <= 2
            assert sum(sizes[k] for k in st._chunks) <= st.map_budget_bytes
    assert sorted(calls) == sorted(f["file"] for ch in st.manifest["chunks"] for f in ch["files"])  # once each
