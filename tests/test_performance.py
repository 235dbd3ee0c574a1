"""How a fold's model runs on its device (training.performance): the defaults the trainer picks,
channels-last and compile applied without changing results or weight names, and the FLOP count,
peak table and MFU behind benchmarks/gpu_throughput.py, checked against hand-computed numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from e2evision.config import TrainConfig, load_config
from e2evision.models import create_model
from e2evision.rundir import config_hash
from e2evision.training import run_experiment
from e2evision.training.module import ImageModule
from e2evision.training.performance import (
    apply_performance,
    channels_last_hazard,
    conv_share,
    mfu,
    peak_tflops,
    resolve_performance,
    training_step_flops,
)
from e2evision.transforms.normalize import ChannelNormalizer

ROOT = Path(__file__).resolve().parents[1]


def test_conv_share_counts_convolution_flops():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    conv = 2 * 4 * 6 * 6 * 2 * 9  # 2 × outputs × (inputs per output)
    lin = 2 * 4 * 6 * 6 * 3
    assert conv_share(model, (2, 8, 8)) == pytest.approx(conv / (conv + lin))
    assert conv_share(nn.Sequential(nn.Flatten(), nn.Linear(8, 1)), (2, 2, 2)) == 0.0


def test_defaults_follow_the_device_and_the_model():
    shape = (2, 16, 16)
    cnn = create_model("resnet15", in_chans=2, img_size=16, num_outputs=1)
    vit = create_model("vit_micro", in_chans=2, img_size=16, num_outputs=1)
    cpu = resolve_performance(TrainConfig(), cnn, shape, on_gpu=False)
    assert (cpu.precision, cpu.channels_last, cpu.compile, cpu.matmul_precision) == ("32-true", True, False, None)
    # widths 4, 8 put a strided 1×1 convolution on 4 channels: NCHW on a CPU (oneDNN bug), NHWC on a GPU
    narrow = create_model("resnet15", in_chans=2, img_size=16, num_outputs=1, widths=[4, 8])
    assert resolve_performance(TrainConfig(), narrow, shape, on_gpu=False).channels_last is False
    assert resolve_performance(TrainConfig(), narrow, shape, on_gpu=True).channels_last is True
    assert resolve_performance(TrainConfig(), vit, shape, on_gpu=False).channels_last is False
    # measured on an H200: small inputs and transformers train faster in TF32, large CNN inputs in bf16
    gpu_cnn = resolve_performance(TrainConfig(), cnn, shape, on_gpu=True)
    assert (gpu_cnn.precision, gpu_cnn.channels_last, gpu_cnn.matmul_precision) == ("32-true", True, "high")
    assert gpu_cnn.conv_share > 0.9 and not gpu_cnn.compile and gpu_cnn.forward_gflops < 0.1
    jets = create_model("resnet15", in_chans=3, img_size=125, num_outputs=1)
    gpu_jets = resolve_performance(TrainConfig(), jets, (3, 125, 125), on_gpu=True)
    assert (gpu_jets.precision, gpu_jets.channels_last) == ("bf16-mixed", True) and gpu_jets.forward_gflops > 0.1
    assert resolve_performance(TrainConfig(), jets, (3, 125, 125), on_gpu=False).precision == "32-true"
    gpu_vit = resolve_performance(TrainConfig(), vit, shape, on_gpu=True)
    assert gpu_vit.channels_last is False and gpu_vit.conv_share < 0.2  # only the patch embedding
    assert gpu_vit.precision == "32-true" and gpu_vit.matmul_precision == "high"
    # most of simple_cnn's weights are in its dense layer, but its time is in the convolutions
    small = create_model("simple_cnn", in_chans=3, img_size=32, num_outputs=1)
    assert resolve_performance(TrainConfig(), small, (3, 32, 32), on_gpu=True).channels_last is True
    # what the config says wins over the defaults
    asked = TrainConfig(precision="16-mixed", channels_last=False, compile=True, matmul_precision="highest")
    mine = resolve_performance(asked, cnn, shape, on_gpu=True)
    assert (mine.precision, mine.channels_last, mine.compile, mine.matmul_precision) == (
        "16-mixed",
        False,
        True,
        "highest",
    )
    assert resolve_performance(TrainConfig(channels_last=True), vit, shape, on_gpu=False).channels_last is True


def _module(cfg: TrainConfig, widths: tuple[int, int] = (16, 32)) -> ImageModule:
    torch.manual_seed(0)
    model = create_model("resnet15", in_chans=2, img_size=16, num_outputs=1, widths=list(widths))
    return ImageModule(model, ChannelNormalizer(2, "none"), cfg)


def test_channels_last_on_cpu_refuses_models_that_hit_the_onednn_bug():
    # resnet15's stride-2 block has a 1×1 projection; with 4 input channels oneDNN's NHWC weight
    # gradient overruns its workspace (crashes this process when run), so the config is refused
    narrow = _module(TrainConfig(), widths=(4, 8))
    assert "blocks.3.shortcut" in channels_last_hazard(narrow.model)
    with pytest.raises(ValueError, match=r"train.channels_last: true on a CPU: layer 'model.blocks.3.shortcut'"):
        resolve_performance(TrainConfig(channels_last=True), narrow, (2, 16, 16), on_gpu=False)
    # the GPU has no such kernel, and the 16-channel version is safe on CPU
    assert resolve_performance(TrainConfig(channels_last=True), narrow, (2, 16, 16), on_gpu=True).channels_last
    assert channels_last_hazard(_module(TrainConfig()).model) is None


def test_channels_last_gives_the_same_outputs_and_gradients():
    x = torch.rand(6, 2, 16, 16)
    y = torch.tensor([0.0, 1, 0, 1, 1, 0])
    plain, nhwc = _module(TrainConfig()), _module(TrainConfig())
    apply_performance(nhwc, resolve_performance(TrainConfig(channels_last=True), nhwc, (2, 16, 16), on_gpu=False))
    assert nhwc.channels_last and not plain.channels_last
    conv = next(m for m in nhwc.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for m in (plain, nhwc):
        loss = nn.functional.binary_cross_entropy_with_logits(m(x), y)
        loss.backward()
    torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-5, atol=1e-6)
    g_plain = dict(plain.model.named_parameters())
    for name, p in nhwc.model.named_parameters():
        torch.testing.assert_close(p.grad, g_plain[name].grad, rtol=1e-4, atol=1e-6, msg=name)
    # the saved weights are plain contiguous tensors under unchanged names
    assert plain.state_dict().keys() == nhwc.state_dict().keys()


def test_compile_keeps_the_weight_names():
    module = _module(TrainConfig())
    keys = list(module.state_dict())
    apply_performance(module, resolve_performance(TrainConfig(compile=True), module, (2, 16, 16), on_gpu=False))
    assert module.model._compiled_call_impl is not None  # compiled in place, lazily (no compile here)
    assert list(module.state_dict()) == keys


def test_training_step_flops_match_hand_counts():
    n, a, b, c = 5, 7, 3, 4
    two = nn.Sequential(nn.Linear(a, b, bias=False), nn.Linear(b, c, bias=False))
    # forward 2n(ab + bc); backward: both weight gradients, and the input gradient of the second
    # layer only (the images need none)
    assert training_step_flops(two, torch.randn(n, a)) == 2 * n * (a * b + b * c) + 2 * n * (a * b + 2 * b * c)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    fwd = 2 * n * 3 * 8 * 8 * 2 * 9
    assert training_step_flops(conv, torch.randn(n, 2, 8, 8)) == 2 * fwd  # forward + weight gradient
    assert all(p.grad is None for p in conv.parameters())  # the count leaves no gradients behind


def test_peak_table_and_mfu():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == pytest.approx(756.0)
    assert peak_tflops("NVIDIA H200", "tf32") == pytest.approx(494.7)
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == pytest.approx(19.5)
    assert peak_tflops("cpu", "bf16") is None
    with pytest.raises(ValueError, match="math must be"):
        peak_tflops("NVIDIA H100", "fp8")
    # 1e12 FLOPs per step at 2 steps/s on a 4-TFLOP/s device: half its peak
    assert mfu(1e12, 2.0, 4.0) == pytest.approx(0.5)
    assert mfu(1e12, 2.0, None) is None


def test_run_records_its_performance_settings_outside_the_config_hash(egamma_pair, tmp_path):
    p, e, *_ = egamma_pair
    over = [
        f"data.paths={json.dumps([str(p), str(e)])}",
        "train.max_epochs=1",
        "train.folds=2",
        "train.progress=false",
        "train.batch_size=32",
        "model.kwargs.widths=[16, 32]",
    ]
    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml", [*over, "train.channels_last=true"])
    assert config_hash(cfg) == config_hash(load_config(ROOT / "configs/egamma_resnet15.yaml", over))
    out = tmp_path / "run"
    metrics = run_experiment(cfg, out)
    perf = json.loads((out / "run.json").read_text())["performance"]
    assert perf["channels_last"] is True and perf["precision"] == "32-true" and perf["on_gpu"] is False
    assert perf["conv_share"] > 0.9
    assert np.isfinite(metrics["test_auc"])


def test_gpu_benchmark_script_runs_on_cpu(tmp_path):
    """The GPU benchmark's code path at its smallest size (no GPU here): every mode reports, and the
    MFU it prints is the FLOP count × steps/s over the peak it was given."""
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/gpu_throughput.py"),
            "--models",
            "resnet15",
            "--geometries",
            "2x16",
            "--batch",
            "4",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--rounds",
            "2",
            "--modes",
            "default,fp32,fp32+cl",
            "--device",
            "cpu",
            "--peak-tflops",
            "0.5",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["mode"] for r in rows] == ["fp32", "default", "fp32+cl"]  # fp32 first: the ratios' base
    assert [r["channels_last"] for r in rows] == [False, True, True]  # the CPU default for a CNN is NHWC
    # the default is measured once, as the explicit mode with its settings
    assert rows[1]["measured_as"] == "fp32+cl" and rows[1]["images_per_s"] == rows[2]["images_per_s"]
    model = create_model("resnet15", in_chans=2, img_size=16, num_outputs=1)
    assert {r["flops_per_step"] for r in rows} == {training_step_flops(model, torch.zeros(4, 2, 16, 16))}
    for r in rows:
        assert r["images_per_s"] > 0
        assert r["mfu"] == pytest.approx(r["flops_per_step"] * r["steps_per_s"] / 0.5e12)
    assert "pick what helps" in proc.stdout


# ------------------------------------------------------------------- the trainer's per-step work
def test_in_memory_folds_are_views_of_one_copy(egamma_pair):
    """Held in memory, the data is loaded once; folds, splits and prediction sets index into it."""
    from e2evision.datasets import EgammaHDF5
    from e2evision.training.data import (
        SampleSource,
        TensorRows,
        batch_view,
        load_in_memory,
        make_loader,
    )

    p, e, *_ = egamma_pair
    reader = EgammaHDF5([p, e])
    order = np.random.default_rng(1).permutation(reader.n_samples)[:90]  # unsorted on purpose
    x, y = load_in_memory(reader, order, batch_size=16)  # several partial batches, filled in place
    want_x, want_y = reader.read(order)
    np.testing.assert_array_equal(x.numpy(), want_x)
    np.testing.assert_array_equal(y.numpy(), want_y)

    source = SampleSource(reader, order, limit_gb=1.0)
    rows = np.array([5, 3, 80, 0, 41])
    subset = source.subset(rows)
    assert isinstance(subset, TensorRows) and len(subset) == rows.size
    assert subset.tensors[0].data_ptr() == source._x.data_ptr()  # no copy of the images
    xb, yb = batch_view(subset)[[4, 0, 2]]
    np.testing.assert_array_equal(xb.numpy(), want_x[rows[[4, 0, 2]]])
    np.testing.assert_array_equal(yb.numpy(), want_y[rows[[4, 0, 2]]])
    streamed = SampleSource(reader, order, limit_gb=0.0).subset(rows)  # the same samples from the files
    for a, b in zip(make_loader(subset, 2, shuffle=False, seed=0), make_loader(streamed, 2, shuffle=False, seed=0)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(IndexError, match="rows outside"):
        TensorRows((x, y), [90])


def test_history_sums_losses_on_the_device_like_a_python_float():
    """The epoch's loss sum never leaves the device per step, and is bit-identical to the float sum."""
    from types import SimpleNamespace

    from e2evision.training.callbacks import History

    hist = History(0)
    hist.on_train_epoch_start(None, None)
    losses = torch.rand(50, dtype=torch.float32) * 3
    sizes = [7 if i % 5 else 3 for i in range(50)]
    want = 0.0
    for i, (loss, n) in enumerate(zip(losses, sizes)):
        hist.on_train_batch_end(None, None, {"loss": loss}, (torch.zeros(n, 1), torch.zeros(n)), i)
        want += float(loss) * n
        if i == 20:  # a checkpoint mid-epoch reads the sum; accumulation continues after it
            state = hist.state_dict()
            assert state["loss_sum"] == want and state["count"] == sum(sizes[:21])
    assert hist.loss_sum == want and hist._count == sum(sizes)
    resumed = History(0)
    resumed.load_state_dict({"rows": [], "loss_sum": 1.5, "count": 4})
    resumed.on_train_batch_end(SimpleNamespace(), None, torch.tensor(0.25), (torch.zeros(2), torch.zeros(2)), 0)
    assert resumed.loss_sum == 1.5 + 0.25 * 2 and resumed._count == 6


class _SlowRows(torch.utils.data.Dataset):
    """In-memory rows whose batches take ``delay`` seconds to arrive (a slow disk or decoder)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, delay: float) -> None:
        self.x, self.y, self.delay = x, y, delay

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, items: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        import time

        time.sleep(self.delay)
        idx = torch.as_tensor(items)
        return self.x[idx], self.y[idx]


def _fit_with_loader_delay(tmp_path: Path, delay: float, monkeypatch) -> tuple[list, list]:
    """Two epochs of a tiny model whose training batches each take ``delay`` s to arrive."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from e2evision.training import data as data_mod
    from e2evision.training.callbacks import History, LoaderWait
    from e2evision.training.data import FoldData

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((48, 1, 8, 8), dtype=np.float32))
    y = torch.from_numpy((np.arange(48) % 2).astype(np.float32))
    cfg = TrainConfig(batch_size=8, max_epochs=2, early_stopping_patience=None, progress=False)
    module = ImageModule(
        create_model("simple_cnn", in_chans=1, img_size=8, num_outputs=1), ChannelNormalizer(1, "none"), cfg
    )
    monkeypatch.setattr(data_mod, "batch_view", lambda ds: _SlowRows(*ds.tensors, delay))
    data = FoldData(
        torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x[:8], y[:8]), batch_size=8, seed=0
    )
    wait, hist = LoaderWait(), History(0)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="logs", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[wait, hist],
        num_sanity_val_steps=0,
        log_every_n_steps=1,  # six steps an epoch: below the default 50 Lightning warns
    )
    trainer.fit(module, datamodule=data)
    return wait.rows, hist.rows


def test_loader_wait_is_measured_per_epoch_and_logged(tmp_path, monkeypatch):
    import csv

    from e2evision.training.callbacks import LoaderWait

    fast, _ = _fit_with_loader_delay(tmp_path / "fast", 0.0, monkeypatch)
    slow, hist = _fit_with_loader_delay(tmp_path / "slow", 0.05, monkeypatch)
    for rows in (fast, slow):
        assert [r["epoch"] for r in rows] == [0, 1] and all(r["steps"] == 6 for r in rows)
        for r in rows:
            assert 0.0 <= r["loader_wait_fraction"] <= 1.0 and r["loader_wait_s"] <= r["train_s"]
    for f, s in zip(fast, slow):  # six batches of 50 ms each: at least 0.3 s of waiting per epoch
        assert s["loader_wait_s"] >= 6 * 0.05  # (the fraction depends on the machine's load: its definition)
        assert s["loader_wait_fraction"] == pytest.approx(s["loader_wait_s"] / s["train_s"], rel=1e-3, abs=1e-6)
        assert s["loader_wait_s"] - f["loader_wait_s"] >= 6 * 0.05 * 0.9
    restored = LoaderWait()
    restored.load_state_dict(LoaderWait.state_dict(type("W", (), {"rows": slow})()))
    assert restored.rows == slow
    # both figures reach the run's loggers once per epoch; the logged train loss is History's
    with open(tmp_path / "slow" / "logs" / "metrics.csv") as fh:
        logged = [row for row in csv.DictReader(fh) if row.get("train_loss")]
    assert [int(r["epoch"]) for r in logged] == [0, 1]
    for row, h, w in zip(logged, hist, slow):
        assert float(row["train_loss"]) == pytest.approx(h["train_loss"], rel=1e-6)
        assert float(row["loader_wait_fraction"]) == pytest.approx(w["loader_wait_fraction"], rel=1e-5)
