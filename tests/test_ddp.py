"""Data-parallel training: two CPU processes (gloo) reach what one process reaches.

The comparison is exact by construction up to floating-point summation order: ``train.batch_size``
is the global batch, both runs step through the same global batches in the same order
(:class:`EpochBatchSampler` splits each one over the processes), DDP averages the two halves'
gradients into the full batch's gradient, and the model has neither dropout nor batch norm nor
random augmentation here. So the weights must agree to float32 rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from schema_files import blob_images, write_egamma_file

from e2evision.config import load_config
from e2evision.training import run_experiment
from e2evision.training.data import EpochBatchSampler, ResumableLoader, batch_view

ROOT = Path(__file__).resolve().parents[1]
SETS = [
    "train.folds=2",
    "train.max_epochs=2",
    "train.batch_size=16",
    "train.progress=false",
    "model.kwargs.widths=[4, 8]",
    "augment.flip_eta=false",
    "augment.flip_phi=false",
    "train.accelerator=cpu",
    "train.checkpoint_every_n_steps=3",
]


def test_global_batches_are_split_over_processes_and_resumable():
    n, b = 45, 8
    one = EpochBatchSampler(n, b, shuffle=True, seed=3)
    two = [EpochBatchSampler(n, b, shuffle=True, seed=3, num_replicas=2, rank=r) for r in range(2)]
    for epoch in range(3):
        for s in (one, *two):
            s.set_epoch(epoch)
        whole = list(one)
        halves = [list(s) for s in two]
        assert len(whole) == len(halves[0]) == len(halves[1]) == len(one) == 6  # 5 full + 5 left over
        for g, h0, h1 in zip(whole, *halves):
            assert h0 + h1 == g and abs(len(h0) - len(h1)) <= 1  # rank 0 then rank 1: the global batch
        assert sorted(i for g in whole for i in g) == list(range(n))  # every sample once per epoch
    one.set_epoch(0)
    first = list(one)
    one.set_epoch(1)
    assert list(one) != first
    # a trailing global batch smaller than the number of processes is dropped, on every process
    assert len(EpochBatchSampler(17, 8, shuffle=False, seed=0, num_replicas=2)) == 2
    with pytest.raises(ValueError, match="smaller than the number of processes"):
        EpochBatchSampler(10, 2, shuffle=False, seed=0, num_replicas=4)

    # the loader's state is its epoch and position; loading it skips the batches already seen
    x = torch.arange(45.0).view(45, 1, 1, 1)
    data = batch_view(torch.utils.data.TensorDataset(x, torch.zeros(45)))
    loader = ResumableLoader(data, EpochBatchSampler(n, b, shuffle=True, seed=3))
    loader.sampler.set_epoch(2)
    it = iter(loader)
    seen = [next(it)[0].flatten().tolist() for _ in range(2)]
    state = loader.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 2
    rest = [xb.flatten().tolist() for xb, _ in it]
    again = ResumableLoader(data, EpochBatchSampler(n, b, shuffle=True, seed=3))
    again.load_state_dict(state)
    again.sampler.set_epoch(2)  # what Lightning does before the epoch: keeps the pending skip
    assert [xb.flatten().tolist() for xb, _ in again] == rest
    assert len(seen) + len(rest) == 6
    with pytest.raises(ValueError, match="seed was 4, now 3"):
        ResumableLoader(data, EpochBatchSampler(n, b, shuffle=True, seed=3)).load_state_dict({**state, "seed": 4})


def test_two_cpu_processes_match_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    data = tmp_path / "data"
    data.mkdir()
    write_egamma_file(
        data / "SinglePhotonPt50_IMGCROPS_n100.hdf5", blob_images(100, 1.0, rng), np.zeros(100, np.float32)
    )
    write_egamma_file(
        data / "SingleElectronPt50_IMGCROPS_n100.hdf5", blob_images(100, 1.8, rng), np.ones(100, np.float32)
    )
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "e2evision",
        "train",
        str(ROOT / "configs/egamma_resnet15.yaml"),
        "--data",
        str(data),
        "--out",
        str(ddp),
        *[a for s in [*SETS, "train.devices=2"] for a in ("--set", s)],
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for k in range(2):
        assert json.loads((ddp / f"fold_{k}/fold.json").read_text())["world_size"] == 2
    assert json.loads((ddp / "run.json").read_text())["processes"] == 2

    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml", [f"data.paths={json.dumps([str(data)])}", *SETS])
    single = tmp_path / "single"
    run_experiment(cfg, single)
    assert json.loads((single / "fold_0/fold.json").read_text())["world_size"] == 1

    for k in range(2):
        wa, wb = load_file(single / f"fold_{k}/model.safetensors"), load_file(ddp / f"fold_{k}/model.safetensors")
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-5, msg=f"fold {k}: {name}")
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (single, ddp))
    for ha, hb in zip(ma["history"], mb["history"], strict=True):
        assert (ha["fold"], ha["epoch"]) == (hb["fold"], hb["epoch"])
        for key in ("train_loss", "val_loss"):
            assert hb[key] == pytest.approx(ha[key], rel=1e-5)
        assert hb["val_auc"] == pytest.approx(ha["val_auc"], abs=1e-3)  # validation split over both processes
    with np.load(single / "predictions.npz") as pa, np.load(ddp / "predictions.npz") as pb:
        np.testing.assert_allclose(pb["test_fold_scores"], pa["test_fold_scores"], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(pb["test_index"], pa["test_index"])
    assert mb["test_auc"] == pytest.approx(ma["test_auc"], abs=1e-3)
