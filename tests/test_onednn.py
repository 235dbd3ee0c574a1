"""The oneDNN program export (e2evision.export.onednn): the lowering, its fusions, its file, its refusals.

The program is run here with PyTorch's ops (``run_program``), which checks the lowering and the
weights; the C++ engine's oneDNN kernels on the same files are checked in test_cpp_engine.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from e2evision.export import ExportError
from e2evision.export.exporters import ExportGraph, ExportGraphWithScalars
from e2evision.export.onednn import lower, read_program, run_program, write_program
from e2evision.models.registry import create_model

TOL = 1e-5


class OpZoo(nn.Module):
    """Every op kind and fusion the program has, on a 2×32×32 image: conv (grouped, dilated,
    strided, bias-less), batch norm folded into a conv and standalone, max and average pooling
    (padding excluded), adaptive pooling to 2×2, the spatial mean, a residual add fused into the
    convolution, adds that cannot be fused (of feature maps, of linear outputs), a flattened 8×2×2
    map into a linear layer, and element-wise ops both fused (leaky ReLU, tanh, sigmoid, ReLU, ELU,
    GELU then clip) and standalone (SiLU)."""

    def __init__(self, outputs: int = 3) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=2)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 2 * 2, 16)
        self.gap = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.bn1(self.c1(x)), 0.1)
        x = F.max_pool2d(x, 3, 2, 1)  # 32 -> 16
        y = torch.tanh(self.grouped(x))  # 16 -> 8
        z = F.relu(self.c2(y) + y)
        w = torch.sigmoid(self.c3(z)) + F.silu(z)
        w = F.elu(self.bn2(F.avg_pool2d(w, 3, 2, 1, count_include_pad=False)), alpha=0.5)  # 8 -> 4
        w = F.adaptive_max_pool2d(w, 2)  # 4 -> 2
        h = F.hardtanh(F.gelu(self.fc1(w.flatten(1)) + self.gap(z.mean((2, 3)))), -0.5, 0.5)
        return self.fc2(h)


def randomise(model: nn.Module, gain: float = 2.0) -> nn.Module:
    """Larger weights than the default init (``gain``), so that every nonlinearity bends, and
    batch-norm statistics far from (0, 1), so that folding them changes the weights."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model


def zoo_graph(task: str = "multiclass", seed: int = 0) -> ExportGraph:
    torch.manual_seed(seed)
    model = randomise(OpZoo(3 if task == "multiclass" else 1))
    return ExportGraph(nn.Identity(), model, task, target_shift=172.5, target_scale=40.0).eval()


#: registry CNNs the program expresses (batch norm folded; adaptive pooling to divisors; timm's mean)
LOWERED = ["resnet18", "vgg11", "simple_cnn", "lenet5"]


def registry_graph(name: str) -> ExportGraph:
    torch.manual_seed(0)
    model = randomise(create_model(name, in_chans=2, img_size=(32, 32)), gain=1.0)
    return ExportGraph(nn.Identity(), model, "binary").eval()


def zoo_names(task: str) -> list[str]:
    return ["value"] if task == "regression" else ["prob", "logit"]


def images(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, (n, 2, 32, 32)).astype(np.float32)


def torch_outputs(graph: nn.Module, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = graph(torch.from_numpy(x))
    return {n: o.numpy() for n, o in zip(names, out)}


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
def test_program_equals_pytorch_and_fuses(task):
    graph = zoo_graph(task)
    names = zoo_names(task)
    example = (torch.from_numpy(images(2)),)
    program, tensors = lower(graph, example, ["image"], names)
    x = images(7)
    got = run_program(program, tensors, {"image": x})
    for name, want in torch_outputs(graph, x, names).items():
        np.testing.assert_allclose(got[name], want, rtol=0, atol=TOL * max(1.0, float(np.abs(want).max())))
    ops = program["ops"]
    kinds = [op["op"] for op in ops]
    convs = [op for op in ops if op["op"] == "conv"]
    assert len(convs) == 5 and kinds.count("linear") == 3 and "batch_norm" not in json.dumps(program)
    assert [p["mode"] for p in convs[0]["post"]] == ["relu"] and convs[0]["post"][0]["alpha"] == pytest.approx(0.1)
    model = graph.model
    folded = model.bn1.weight / torch.sqrt(model.bn1.running_var + model.bn1.eps)
    np.testing.assert_allclose(
        tensors[convs[0]["weight"]], (model.c1.weight * folded.view(-1, 1, 1, 1)).detach(), rtol=1e-6
    )
    assert convs[1]["groups"] == 2 and convs[1]["dilation"] == [2, 2] and convs[1]["stride"] == [2, 2]
    residual = [c for c in convs if c.get("post") and c["post"][0]["mode"] == "sum"]
    assert len(residual) == 1 and [p["mode"] for p in residual[0]["post"]] == ["sum", "relu"]
    assert "bias" not in convs[3] and [p["mode"] for p in convs[3]["post"]] == ["sigmoid"]
    bn2 = convs[4]  # the standalone batch norm: a 1×1 depthwise convolution, with the ELU fused
    assert bn2["groups"] == 8 and tensors[bn2["weight"]].shape == (8, 1, 1, 1) and bn2["post"][0]["mode"] == "elu"
    assert [op["kernel"] for op in ops if op["op"] == "pool"] == [[3, 3], [3, 3], [2, 2]]
    assert [op["mode"] for op in ops if op["op"] == "global_pool"] == ["avg"]
    adds = [op for op in ops if op["op"] == "add"]
    assert len(adds) == 2 and [p["mode"] for p in adds[1]["post"]] == ["gelu", "clip"]
    eltwise = sorted(op["mode"] for op in ops if op["op"] == "eltwise")
    assert eltwise == (["sigmoid", "silu"] if task == "binary" else ["silu"])
    fc1, gap, fc2 = [op for op in ops if op["op"] == "linear"]
    assert tensors[fc1["weight"]].shape == (16, 32)  # read as (16, 8, 2, 2) against the 4-d map
    if task == "regression":  # raw · scale + shift fused into the head, as one linear post-op
        assert [(p["mode"], p["alpha"], p["beta"]) for p in fc2["post"]] == [("linear", 40.0, 172.5)]
    if task == "multiclass":
        assert ops[-1]["op"] == "softmax" and ops[-1]["axis"] == 1


def test_residual_network_lowers_to_one_primitive_per_layer():
    """ResNet-15 as the engine runs it: 15 convolutions (ReLU and the residual add fused), the stem's
    max pool, the global max pool, the head, and the sigmoid; nothing else."""
    model = create_model("resnet15", in_chans=2, img_size=(32, 32)).eval()
    graph = ExportGraph(nn.Identity(), model, "binary").eval()
    program, tensors = lower(graph, (torch.randn(2, 2, 32, 32),), ["image"], ["prob", "logit"])
    kinds = [op["op"] for op in program["ops"]]
    assert kinds.count("conv") == 16  # 15 weight layers + the 1×1 projection shortcut
    assert kinds.count("add") == 0 and kinds.count("eltwise") == 1
    assert sum(1 for op in program["ops"] if op.get("post", [{}])[0].get("mode") == "sum") == 7
    assert kinds[-3:] == ["global_pool", "linear", "eltwise"]
    assert sum(t.numel() for t in tensors.values()) == sum(p.numel() for p in model.parameters())
    x = np.random.default_rng(0).random((5, 2, 32, 32), dtype=np.float32)
    got = run_program(program, tensors, {"image": x})
    want = torch_outputs(graph, x, ["prob", "logit"])
    np.testing.assert_allclose(got["logit"], want["logit"], rtol=0, atol=TOL)


def test_file_round_trip_and_wrong_files(tmp_path: Path):
    graph = zoo_graph("binary")
    program, tensors = lower(graph, (torch.from_numpy(images(2)),), ["image"], ["prob", "logit"])
    path = tmp_path / "m.onednn"
    write_program(path, program, tensors)
    back, back_tensors = read_program(path)
    assert back == json.loads(json.dumps(program))
    assert set(back_tensors) == set(tensors) and all(torch.equal(back_tensors[k], tensors[k]) for k in tensors)

    from safetensors.torch import save_file

    other = tmp_path / "weights.onednn"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(ExportError, match="not an e2evision oneDNN export"):
        read_program(other)
    junk = tmp_path / "junk.onednn"
    junk.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ExportError, match="not a safetensors file"):
        read_program(junk)


def test_models_the_program_cannot_express_are_refused_by_name():
    vit = create_model("vit_micro", in_chans=2, img_size=(32, 32)).eval()
    with pytest.raises(
        ExportError,
        match=r"onednn export: aten\.reshape\.default \(\w+\) reshapes a feature map .* export torchscript or aoti",
    ):
        lower(
            ExportGraph(nn.Identity(), vit, "binary").eval(), (torch.randn(2, 2, 32, 32),), ["image"], ["prob", "logit"]
        )

    class Flips(nn.Module):
        n_views = 2

        def views(self, x):
            return torch.cat([x, x.flip(-1)])

        def average(self, out, n):
            return out.view(2, n, -1).mean(0)

    resnet = create_model("resnet15", in_chans=2, img_size=(32, 32)).eval()
    tta = ExportGraph(nn.Identity(), resnet, "binary", test_time=Flips()).eval()
    with pytest.raises(ExportError, match="test-time flips"):
        lower(tta, (torch.randn(2, 2, 32, 32),), ["image"], ["prob", "logit"])

    fused = create_model("resnet15", in_chans=2, img_size=(32, 32), num_scalars=2).eval()
    graph = ExportGraphWithScalars(nn.Identity(), fused, "binary").eval()
    with pytest.raises(ExportError, match="scalar inputs"):
        lower(graph, (torch.randn(2, 2, 32, 32), torch.randn(2, 2)), ["image", "scalars"], ["prob", "logit"])


def test_fold_ensembles_and_misnamed_files_are_refused_before_anything_loads(tmp_path: Path):
    from e2evision.export import export_model
    from e2evision.export.ensemble import export_ensemble

    with pytest.raises(ExportError, match="every fold's own normaliser"):
        export_ensemble(tmp_path / "no_run", "onednn", tmp_path / "m.onednn")
    with pytest.raises(ExportError, match=r"must be named \*\.onednn"):
        export_model(tmp_path / "no_run", "onednn", tmp_path / "m.pt")


def test_layers_the_program_would_get_wrong_are_refused():
    """A linear layer over the last axis of a feature map, and a convolution whose weights are
    computed in the graph (weight standardisation), have no faithful lowering."""

    class LastAxisLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.fc = nn.Linear(32, 1)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x))).amax(dim=(1, 2))

    class StandardisedConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.fc = nn.Linear(4, 1)

        def forward(self, x):
            w = self.conv.weight
            w = (w - w.mean()) / (w.std() + 1e-5)
            return self.fc(F.adaptive_avg_pool2d(F.conv2d(x, w, self.conv.bias, padding=1), 1).flatten(1))

    example = (torch.randn(2, 2, 32, 32),)
    with pytest.raises(ExportError, match=r"on a 4-d input \(a linear layer over the last axis"):
        lower(ExportGraph(nn.Identity(), LastAxisLinear(), "binary").eval(), example, ["image"], ["prob", "logit"])
    with pytest.raises(ExportError, match=r"onednn export: the op aten\.mean\.default \(mean\) has no oneDNN lowering"):
        lower(ExportGraph(nn.Identity(), StandardisedConv(), "binary").eval(), example, ["image"], ["prob", "logit"])


@pytest.mark.parametrize("name", LOWERED)
def test_registry_cnns_lower_with_batch_norm_folded(name):
    graph = registry_graph(name)
    program, tensors = lower(graph, (torch.from_numpy(images(2)),), ["image"], ["prob", "logit"])
    kinds = {op["op"] for op in program["ops"]}
    assert kinds <= {"conv", "linear", "pool", "global_pool", "eltwise", "add"}
    x = images(4)
    got = run_program(program, tensors, {"image": x})
    want = torch_outputs(graph, x, ["prob", "logit"])
    np.testing.assert_allclose(
        got["logit"], want["logit"], rtol=0, atol=TOL * max(1.0, float(np.abs(want["logit"]).max()))
    )


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("efficientnet_b0", "of two feature maps is not supported"),  # squeeze-excitation's product
        ("inception", r"aten\.cat\.default"),
        ("alexnet", r"pools 3×3 to 6×6 \(only to sizes that divide the input\)"),
    ],
)
def test_registry_cnns_the_program_cannot_express(name, why):
    with pytest.raises(ExportError, match=why):
        lower(registry_graph(name), (torch.from_numpy(images(2)),), ["image"], ["prob", "logit"])


def test_arithmetic_by_numbers_and_trivial_views_lower():
    """x·a + b, x − s and x / s by numbers become one merged a·x + b post-op on the layer before;
    a view to the same shape is no op."""

    class Affine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.fc = nn.Linear(4, 1)

        def forward(self, x):
            y = self.conv(x).view(x.shape[0], 4, 32, 32)
            y = F.adaptive_avg_pool2d(torch.relu(y), 1).flatten(1)
            return (self.fc(y) - 0.25) / 4.0 * 3.0 + 1.0

    graph = ExportGraph(nn.Identity(), Affine(), "regression").eval()
    program, tensors = lower(graph, (torch.from_numpy(images(2)),), ["image"], ["value"])
    fc = [op for op in program["ops"] if op["op"] == "linear"][0]
    assert [p["mode"] for p in fc["post"]] == ["linear"] and len(program["ops"]) == 3
    x = images(5)
    got = run_program(program, tensors, {"image": x})["value"]
    np.testing.assert_allclose(got, torch_outputs(graph, x, ["value"])["value"], rtol=1e-6, atol=TOL)
