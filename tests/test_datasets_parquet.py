"""Jet-image Parquet readers on small files in the exact public schemas (and broken ones)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from schema_files import nested_list_array, sparse_jets, write_jet_parquet

from e2evision.datasets import DatasetError, JetParquet, QuarkGluonHDF5, detect_format, open_dataset


def _qg_columns(n: int, seed: int = 0, channels: int = 3, size: int = 125) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "X_jets": sparse_jets(n, channels, rng, size=size),
        "pt": rng.uniform(70, 100, n),
        "m0": rng.uniform(5, 40, n),
        "y": (rng.random(n) < 0.5).astype(np.float64),
    }


@pytest.mark.parametrize("item_name", ["item", "element"])
@pytest.mark.parametrize("dtype", ["double", "float"])
def test_quark_gluon_round_trip_is_bit_exact(tmp_path, item_name, dtype):
    cols = _qg_columns(12)
    path = write_jet_parquet(
        tmp_path / "QCDToGGQQ_IMGjet_RH1all_jet0_run0_n12.test.snappy.parquet", cols, item_name=item_name, dtype=dtype
    )
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_row_groups == 12 and pf.schema_arrow.names == ["X_jets", "pt", "m0", "y"]
    assert detect_format(path) == "quark-gluon"
    ds = open_dataset(path)
    assert (ds.format, ds.task, ds.image_shape, ds.n_samples) == ("quark-gluon", "binary", (3, 125, 125), 12)
    assert ds.channel_names == ["tracks", "ecal", "hcal"] and ds.class_names == ["quark", "gluon"]
    order = np.array([11, 0, 5, 5, 3])
    x, y = ds.read(order)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, cols["X_jets"][order].astype(np.float32))
    np.testing.assert_array_equal(y, cols["y"][order].astype(np.float32))
    np.testing.assert_array_equal(
        ds.read_scalars(order), np.stack([cols["pt"], cols["m0"]], 1)[order].astype(np.float32)
    )
    assert ds.scalar_names == ["pt", "m0"]


def test_many_files_by_pattern_and_directory_keep_their_order(tmp_path):
    a, b = _qg_columns(4, seed=1), _qg_columns(3, seed=2)
    write_jet_parquet(tmp_path / "part_0.snappy.parquet", a)
    write_jet_parquet(tmp_path / "part_1.snappy.parquet", b)
    both = np.concatenate([a["X_jets"], b["X_jets"]]).astype(np.float32)
    for spec in (str(tmp_path / "part_*.parquet"), tmp_path):
        ds = open_dataset(spec, "quark-gluon")
        assert [p.name for p in ds.paths] == ["part_0.snappy.parquet", "part_1.snappy.parquet"]
        x, _ = ds.read(np.arange(7)[::-1])
        np.testing.assert_array_equal(x, both[::-1])
    with pytest.raises(DatasetError, match="matches no Parquet files"):
        JetParquet(str(tmp_path / "nothing_*.parquet"))


def test_channel_selection_renaming_and_row_groups_of_any_size(tmp_path):
    cols = _qg_columns(9)
    path = write_jet_parquet(tmp_path / "qg.parquet", cols, row_group_size=4)  # 4 + 4 + 1 rows
    ds = JetParquet(path, channel_names=["trk", "em", "had"], channels=["had", "trk"], memory_budget_mb=0.5)
    assert ds.channel_names == ["had", "trk"] and ds.image_shape == (2, 125, 125)
    x, _ = ds.read([8, 1, 6, 2])
    np.testing.assert_array_equal(x, cols["X_jets"][[8, 1, 6, 2]][:, [2, 0]].astype(np.float32))
    with pytest.raises(DatasetError, match="no channel named 'muon'"):
        JetParquet(path, channels=["muon"])


def test_top_and_top_mass_schemas(tmp_path):
    rng = np.random.default_rng(3)
    top = {
        "X_jets": sparse_jets(4, 8, rng),
        "m0": rng.uniform(100, 200, 4),
        "pt": rng.uniform(400, 600, 4),
        "y": np.array([1.0, 0.0, 1.0, 0.0]),
    }
    p = write_jet_parquet(tmp_path / "BoostedTop_x1_fixed_0.snappy.parquet", top)
    assert detect_format(p) == "top"
    ds = open_dataset(p)
    assert ds.image_shape == (8, 125, 125) and ds.channel_names[3:5] == ["ecal", "hcal"]
    np.testing.assert_array_equal(ds.read([2])[0], top["X_jets"][[2]].astype(np.float32))

    reg = {
        "X_jet": sparse_jets(5, 8, rng),
        "am": rng.uniform(150, 200, 5),
        "iphi": rng.uniform(0, 360, 5),
        "pt": rng.uniform(400, 600, 5),
        "ieta": rng.uniform(-140, 140, 5),
    }
    p = write_jet_parquet(tmp_path / "top_gun_opendata_0.parquet", reg)
    assert detect_format(p) == "top-mass"
    ds = open_dataset(p)
    assert ds.task == "regression" and ds.label_column == "am" and ds.class_names == []
    np.testing.assert_array_equal(ds.labels(), reg["am"].astype(np.float32))
    np.testing.assert_array_equal(ds.read_scalars([4]), np.float32([[reg["pt"][4], reg["ieta"][4], reg["iphi"][4]]]))
    summary = ds.label_summary()
    assert summary["count"] == 5 and summary["min"] == pytest.approx(reg["am"].min())
    with pytest.raises(DatasetError, match="missing target column 'genM'"):
        JetParquet(p, schema="top-mass", label_column="genM")


def test_quark_gluon_hdf5_variant(tmp_path):
    import h5py

    cols = _qg_columns(6, size=125)
    path = tmp_path / "quark-gluon_data-set_n6.hdf5"
    with h5py.File(path, "w") as h5:
        h5["X_jets"] = cols["X_jets"].transpose(0, 2, 3, 1).astype(np.float32)  # channels-last
        for k in ("m0", "pt", "y"):
            h5[k] = cols[k]
    assert detect_format(path) == "quark-gluon-hdf5"
    ds = open_dataset(path)
    assert isinstance(ds, QuarkGluonHDF5) and ds.image_shape == (3, 125, 125)
    np.testing.assert_array_equal(ds.read([5, 0])[0], cols["X_jets"][[5, 0]].astype(np.float32))
    np.testing.assert_array_equal(ds.read_scalars([1])[0], np.float32([cols["pt"][1], cols["m0"][1]]))


# ----------------------------------------------------------------------------------- bad files
def test_truncated_file_names_file(tmp_path):
    path = write_jet_parquet(tmp_path / "qg.parquet", _qg_columns(3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"qg\.parquet: cannot open as Parquet \(truncated"):
        JetParquet(path)


def test_wrong_nesting_missing_column_and_channel_count(tmp_path):
    cols = _qg_columns(2)
    shallow = pa.ListArray.from_arrays(
        pa.array([0, 3 * 125, 6 * 125], pa.int32()), nested_list_array(cols["X_jets"]).flatten().flatten()
    )
    p = tmp_path / "shallow.parquet"
    pq.write_table(
        pa.table({"X_jets": shallow, "pt": cols["pt"], "m0": cols["m0"], "y": cols["y"]}), p, row_group_size=1
    )
    with pytest.raises(DatasetError, match=r"shallow\.parquet: column 'X_jets' has type .* expected a 3-level nested"):
        JetParquet(p)

    p = write_jet_parquet(tmp_path / "nolabel.parquet", {k: v for k, v in cols.items() if k != "y"})
    with pytest.raises(DatasetError, match=r"nolabel\.parquet: missing label column 'y'"):
        JetParquet(p)
    p = write_jet_parquet(tmp_path / "noimg.parquet", {"pt": cols["pt"], "y": cols["y"]})
    with pytest.raises(DatasetError, match="missing column 'X_jets'"):
        JetParquet(p)

    two = dict(cols, X_jets=cols["X_jets"][:, :2])
    p = write_jet_parquet(tmp_path / "two.parquet", two)
    with pytest.raises(DatasetError, match=r"two\.parquet: field 'X_jets' row 0 has 2 channels, expected 3"):
        JetParquet(p)


def test_ragged_rows_nan_inf_empty_and_bad_labels(tmp_path):
    cols = _qg_columns(3)
    arr = nested_list_array(cols["X_jets"])
    # make row 2 ragged: its last φ row loses an entry (offsets of the innermost level shortened)
    inner = arr.flatten().flatten()
    offsets = inner.offsets.to_numpy().copy()
    offsets[-1] -= 1
    inner_bad = pa.ListArray.from_arrays(pa.array(offsets), inner.flatten()[: int(offsets[-1])])
    mid = pa.ListArray.from_arrays(arr.flatten().offsets, inner_bad)
    ragged = pa.ListArray.from_arrays(arr.offsets, mid)
    p = tmp_path / "ragged.parquet"
    pq.write_table(
        pa.table({"X_jets": ragged, "pt": cols["pt"], "m0": cols["m0"], "y": cols["y"]}), p, row_group_size=1
    )
    ds = JetParquet(p)
    with pytest.raises(DatasetError, match=r"row 2 has 124 columns \(φ\), expected 125"):
        ds.read([2])

    bad = cols["X_jets"].copy()
    bad[1, 0, 3, 3] = np.nan
    ds = JetParquet(write_jet_parquet(tmp_path / "nan.parquet", dict(cols, X_jets=bad)))
    ds.read([0])  # a clean row reads fine
    with pytest.raises(DatasetError, match=r"nan\.parquet: field 'X_jets' has NaN values in sample 1"):
        ds.read([1])
    bad[1, 0, 3, 3] = np.inf
    ds = JetParquet(write_jet_parquet(tmp_path / "inf.parquet", dict(cols, X_jets=bad)))
    with pytest.raises(DatasetError, match="infinite values in sample 1"):
        ds.channel_stats()

    empty = {k: v[:0] for k, v in cols.items()}
    with pytest.raises(DatasetError, match=r"empty\.parquet: file holds no rows \(empty\)"):
        JetParquet(write_jet_parquet(tmp_path / "empty.parquet", empty))

    with pytest.raises(DatasetError, match=r"labels outside \{0, 1\}: \[2\.0\]"):
        JetParquet(write_jet_parquet(tmp_path / "lab.parquet", dict(cols, y=np.array([0.0, 2.0, 1.0]))))
    with pytest.raises(DatasetError, match="column 'pt'.*NaN|scalar column 'pt' has NaN"):
        JetParquet(write_jet_parquet(tmp_path / "pt.parquet", dict(cols, pt=np.array([1.0, np.nan, 2.0]))))


# ------------------------------------------------------------------------------------- memory
MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, pyarrow as pa
    from e2evision.datasets import JetParquet
    budget_mb = float(sys.argv[2])
    ds = JetParquet(sys.argv[1], memory_budget_mb=budget_mb)
    ds.read([0])  # warm up lazily initialised kernels and allocator pools
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pool = pa.default_memory_pool()
    pool_before = pool.max_memory()
    stats = ds.channel_stats()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_growth_mb": (rss_peak - base) / 1024, "arrow_peak_mb": pool.max_memory() / 2**20,
                      "count": float(stats.count[0]), "batch": ds.default_batch_size()}))
""")


@pytest.mark.slow
def test_streaming_stays_within_a_memory_budget(tmp_path):
    n = 240  # decoded: 240 × 3 × 125 × 125 doubles = 90 MB, float32 copy 45 MB; budget 8 MB
    cols = _qg_columns(n, seed=5)
    path = write_jet_parquet(tmp_path / "big.parquet", cols)
    dense_mb = n * 3 * 125 * 125 * 8 / 2**20
    budget = 8.0
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(path), str(budget)], capture_output=True, text=True, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["count"] == n * 125 * 125
    assert dense_mb > 10 * budget
    # Arrow's own allocations (decoded columns) and the process's growth stay near the budget,
    # far below the dataset's decoded size.
    assert res["arrow_peak_mb"] < 2.5 * budget, res
    assert res["rss_growth_mb"] < 4 * budget + 16, res
