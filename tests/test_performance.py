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
from e2evision.rundir import config_hash
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
    assert (mine.precision, mine.channels_last, mine.compile, mine.matmul_precision) == \
        ("16-mixed", False, True, "highest")
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
    over = [f"data.paths={json.dumps([str(p), str(e)])}", "train.max_epochs=1", "train.folds=2",
            "train.progress=false", "train.batch_size=32", "model.kwargs.widths=[16, 32]"]
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
        [sys.executable, str(ROOT / "benchmarks/gpu_throughput.py"), "--models", "resnet15", "--geometries", "2x16",
         "--batch", "4", "--steps", "2", "--warmup", "1", "--rounds", "2", "--modes", "default,fp32,fp32+cl", "--device", "cpu",
         "--peak-tflops", "0.5", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
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
