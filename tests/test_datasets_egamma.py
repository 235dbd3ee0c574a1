"""The electron/photon HDF5 reader: public schema in, (N, 2, 32, 32) out, clear errors otherwise."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from schema_files import blob_images, write_egamma_file

from e2evision.datasets import DatasetError, EgammaHDF5, detect_format, open_dataset


def test_two_files_read_back_bit_exactly(egamma_pair):
    p, e, x, y = egamma_pair
    ds = EgammaHDF5([p, e])
    assert ds.n_samples == 120 and ds.image_shape == (2, 32, 32)
    assert ds.channel_names == ["ecal_energy", "ecal_time"]
    xs, ys = ds.read(np.arange(120))
    np.testing.assert_array_equal(xs, x.transpose(0, 3, 1, 2))  # channels-first, bit-exact
    np.testing.assert_array_equal(ys, y)
    assert ds.label_counts() == {"0": 60, "1": 60}


def test_directory_puts_photons_first_and_auto_detects(egamma_pair):
    p, e, x, _ = egamma_pair
    assert detect_format(p.parent) == "egamma"
    ds = open_dataset(p.parent)
    assert ds.paths == [p, e]
    np.testing.assert_array_equal(ds.read([0])[0][0], x[0].transpose(2, 0, 1))


def test_one_combined_file(tmp_path):
    rng = np.random.default_rng(1)
    x = blob_images(50, 1.2, rng)
    y = (rng.random(50) > 0.5).astype(np.float32)
    path = write_egamma_file(tmp_path / "both.h5", x, y)
    ds = EgammaHDF5(path)
    np.testing.assert_array_equal(ds.labels(), y)
    order = np.array([49, 3, 3, 17, 0])  # unsorted, repeated: returned in the order asked for
    xs, ys = ds.read(order)
    np.testing.assert_array_equal(xs, x[order].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(ys, y[order])


def test_reads_across_file_boundary_and_streams(egamma_pair):
    p, e, x, y = egamma_pair
    ds = EgammaHDF5([p, e])
    xs, ys = ds.read([59, 60, 61])
    np.testing.assert_array_equal(xs, x[59:62].transpose(0, 3, 1, 2))
    batches = list(ds.iter_batches(batch_size=50))
    assert [b[0].shape[0] for b in batches] == [50, 50, 20]
    with pytest.raises(IndexError):
        ds.read([120])


def test_channel_stats_match_numpy(egamma_pair):
    p, e, x, _ = egamma_pair
    stats = EgammaHDF5([p, e]).channel_stats(batch_size=7)  # many uneven batches: tests the merge
    flat = x.transpose(3, 0, 1, 2).reshape(2, -1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, flat.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(stats.std, flat.std(axis=1), rtol=1e-9)
    np.testing.assert_array_equal(stats.maximum, flat.max(axis=1))
    np.testing.assert_allclose(stats.nonzero / stats.count, (flat != 0).mean(axis=1))


def test_missing_key_names_file_and_key(tmp_path):
    path = write_egamma_file(tmp_path / "nolabel.h5", np.zeros((4, 32, 32, 2), np.float32), None)
    with pytest.raises(DatasetError, match=r"nolabel\.h5: missing key\(s\) \['y'\]"):
        EgammaHDF5(path)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((4, 32, 32), r"field 'X' has shape \(4, 32, 32\)"),
        ((4, 2, 32, 32), r"field 'X' has shape \(4, 2, 32, 32\), expected \(N, 32, 32, 2\)"),
        ((4, 31, 32, 2), r"field 'X' has shape \(4, 31, 32, 2\)"),
    ],
)
def test_wrong_shape(tmp_path, shape, message):
    path = write_egamma_file(tmp_path / "bad.h5", np.zeros(shape, np.float32), np.zeros(4, np.float32))
    with pytest.raises(DatasetError, match=rf"bad\.h5: {message}"):
        EgammaHDF5(path)


def test_label_count_mismatch_and_empty(tmp_path):
    path = write_egamma_file(tmp_path / "short.h5", np.zeros((4, 32, 32, 2), np.float32), np.zeros(3, np.float32))
    with pytest.raises(DatasetError, match="has 3 labels but 'X' has 4 images"):
        EgammaHDF5(path)
    path = write_egamma_file(tmp_path / "empty.h5", np.zeros((0, 32, 32, 2), np.float32), np.zeros(0, np.float32))
    with pytest.raises(DatasetError, match=r"empty\.h5: field 'X' is empty"):
        EgammaHDF5(path)


def test_nan_pixels_are_reported_with_sample_index(tmp_path):
    x = np.zeros((10, 32, 32, 2), np.float32)
    x[7, 3, 4, 0] = np.nan
    path = write_egamma_file(tmp_path / "nan.h5", x, np.zeros(10, np.float32))
    ds = EgammaHDF5(path)  # header checks pass: pixel values are checked as they are read
    ds.read([0, 1, 2])
    with pytest.raises(DatasetError, match=r"nan\.h5: field 'X' has NaN values in sample 7"):
        ds.read(np.arange(10))
    x[7, 3, 4, 0] = np.inf
    path = write_egamma_file(tmp_path / "inf.h5", x, np.zeros(10, np.float32))
    with pytest.raises(DatasetError, match="infinite values in sample 7"):
        EgammaHDF5(path).channel_stats()


@pytest.mark.parametrize("bad", [2.0, -1.0, 0.5, np.nan])
def test_labels_outside_zero_one(tmp_path, bad):
    y = np.zeros(5, np.float32)
    y[3] = bad
    path = write_egamma_file(tmp_path / "labels.h5", np.zeros((5, 32, 32, 2), np.float32), y)
    with pytest.raises(DatasetError, match=r"labels\.h5: field 'y' has (labels outside \{0, 1\}|NaN)"):
        EgammaHDF5(path)


def test_truncated_and_missing_files(tmp_path, egamma_pair):
    p, *_ = egamma_pair
    data = p.read_bytes()
    cut = tmp_path / "truncated.hdf5"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match=r"truncated\.hdf5: cannot open as HDF5"):
        EgammaHDF5(cut)
    with pytest.raises(DatasetError, match=r"nothere\.h5: file not found"):
        EgammaHDF5(tmp_path / "nothere.h5")


def test_reader_reads_lazily(egamma_pair, monkeypatch):
    """A read of 3 samples touches 3 images, not the whole file."""
    p, e, *_ = egamma_pair
    ds = EgammaHDF5([p, e])
    seen = []
    original = ds._read_block

    def spy(f, local):
        out = original(f, local)
        seen.append(out.shape[0])
        return out

    monkeypatch.setattr(ds, "_read_block", spy)
    ds.read([5, 6, 100])
    assert sum(seen) == 3


def test_reader_survives_pickling_for_workers(egamma_pair):
    import pickle

    p, e, x, _ = egamma_pair
    ds = EgammaHDF5([p, e])
    ds.read([0])  # opens handles
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.read([61])[0][0], x[61].transpose(2, 0, 1))


def test_group_instead_of_dataset(tmp_path):
    path = tmp_path / "group.h5"
    with h5py.File(path, "w") as h5:
        h5.create_group("X")
        h5.create_dataset("y", data=np.zeros(3, np.float32))
    with pytest.raises(DatasetError, match="must be datasets"):
        EgammaHDF5(path)
