"""Fault injection: for each class of the data-safety campaign (issue 18), the attack and the
expected refusal, plus randomised parts (bit flips in a store, kill -9 during ``convert``) that are
seeded and bounded in time.

Every refusal must be a one-line error that names the file (or option), the field and the fix;
through the CLI it is ``error: ...`` on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from schema_files import blob_images, sparse_jets, write_egamma_file, write_jet_parquet
from typer.testing import CliRunner

import e2evision
from e2evision.cli import app
from e2evision.config import load_config
from e2evision.datasets import DatasetError, JetParquet, open_dataset
from e2evision.store import TrainingStore, write_store

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = Path(e2evision.__file__).resolve().parents[1]  # the code under test, for subprocesses
runner = CliRunner()
TINY = [
    "train.max_epochs=1",
    "train.folds=2",
    "train.progress=false",
    "train.batch_size=16",
    "model.name=resnet15",
    "model.kwargs={widths: [4, 8]}",
    "augment.flip_eta=false",
    "augment.flip_phi=false",
]


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str, code: int = 2) -> str:
    """The command ends with one ``error:`` line holding every fragment; no traceback anywhere."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def qg_parquet(path: Path, n: int = 40, seed: int = 11, size: int = 125) -> tuple[Path, dict]:
    rng = np.random.default_rng(seed)
    cols = {
        "X_jets": sparse_jets(n, 3, rng, size=size, hits=20),
        "pt": rng.uniform(70, 100, n),
        "m0": rng.uniform(5, 40, n),
        "y": (np.arange(n) % 2).astype(np.float64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_jet_parquet(path, cols), cols


def egamma_files(root: Path, n: int = 60) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    p = write_egamma_file(root / "photons.hdf5", blob_images(n, 1.0, rng), np.zeros(n, np.float32))
    e = write_egamma_file(root / "electrons.hdf5", blob_images(n, 1.8, rng), np.ones(n, np.float32))
    return p, e


def rewrite_manifest(store: Path, edit) -> None:
    """A consistent hand-edit: change the manifest and recompute its self-checksum."""
    m = json.loads((store / "manifest.json").read_text())
    edit(m)
    try:  # imported here so that every test of this file runs (and fails on its own) on old code
        from e2evision.store.integrity import manifest_digest
    except ImportError:
        return (store / "manifest.json").write_text(json.dumps(m))
    m["manifest_sha256"] = manifest_digest(m)
    (store / "manifest.json").write_text(json.dumps(m))


def rewrite_array(store: Path, name: str, arr: np.ndarray) -> None:
    """Replace a store array and record its new size and sha256, as a careful forger would."""
    import hashlib

    def file_sha256(p: Path) -> str:
        return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()

    path = store / name if name in ("labels.npy", "scalars.npy") else store / "chunks" / name
    np.save(path, arr, allow_pickle=False)

    def edit(m):
        for entry in [
            m["label_file"],
            m["scalar_file"],
            *(f for ch in m["chunks"] for f in ch["files"]),
        ]:
            if entry["file"] == name:
                entry["bytes"], entry["sha256"] = path.stat().st_size, file_sha256(path)

    rewrite_manifest(store, edit)


# ---------------------------------------------------------------- 1. destructive --overwrite
def test_overwrite_never_deletes_an_input_or_a_non_store(tmp_path):
    src, _ = qg_parquet(tmp_path / "data" / "qg.parquet")
    r = cli("convert", tmp_path / "data", "--out", tmp_path / "data", "--overwrite", "--no-progress")
    assert_one_line_error(r, str(tmp_path / "data"), "holds the input", "choose another --out")
    assert src.is_file()
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("weeks of work")
    r = cli("convert", src, "--out", folder, "--overwrite", "--no-progress")
    assert_one_line_error(r, "is not an e2evision store", "manifest.json", "choose another --out")
    assert (folder / "chapter1.tex").read_text() == "weeks of work"
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    r = cli("convert", src, "--out", afile, "--overwrite", "--no-progress")
    assert_one_line_error(r, "is a file, not an e2evision store")
    assert afile.read_text() == "keep me"
    # a folder with a store's manifest plus anything else is not provably ours either
    store = write_store(JetParquet(src), tmp_path / "s", chunk_size=16)
    (store / "results.csv").write_text("1,2,3")
    with pytest.raises(DatasetError, match="is not an e2evision store"):
        write_store(JetParquet(src), store, overwrite=True)
    (store / "results.csv").unlink()
    # a store converted from itself would be deleted with its only copy of the data
    with pytest.raises(DatasetError, match="holds the input"):
        write_store(open_dataset(store), store, overwrite=True)
    # a real store is replaced
    assert write_store(JetParquet(src), store, overwrite=True, chunk_size=8) == store
    assert [c["n"] for c in TrainingStore(store).manifest["chunks"]] == [8] * 5


# ---------------------------------------------------------------- 2. concurrent writers
def test_a_second_writer_is_refused_and_live_partials_survive(tmp_path):
    import fcntl

    src, _ = qg_parquet(tmp_path / "qg.parquet")
    out = tmp_path / "s"
    # another process's live partial folder (its pid is alive) must not be deleted
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".s.partial-{sleeper.pid}-abcd"
        (live / "chunks").mkdir(parents=True)
        dead = tmp_path / ".s.partial-999999999-dead"  # no such pid: left by a killed conversion
        dead.mkdir()
        write_store(JetParquet(src), out)
        assert live.is_dir() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # while another writer holds the lock, a second conversion stops at once
    fd = os.open(tmp_path / ".s.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        r = cli("convert", src, "--out", out, "--overwrite", "--no-progress")
        assert_one_line_error(r, str(out), "another conversion", "choose another --out")
    finally:
        os.close(fd)
    assert TrainingStore(out).n_samples == 40


def test_publish_refuses_to_replace_what_appeared_meanwhile(tmp_path, monkeypatch):
    """A writer that does not take the lock finishes first: the slower one must not replace it."""
    import e2evision.store.format as fmt

    src, _ = qg_parquet(tmp_path / "qg.parquet")
    out = tmp_path / "s"
    real = fmt._write_contents

    def racing(reader, tmp, *args):
        manifest = real(reader, tmp, *args)
        monkeypatch.setattr(fmt, "_write_contents", real)
        other = Path(str(out) + ".other")
        write_store(JetParquet(src), other, chunk_size=5)  # the other writer's finished store ...
        os.rename(other, out)  # ... lands at --out meanwhile
        return manifest

    monkeypatch.setattr(fmt, "_write_contents", racing)
    with pytest.raises(DatasetError, match="changed while this conversion ran"):
        write_store(JetParquet(src), out)
    assert [c["n"] for c in TrainingStore(out).manifest["chunks"]] == [5] * 8  # the other's store, intact
    assert not list(tmp_path.glob(".s.partial-*"))


# ---------------------------------------------------------------- 3. store integrity
@pytest.fixture
def store(tmp_path) -> tuple[Path, dict]:
    src, cols = qg_parquet(tmp_path / "qg.parquet")
    return write_store(JetParquet(src), tmp_path / "s", chunk_size=16), cols


def test_a_flipped_bit_in_a_chunk_is_never_read(store):
    path, _ = store
    values = path / "chunks" / "000001.values.npy"
    data = bytearray(values.read_bytes())
    data[len(data) - 7] ^= 0x10  # inside a float's mantissa: the size and the .npy header stay valid
    values.write_bytes(bytes(data))
    st = TrainingStore(path)
    st.read([0])  # chunk 0 is intact
    with pytest.raises(DatasetError, match=r"000001\.values\.npy: checksum differs from the manifest"):
        st.read([20])


def test_bad_labels_and_nan_pixels_are_refused_like_the_source_readers(store):
    path, cols = store
    labels = cols["y"].astype(np.float32)
    labels[3] = 2.0
    rewrite_array(path, "labels.npy", labels)
    with pytest.raises(DatasetError, match=r"labels.npy: field 'labels' has 2\.0 at sample 3, outside \{0\.\.1\}"):
        TrainingStore(path)
    labels[3] = np.nan
    rewrite_array(path, "labels.npy", labels)
    with pytest.raises(DatasetError, match="field 'labels' has NaN"):
        TrainingStore(path)
    rewrite_array(path, "labels.npy", cols["y"].astype(np.float32))
    values = np.load(path / "chunks" / "000000.values.npy")
    values[5] = np.nan
    rewrite_array(path, "000000.values.npy", values)
    with pytest.raises(DatasetError, match="000000.values.npy: field 'values' has NaN or infinite pixels"):
        TrainingStore(path).read([0])


def test_the_manifest_is_validated(store, tmp_path):
    path, _ = store
    good = (path / "manifest.json").read_bytes()
    # hand-edited without recomputing the checksum: a reshaped image is refused
    m = json.loads(good)
    m["image_shape"] = [3, 8, 32]
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="manifest_sha256' does not match"):
        TrainingStore(path)
    # a consistent edit pointing a chunk outside the store
    outside = tmp_path / "elsewhere.npy"
    shutil.copy(path / "chunks" / "000000.values.npy", outside)
    (path / "manifest.json").write_bytes(good)
    rewrite_manifest(path, lambda m: m["chunks"][0]["files"][2].update(file="../../elsewhere.npy"))
    with pytest.raises(DatasetError, match=r"chunks\[0\]\.files\[2\]\.file is '\.\./\.\./elsewhere\.npy'"):
        TrainingStore(path)
    (path / "manifest.json").write_bytes(good)
    rewrite_manifest(path, lambda m: m.update(image_shape=[3, 16]))
    with pytest.raises(DatasetError, match="field 'image_shape'"):
        TrainingStore(path)
    (path / "manifest.json").write_bytes(good)
    rewrite_manifest(path, lambda m: m.update(n_samples="40"))
    with pytest.raises(DatasetError, match="field 'n_samples' is str"):
        TrainingStore(path)
    # a renamed key and invalid UTF-8, through the CLI
    (path / "manifest.json").write_bytes(good.replace(b'"chunk_size"', b'"chunksize"'))
    assert_one_line_error(cli("inspect", path, "--no-progress"), "manifest.json", "chunk_size", "reconvert")
    (path / "manifest.json").write_bytes(good.replace(b'"layout"', b'"lay\xffout"'))
    assert_one_line_error(cli("inspect", path, "--no-progress"), "manifest.json", "not valid UTF-8", "reconvert")
    (path / "manifest.json").write_bytes(good)
    assert TrainingStore(path).n_samples == 40


def test_random_single_bit_flips_are_never_read_as_valid(tmp_path):
    """≥ 300 seeded single-bit flips anywhere in a converted store's files (chunks, labels,
    scalars, manifest): every one is refused, or (impossibly) reads back bit-identical content."""
    src, cols = qg_parquet(tmp_path / "qg.parquet", n=24)
    root = write_store(JetParquet(src), tmp_path / "s", chunk_size=8)
    truth_x = cols["X_jets"].astype(np.float32)
    truth = (
        truth_x,
        cols["y"].astype(np.float32),
        np.stack([cols["pt"], cols["m0"]], 1).astype(np.float32),
    )
    files = sorted(p for p in root.rglob("*") if p.is_file())
    chunk_files = [p for p in files if p.parent.name == "chunks"]
    rng = np.random.default_rng(2026)
    outcome = {"refused": 0, "identical": 0, "wrong": 0}
    t0 = time.perf_counter()
    flips = 360
    for i in range(flips):
        # two flips in three land in chunk files (the bulk of the bytes), the rest anywhere
        path = chunk_files[rng.integers(len(chunk_files))] if i % 3 else files[rng.integers(len(files))]
        data = bytearray(path.read_bytes())
        pos, bit = int(rng.integers(len(data))), int(rng.integers(8))
        data[pos] ^= 1 << bit
        path.write_bytes(bytes(data))
        try:
            st = TrainingStore(root)
            x, y = st.read(np.arange(24))
            s = st.read_scalars(np.arange(24))
            same = (
                np.array_equal(x, truth[0])
                and np.array_equal(y, truth[1])
                and np.array_equal(s, truth[2])
                and st.image_shape == (3, 125, 125)
            )
            outcome["identical" if same else "wrong"] += 1
        except DatasetError:
            outcome["refused"] += 1
        data[pos] ^= 1 << bit
        path.write_bytes(bytes(data))
    seconds = time.perf_counter() - t0
    print(f"\n{flips} single-bit flips in {seconds:.1f} s: {outcome}")
    assert outcome["wrong"] == 0
    assert outcome["refused"] + outcome["identical"] == flips and seconds < 60


# ---------------------------------------------------------------- 4. run directories that lie
def _cfg(paths, *extra):
    return load_config(
        ROOT / "configs/egamma_resnet15.yaml",
        [f"data.paths={json.dumps([str(p) for p in paths])}", *TINY, *extra],
    )


def test_finished_folds_are_not_reused_on_changed_data_and_provenance_is_kept(tmp_path):
    from e2evision.training import run_experiment

    p, e = egamma_files(tmp_path / "data")
    out = tmp_path / "run"
    run_experiment(_cfg([p, e]), out)
    folds = json.loads((out / "fold_0" / "fold.json").read_text())
    assert folds["data_fingerprint"].startswith("sha256:")
    before = {n: (out / n).read_bytes() for n in ("config.yaml", "run.json", "metrics.json")}
    # the same path now holds other photons (same count, so the split is the same)
    rng = np.random.default_rng(99)
    write_egamma_file(p, blob_images(60, 1.0, rng), np.zeros(60, np.float32))
    with pytest.raises(
        RuntimeError,
        match="field 'data_fingerprint' is sha256:.*the fold was trained on other data",
    ):
        run_experiment(_cfg([p, e]), out)
    assert {n: (out / n).read_bytes() for n in before} == before  # nothing rewritten


def test_reused_folds_report_bit_identical_predictions(tmp_path):
    """A run finished from reused folds writes the very floats of the run that trained them (the
    reused model runs in the memory format training used; found by the random kill of train)."""
    from e2evision.training import run_experiment

    p, e = egamma_files(tmp_path / "data")
    out = tmp_path / "run"
    cfg = _cfg([p, e], "model.kwargs={widths: [16, 16]}")  # channels-last on CPU at this width
    run_experiment(cfg, out)
    assert json.loads((out / "run.json").read_text())["performance"]["channels_last"] is True
    first = dict(np.load(out / "predictions.npz"))
    (out / "metrics.json").unlink()  # as if killed after the last fold finished
    run_experiment(cfg, out)
    again = dict(np.load(out / "predictions.npz"))
    for key in ("oof_score", "test_score", "test_fold_scores"):
        np.testing.assert_array_equal(again[key], first[key], err_msg=key)


def test_the_same_file_given_twice_is_refused(tmp_path):
    p, e = egamma_files(tmp_path / "data")
    (tmp_path / "link.hdf5").symlink_to(p)
    for paths in (
        [p, p],
        [p, tmp_path / "data" / ".." / "data" / "photons.hdf5"],
        [p, tmp_path / "link.hdf5"],
        [tmp_path / "data", e],
    ):
        with pytest.raises(DatasetError, match="is the same file as .*give each data file once"):
            open_dataset(paths)
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data")  # a recursive pattern walks it many times
    with pytest.raises(DatasetError, match="is the same file as"):
        open_dataset(str(tmp_path / "data" / "**" / "*.hdf5"), "egamma")
    r = cli("inspect", p, "--no-progress", "--json")
    assert r.exit_code == 0
    r = cli("convert", p, e, p, "--out", tmp_path / "s", "--no-progress")
    assert_one_line_error(r, "photons.hdf5: is the same file as")


def test_one_class_binary_data_and_too_many_folds_stop_before_training(tmp_path):
    from e2evision.training import run_experiment

    p, e = egamma_files(tmp_path / "data")
    out = tmp_path / "run"
    with pytest.raises(
        DatasetError,
        match=r"photons.hdf5: labels hold 1 class\(es\) \(0: 60\); a binary task needs 2",
    ):
        run_experiment(_cfg([p]), out)
    assert not out.exists()  # no provenance, no folds
    with pytest.raises(ValueError, match="train.folds: 50 folds need at least 50 samples of every class"):
        run_experiment(_cfg([p, e], "train.folds=50"), out)
    assert not out.exists()


# ---------------------------------------------------------------- 5. deployment
@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found on PATH: the C++ engine cannot be built here")
    from e2evision.export import build_cpp, export_model
    from e2evision.training import run_experiment

    base = tmp_path_factory.mktemp("deploy")
    p, e = egamma_files(base / "data")
    run_experiment(_cfg([p, e]), base / "run")
    build_cpp()
    return export_model(base / "run", "torchscript", base / "export" / "model.pt", n_check=8).path


def test_cpp_engine_checks_the_model_sha256_and_refuses_non_finite_inputs(exported, tmp_path):
    from e2evision.export import run_tool, save_npy, tool_path

    raw = np.random.default_rng(0).random((4, 2, 32, 32), dtype=np.float32)
    good = save_npy(tmp_path / "raw.npy", raw)
    ok = run_tool(exported, {"image": good}, {"prob": tmp_path / "p.npy"}, tool=tool_path())
    assert ok.returncode == 0, ok.stderr
    bad = raw.copy()
    bad[2, 1, 5, 6] = np.nan
    proc = run_tool(
        exported,
        {"image": save_npy(tmp_path / "nan.npy", bad)},
        {"prob": tmp_path / "p.npy"},
        tool=tool_path(),
    )
    assert proc.returncode == 2 and "InputError: " in proc.stderr and "NaN value at sample 2" in proc.stderr
    bad[2, 1, 5, 6] = np.inf
    proc = run_tool(
        exported,
        {"image": save_npy(tmp_path / "inf.npy", bad)},
        {"prob": tmp_path / "p.npy"},
        tool=tool_path(),
    )
    assert proc.returncode == 2 and "infinite value at sample 2" in proc.stderr
    # one flipped bit in the model file: same size, still loads, but refused before loading
    copy = tmp_path / "m"
    shutil.copytree(exported.parent, copy)
    data = bytearray((copy / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.pt").write_bytes(bytes(data))
    proc = run_tool(copy / "model.pt", {"image": good}, {"prob": tmp_path / "p.npy"}, tool=tool_path())
    assert proc.returncode == 2 and "ModelFileError: " in proc.stderr, proc.stderr
    assert "differs from exports.torchscript.sha256" in proc.stderr and "export again" in proc.stderr
    # verify-cpp refuses channels-last and empty inputs in one line
    np.save(tmp_path / "nhwc.npy", raw.transpose(0, 2, 3, 1).copy())
    r = cli("verify-cpp", exported, "--raw", tmp_path / "nhwc.npy", "--tool", tool_path())
    assert_one_line_error(r, "shape (4, 32, 32, 2)", "channels-last?", code=1)
    np.save(tmp_path / "empty.npy", raw[:0])
    assert_one_line_error(
        cli("verify-cpp", exported, "--raw", tmp_path / "empty.npy", "--tool", tool_path()),
        "holds no samples",
        code=1,
    )


# ---------------------------------------------------------------- 6. the report
def test_report_fields_cannot_inject_markup(tmp_path):
    from test_report import write_run

    from e2evision.report.html import _fmt_epochs

    assert "<script>" not in _fmt_epochs(["<script>alert(1)</script>"] * 3)
    run = tmp_path / "evil"
    write_run(run, name="ok", model="m", shift=1.0, seed=3, n_params=9)
    m = json.loads((run / "metrics.json").read_text())
    m["epochs"] = ["<script>alert(1)</script>"] * 3
    (run / "metrics.json").write_text(json.dumps(m))
    r = cli("report", run, "--out", tmp_path / "r.html", "--no-saliency")
    assert_one_line_error(r, "metrics.json", "field 'epochs'")
    assert not (tmp_path / "r.html").exists()
    m["epochs"] = [6, 5, 6]
    (run / "metrics.json").write_text(json.dumps(m))
    r = cli(
        "report",
        run,
        "--out",
        tmp_path / "r.html",
        "--no-saliency",
        "--title",
        "<script>x</script>",
    )
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    assert "<script" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


# ---------------------------------------------------------------- 7. hangs
def _open_in_subprocess(seconds: float, *args: str) -> str:
    """``open_dataset(*args)`` in a child process; its error line, or fail if it blocks.

    A child, not a thread: h5py holds the GIL while HDF5 blocks in ``open()`` on a FIFO, so a
    blocked reader would hang the whole test process.
    """
    code = (
        "import sys\n"
        "from e2evision.datasets import DatasetError, open_dataset\n"
        "try:\n"
        "    open_dataset(*sys.argv[1:])\n"
        "except DatasetError as err:\n"
        "    print(err)\n"
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"opening {args[0]} blocked for more than {seconds} s (a FIFO was opened)")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_fifos_are_refused_not_opened(tmp_path):
    fifo = tmp_path / "x.hdf5"
    os.mkfifo(fifo)
    message = _open_in_subprocess(30, str(fifo))
    assert f"{fifo}: is a FIFO (named pipe), not a regular data file" in message, message
    lens = tmp_path / "lens"
    for cls in ("cdm", "no_sub"):
        (lens / cls).mkdir(parents=True)
        np.save(lens / cls / "a.npy", np.zeros((8, 8), np.float32))
    os.mkfifo(lens / "cdm" / "b.npy")
    message = _open_in_subprocess(30, str(lens), "deeplense")
    assert "b.npy: is a FIFO" in message, message


# ---------------------------------------------------------------- 8. one-line errors
def test_weak_cases_give_one_line_errors(tmp_path):
    from test_report import write_run

    p, e = egamma_files(tmp_path / "data")
    cfg = ROOT / "configs" / "egamma_resnet15.yaml"
    assert_one_line_error(
        cli(
            "tune",
            ROOT / "configs" / "lensing_vit_sd_fused.yaml",
            "--trials",
            "1",
            "--study",
            "s",
            "--storage",
            "notaurl",
            "--data",
            p,
            "--data",
            e,
            "--out",
            tmp_path / "tune",
        ),
        "--storage notaurl",
        "SQLAlchemy URL",
    )
    run = tmp_path / "run"
    write_run(run, name="r", model="m", shift=1.0, seed=3, n_params=9)
    data = (run / "predictions.npz").read_bytes()
    (run / "predictions.npz").write_bytes(data[: len(data) // 2])
    assert_one_line_error(cli("report", run, "--out", tmp_path / "r.html"), "predictions.npz", "truncated")
    assert_one_line_error(cli("report", p, "--out", tmp_path / "r.html"), str(p), "not a directory")
    assert_one_line_error(
        cli(
            "train",
            cfg,
            "--data",
            p,
            "--data",
            e,
            "--set",
            "train.lr=[0.1,",
            "--out",
            tmp_path / "t",
        ),
        "--set train.lr",
        "not valid YAML",
        "quote it",
    )
    dup = tmp_path / "dup.yaml"
    dup.write_text(cfg.read_text() + "\nseed: 1\nseed: 2\n")
    assert_one_line_error(cli("train", dup, "--data", p, "--out", tmp_path / "t"), str(dup), "'seed' appears twice")
    assert_one_line_error(
        cli(
            "train",
            cfg,
            "--data",
            p,
            "--data",
            e,
            "--set",
            "train.folds=61",
            "--out",
            tmp_path / "t",
        ),
        "train.folds: 61 folds need at least 61 samples",
    )
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(p, mixed / "photons.hdf5")
    qg_parquet(mixed / "jets.parquet")
    assert_one_line_error(cli("inspect", mixed, "--no-progress"), str(mixed), "mixes formats", "photons.hdf5")
    import pyarrow as pa
    import pyarrow.parquet as pq

    img = np.zeros((3, 4, 4)).tolist()
    pq.write_table(
        pa.table({"X_jets": pa.array([None, img]), "y": [0.0, 1.0], "pt": [1.0, 2.0], "m0": [1.0, 2.0]}),
        tmp_path / "null.parquet",
    )
    assert_one_line_error(
        cli("inspect", tmp_path / "null.parquet", "--no-progress"),
        "null.parquet",
        "'X_jets' row 0 is null",
    )


# ---------------------------------------------------------------- kill -9 during convert
@pytest.mark.slow
def test_kill_9_at_random_points_of_convert_never_leaves_a_wrong_store(tmp_path):
    """Seeded kill times over the whole conversion; after each kill ``--out`` holds either nothing
    or the previous complete store, and the next conversion succeeds (lock released, partial
    folder of the dead writer removed)."""
    rng0 = np.random.default_rng(5)
    n = 3000
    src = write_egamma_file(tmp_path / "photons.hdf5", blob_images(n, 1.0, rng0), (np.arange(n) % 2).astype(np.float32))
    out = tmp_path / "s"
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    cmd = [
        sys.executable,
        "-m",
        "e2evision",
        "convert",
        str(src),
        "--out",
        str(out),
        "--chunk-size",
        "64",
        "--no-progress",
        "--overwrite",
    ]
    t0 = time.perf_counter()
    full = subprocess.run(cmd, env=env, capture_output=True, text=True)
    duration = time.perf_counter() - t0
    assert full.returncode == 0, full.stderr
    expected = TrainingStore(out).read(np.arange(n))[0]
    rng = np.random.default_rng(7)
    kills = mid_write = 0
    deadline = time.perf_counter() + 40
    while kills < 5 and time.perf_counter() < deadline:
        if kills % 2:
            shutil.rmtree(out)  # half the kills with no store yet at --out
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.2, 1.0)) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        mid_write += bool(list(tmp_path.glob(".s.partial-*")))
        if out.exists():
            st = TrainingStore(out)  # a complete store, never a half-written one
            np.testing.assert_array_equal(st.read(np.arange(n))[0], expected)
        again = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert not list(tmp_path.glob(".s.partial-*"))
        np.testing.assert_array_equal(TrainingStore(out).read(np.arange(n))[0], expected)
    print(f"\n{kills} kills of convert ({duration:.1f} s each), {mid_write} while chunks were being written")
    assert kills >= 3


# ---------------------------------------------------------------- kill -9 during train
@pytest.mark.slow
def test_kill_9_at_random_points_of_train_then_resume_reports_the_uninterrupted_numbers(tmp_path):
    """Seeded kill times over a whole ``train``; ``--resume`` (with the config, so that a run killed
    before its provenance was written starts afresh) must end with the numbers, predictions and
    weights of an uninterrupted run, and no killed run may hold a metrics.json that differs."""
    from test_resume import SETS, _assert_same_run

    rng0 = np.random.default_rng(4)
    data = tmp_path / "data"
    data.mkdir()
    write_egamma_file(data / "photons.hdf5", blob_images(100, 1.0, rng0), np.zeros(100, np.float32))
    write_egamma_file(data / "electrons.hdf5", blob_images(100, 1.8, rng0), np.ones(100, np.float32))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    )

    def cmd(out: Path, *extra: str) -> list[str]:
        sets = [a for s in SETS for a in ("--set", s)]
        config = str(ROOT / "configs/egamma_resnet15.yaml")
        return [
            sys.executable,
            "-m",
            "e2evision",
            "train",
            config,
            "--data",
            str(data),
            "--out",
            str(out),
            *sets,
            *extra,
        ]

    t0 = time.perf_counter()
    ref = subprocess.run(cmd(tmp_path / "reference"), env=env, capture_output=True, text=True, timeout=300)
    duration = time.perf_counter() - t0
    assert ref.returncode == 0, ref.stdout + ref.stderr
    rng = np.random.default_rng(18)
    for i in range(2):
        run = tmp_path / f"run{i}"
        proc = subprocess.Popen(cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.3, 0.95)) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (run / "metrics.json").exists():  # finished before the kill: must already be right
            _assert_same_run(run, tmp_path / "reference")
        resumed = subprocess.run(cmd(run, "--resume"), env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        _assert_same_run(run, tmp_path / "reference")
