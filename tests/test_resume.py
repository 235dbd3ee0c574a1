"""Interrupted training continues where it stopped and ends exactly where an uninterrupted run ends.

The main test kills ``e2evision train`` with SIGKILL right after a mid-epoch checkpoint, resumes
it with ``--resume`` and compares every number with a run that was never interrupted: metrics,
predictions and the weights of every fold, bit for bit (same seed, CPU, one thread).
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
import torch
from safetensors.torch import load_file
from schema_files import blob_images, write_egamma_file
from typer.testing import CliRunner

from e2evision.cli import app
from e2evision.config import load_config
from e2evision.training import callbacks as cb
from e2evision.training import run_experiment

ROOT = Path(__file__).resolve().parents[1]
SETS = [
    "train.folds=2",
    "train.max_epochs=2",
    "train.batch_size=8",
    "train.checkpoint_every_n_steps=2",
    "train.progress=false",
    "model.kwargs.widths=[16, 16]",
    "train.early_stopping_patience=null",
]
# widths 16: the trainer's CPU default for this CNN is then channels-last (no oneDNN hazard), so
# resuming is checked on the memory format real runs use
#: metrics that legitimately differ between an interrupted and an uninterrupted run
_TIMING = {"train_time_s", "wall_time_s", "resumed_folds", "loader_wait_fraction"}


@pytest.fixture
def egamma_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    d = tmp_path / "data"
    d.mkdir()
    write_egamma_file(d / "SinglePhotonPt50_IMGCROPS_n100.hdf5", blob_images(100, 1.0, rng), np.zeros(100, np.float32))
    write_egamma_file(d / "SingleElectronPt50_IMGCROPS_n100.hdf5", blob_images(100, 1.8, rng), np.ones(100, np.float32))
    return d


def _config(data: Path, *extra: str):
    return load_config(ROOT / "configs/egamma_resnet15.yaml", [f"data.paths={json.dumps([str(data)])}", *SETS, *extra])


def _reference(data: Path, out: Path) -> dict:
    """The uninterrupted run, in this process, single-threaded like the subprocesses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_experiment(_config(data), out)
    finally:
        torch.set_num_threads(threads)


def _assert_same_run(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ma.items() if k not in _TIMING} == {k: v for k, v in mb.items() if k not in _TIMING}
    with np.load(a / "predictions.npz") as pa, np.load(b / "predictions.npz") as pb:
        for key in pa.files:
            np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)
    for k in range(2):
        wa, wb = load_file(a / f"fold_{k}/model.safetensors"), load_file(b / f"fold_{k}/model.safetensors")
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.equal(wa[name], wb[name]), f"fold {k}: {name} differs"


def _mid_epoch(ckpt: Path) -> tuple[int, int, int] | None:
    """(epoch, batches done, batches per epoch) when ``ckpt`` was saved inside an epoch, else None."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # our checkpoints need no pickle
    loader = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    if 0 < loader["batches_done"] < loader["num_batches"]:
        return loader["epoch"], loader["batches_done"], loader["num_batches"]
    return None


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(egamma_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "e2evision",
        "train",
        str(ROOT / "configs/egamma_resnet15.yaml"),
        "--data",
        str(egamma_dir),
        "--out",
        str(run),
        *[a for s in SETS for a in ("--set", s)],
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = run / "fold_0" / "checkpoints" / "last.ckpt"
    where = None
    deadline = time.monotonic() + 120
    try:
        while where is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            if not ckpt.exists():
                continue
            os.kill(proc.pid, signal.SIGSTOP)  # freeze it: no checkpoint can change while we look
            where = _mid_epoch(ckpt)
            if where is None:
                os.kill(proc.pid, signal.SIGCONT)
        assert where is not None, f"never caught a mid-epoch checkpoint:\n{proc.communicate()[0].decode()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "fold_0" / "fold.json").exists() and not (run / "metrics.json").exists()

    # without --resume the interrupted fold is refused, naming the checkpoint (in-process: no import cost)
    refused = CliRunner().invoke(app, cmd[3:])
    assert refused.exit_code == 2 and "last.ckpt" in refused.output and "--resume" in refused.output

    resumed = subprocess.run(
        [sys.executable, "-m", "e2evision", "train", "--resume", "--out", str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads((run / "run.json").read_text())["performance"]["channels_last"] is True
    fold0 = json.loads((run / "fold_0" / "fold.json").read_text())
    epoch, done, per_epoch = where
    assert fold0["resumed_from_step"] == epoch * per_epoch + done  # one optimizer step per batch
    assert json.loads((run / "metrics.json").read_text())["resumed_folds"] == [0]

    _reference(egamma_dir, tmp_path / "reference")
    _assert_same_run(run, tmp_path / "reference")


def test_resume_from_any_checkpoint_equals_uninterrupted(egamma_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """In-process: resume from checkpoints at several points (mid-epoch 0, end of epoch 0, mid-epoch 1)."""
    saved: list[tuple[int, Path]] = []
    original = cb.RunCheckpoint.save

    def save_and_keep(self: cb.RunCheckpoint, trainer) -> None:
        original(self, trainer)
        if self.dirpath.parent.name == "fold_0":
            copy = tmp_path / "kept" / f"{len(saved):02d}.ckpt"
            copy.parent.mkdir(exist_ok=True)
            shutil.copy(self.path, copy)
            saved.append((trainer.global_step, copy))

    monkeypatch.setattr(cb.RunCheckpoint, "save", save_and_keep)
    ref = tmp_path / "reference"
    _reference(egamma_dir, ref)
    monkeypatch.setattr(cb.RunCheckpoint, "save", original)
    steps = [s for s, _ in saved]
    per_epoch = 10  # 200 crops: 160 train+val, 80 per training fold, batches of 8
    assert steps == sorted(set(steps)) and per_epoch in steps
    chosen = [c for c in saved if c[0] in (2, per_epoch, per_epoch + 4)]
    assert len(chosen) == 3
    for step, path in chosen:
        out = tmp_path / f"resume_{step}"
        (out / "fold_0" / "checkpoints").mkdir(parents=True)
        shutil.copy(ref / "config.yaml", out / "config.yaml")
        shutil.copy(ref / "fold_0/checkpoints/meta.json", out / "fold_0/checkpoints/meta.json")
        shutil.copy(path, out / "fold_0/checkpoints/last.ckpt")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            run_experiment(_config(egamma_dir), out, resume=True)
        finally:
            torch.set_num_threads(threads)
        assert json.loads((out / "fold_0/fold.json").read_text())["resumed_from_step"] == step
        _assert_same_run(out, ref)


def test_resume_guards(egamma_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    ckpts = out / "fold_0" / "checkpoints"
    ckpts.mkdir(parents=True)
    cfg = _config(egamma_dir)
    (out / "config.yaml").write_text(_config(egamma_dir, "train.lr=0.5", "seed=3").to_yaml())
    with pytest.raises(RuntimeError, match=r"config\.yaml: cannot resume, the config differs in seed, train\.lr"):
        run_experiment(cfg, out, resume=True)
    (out / "config.yaml").write_text(cfg.to_yaml())
    outside = tmp_path / "elsewhere.ckpt"
    outside.write_bytes(b"not ours")
    (ckpts / "last.ckpt").symlink_to(outside)
    with pytest.raises(RuntimeError, match="points outside the run directory"):
        run_experiment(cfg, out, resume=True)
    (ckpts / "last.ckpt").unlink()
    (ckpts / "last.ckpt").write_bytes(b"truncated")
    with pytest.raises(RuntimeError, match=r"meta\.json is missing"):
        run_experiment(cfg, out, resume=True)
    with pytest.raises(RuntimeError, match=r"fold 0 was interrupted; pass --resume"):
        run_experiment(cfg, out)
