"""Lower a CNN to the op program the C++ engine's oneDNN backend runs: the ``onednn`` export format.

The file (``*.onednn``) is safetensors: the weights as float32 tensors (``ops.<i>.weight``,
``ops.<i>.bias``) and, in its metadata, the program as JSON: inputs and outputs named as in
preprocess.json, and a list of ops on named values. The C++ backend builds one oneDNN primitive per
op on pre-packed weights (cpp/src/onednn_backend.cpp); that is what makes a small CNN's batch-1
call faster there than through TorchScript or onnxruntime (docs/deployment.md, "Latency").

Ops: ``conv`` (2-d, any stride/padding/dilation/groups), ``linear``, ``pool`` (max, avg; also
adaptive pooling to sizes that divide the input), ``global_pool`` (adaptive pooling to 1×1, the
spatial mean), ``eltwise`` (relu, leaky relu, sigmoid, tanh, silu, gelu, elu, clip, linear a·x+b),
``softmax``, ``add``. Inference batch norm is folded into the convolution before it, or becomes a
1×1 depthwise convolution. The lowering fuses what oneDNN fuses: an element-wise op into the
conv/linear/add before it, and a residual ``conv(x) + y`` into the convolution (a sum post-op).
Anything else (attention, concatenation, products of feature maps, crops, test-time flips, scalar
inputs) is refused with the op named, so only models the program can express are exported; the export is then verified like every
other format, by running the program (with PyTorch's ops, :func:`run_program`) against the training
module within 1e-5, and the engine's oneDNN kernels by ``e2evision verify-cpp``.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from e2evision.export.errors import ExportError

FORMAT_NAME = "e2evision-onednn"
FORMAT_VERSION = "1"

aten = torch.ops.aten


@dataclass
class Op:
    op: str
    src: list[str]
    dst: str
    attrs: dict[str, Any] = field(default_factory=dict)
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    post: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Flat:
    """A 4-d value flattened to (N, C·H·W): only a linear layer may read it (as a 4-d input)."""

    base: str


ELTWISE: dict[Any, Callable[[tuple, dict], dict[str, Any]]] = {
    aten.relu.default: lambda a, k: {"mode": "relu"},
    aten.relu_.default: lambda a, k: {"mode": "relu"},
    aten.sigmoid.default: lambda a, k: {"mode": "sigmoid"},
    aten.sigmoid_.default: lambda a, k: {"mode": "sigmoid"},
    aten.tanh.default: lambda a, k: {"mode": "tanh"},
    aten.tanh_.default: lambda a, k: {"mode": "tanh"},
    aten.silu.default: lambda a, k: {"mode": "silu", "alpha": 1.0},
    aten.silu_.default: lambda a, k: {"mode": "silu", "alpha": 1.0},
    aten.leaky_relu.default: lambda a, k: {"mode": "relu", "alpha": float(a[1] if len(a) > 1 else 0.01)},
    aten.leaky_relu_.default: lambda a, k: {"mode": "relu", "alpha": float(a[1] if len(a) > 1 else 0.01)},
    aten.elu.default: lambda a, k: _elu(a),
    aten.elu_.default: lambda a, k: _elu(a),
    aten.hardtanh.default: lambda a, k: {"mode": "clip", "alpha": float(a[1]), "beta": float(a[2])},
    aten.hardtanh_.default: lambda a, k: {"mode": "clip", "alpha": float(a[1]), "beta": float(a[2])},
    aten.gelu.default: lambda a, k: {"mode": "gelu_tanh" if k.get("approximate", "none") == "tanh" else "gelu"},
}
IDENTITY = {aten.dropout.default, aten.clone.default, aten.contiguous.default, aten.alias.default}
SHAPE_ONLY = {aten.sym_size.int, aten._assert_scalar.default, aten.sym_constrain_range_for_size.default}
RESHAPES = {aten.flatten.using_ints, aten.view.default, aten.reshape.default, aten._unsafe_view.default}


def _elu(args: tuple) -> dict[str, Any]:
    if len(args) > 2 and (float(args[2]) != 1.0 or (len(args) > 3 and float(args[3]) != 1.0)):
        raise ExportError("onednn export: elu with scale or input_scale other than 1 is not supported")
    return {"mode": "elu", "alpha": float(args[1] if len(args) > 1 else 1.0)}


def _pair(v: Any, default: int) -> list[int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return [default, default]
    if isinstance(v, int):
        return [v, v]
    v = [int(x) for x in v]
    return v * 2 if len(v) == 1 else v


class _Lowering:
    """Walks the exported ATen graph once, producing ops on named values."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        self.ep = program
        sig = program.graph_signature
        self.const: dict[str, torch.Tensor] = {}
        state = program.state_dict
        for node_name, target in sig.inputs_to_parameters.items():
            self.const[node_name] = state[target].detach()
        for node_name, target in sig.inputs_to_buffers.items():
            self.const[node_name] = (state.get(target) if target in state else program.constants[target]).detach()
        for node_name, target in sig.inputs_to_lifted_tensor_constants.items():
            self.const[node_name] = program.constants[target].detach()
        self.env: dict[str, Any] = {}  # fx node name -> value name, Flat, constant tensor, or tuple
        self.ops: list[Op] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []

    def fresh(self, hint: str) -> str:
        return f"v{len(self.ops)}_{hint}"

    def value(self, arg: Any, node: torch.fx.Node) -> str:
        got = self.env.get(arg.name) if isinstance(arg, torch.fx.Node) else None
        if isinstance(got, str):
            return got
        if isinstance(got, Flat):
            raise ExportError(f"onednn export: {node.target} reads a flattened feature map; only a linear layer may")
        raise ExportError(f"onednn export: {node.target} ({node.name}) takes a constant or non-tensor input")

    def tensor(self, arg: Any, node: torch.fx.Node) -> torch.Tensor:
        """A weight or bias: must be a constant of the model, not computed in the graph."""
        got = self.env.get(arg.name) if isinstance(arg, torch.fx.Node) else None
        if not isinstance(got, torch.Tensor):
            raise ExportError(f"onednn export: {node.target} ({node.name}) has weights computed in the graph")
        return got

    def run(self) -> None:
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                if node.name in self.const:
                    self.env[node.name] = self.const[node.name]
                else:
                    self.env[node.name] = node.name
                    self.inputs.append(node.name)
            elif node.op == "call_function":
                self.call(node)
            elif node.op == "output":
                for out in node.args[0]:
                    self.outputs.append(self.value(out, node))

    def emit(self, node: torch.fx.Node, op: Op) -> None:
        self.ops.append(op)
        self.env[node.name] = op.dst
        # In-place ATen ops (relu_) also rebind their input: later readers see the new value.
        if str(node.target).split(".")[-2].endswith("_") and node.args and isinstance(node.args[0], torch.fx.Node):
            self.env[node.args[0].name] = op.dst

    def call(self, node: torch.fx.Node) -> None:
        t, a, k = node.target, node.args, node.kwargs
        if (
            t in SHAPE_ONLY
            or node.meta.get("val") is None
            or not isinstance(node.meta.get("val"), (torch.Tensor, tuple, list))
        ):
            self.env[node.name] = None  # batch-size arithmetic and runtime asserts: nothing to run
        elif t is operator.getitem:
            self.env[node.name] = self.env[a[0].name][a[1]]
        elif t in IDENTITY:
            self.env[node.name] = self.env[a[0].name]
        elif t in (aten.conv2d.default, aten.convolution.default):
            self.conv(node)
        elif t in ELTWISE:
            self.emit(node, Op("eltwise", [self.value(a[0], node)], self.fresh("act"), ELTWISE[t](a, k)))
        elif t in (aten.max_pool2d.default, aten.avg_pool2d.default):
            self.pool(node)
        elif t in (aten.adaptive_max_pool2d.default, aten.adaptive_avg_pool2d.default):
            self.adaptive_pool(node)
        elif t is aten.mean.dim:
            self.mean(node)
        elif t in (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default):
            self.batch_norm(node)
        elif t in RESHAPES:
            self.reshape(node)
        elif t is aten.linear.default:
            src = self.env[a[0].name]
            if not isinstance(src, Flat) and len(a[0].meta["val"].shape) != 2:
                raise ExportError(
                    f"onednn export: {t} ({node.name}) on a {len(a[0].meta['val'].shape)}-d input (a linear layer "
                    "over the last axis of a feature map) has no oneDNN lowering: export torchscript or aoti"
                )
            base = src.base if isinstance(src, Flat) else self.value(a[0], node)
            bias = self.tensor(a[2], node) if len(a) > 2 and a[2] is not None else None
            self.emit(node, Op("linear", [base], self.fresh("fc"), {}, self.tensor(a[1], node), bias))
        elif t in (aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor):
            self.arith(node)
        elif t in (aten.sub.Tensor, aten.div.Tensor) and not isinstance(a[1], torch.fx.Node):
            s = float(a[1])  # by a number: x - s, x / s as a·x + b
            alpha = float(k.get("alpha", 1.0))
            attrs = (
                {"mode": "linear", "alpha": 1.0, "beta": -s * alpha}
                if t is aten.sub.Tensor
                else {"mode": "linear", "alpha": 1.0 / s, "beta": 0.0}
            )
            self.emit(node, Op("eltwise", [self.value(a[0], node)], self.fresh("affine"), attrs))
        elif t in (aten.softmax.int, aten._softmax.default):
            rank = len(node.args[0].meta["val"].shape)
            axis = int(a[1]) % rank
            self.emit(node, Op("softmax", [self.value(a[0], node)], self.fresh("softmax"), {"axis": axis}))
        else:
            raise ExportError(
                f"onednn export: the op {t} ({node.name}) has no oneDNN lowering; the format covers CNNs "
                "(conv, pooling, linear, element-wise, softmax, residual add): export torchscript or aoti"
            )

    def conv(self, node: torch.fx.Node) -> None:
        a = list(node.args)
        if node.target is aten.convolution.default:
            if a[6]:
                raise ExportError("onednn export: transposed convolutions are not supported")
            stride, padding, dilation, groups = a[3], a[4], a[5], a[8]
        else:
            a += [None] * (7 - len(a))
            stride, padding, dilation, groups = a[3] or [1], a[4] or [0], a[5] or [1], a[6] or 1
        if isinstance(padding, str):
            raise ExportError(f"onednn export: padding={padding!r} is not supported (give it as numbers)")
        weight = self.tensor(a[1], node)
        if weight.dim() != 4:
            raise ExportError(
                f"onednn export: only 2-d convolutions are supported ({node.name} has a {weight.dim()}-d weight)"
            )
        bias = self.tensor(a[2], node) if a[2] is not None else None
        attrs = {
            "stride": _pair(stride, 1),
            "padding": _pair(padding, 0),
            "dilation": _pair(dilation, 1),
            "groups": int(groups),
        }
        self.emit(node, Op("conv", [self.value(a[0], node)], self.fresh("conv"), attrs, weight, bias))

    def adaptive_pool(self, node: torch.fx.Node) -> None:
        """To 1×1: a global pooling; to k×k from a map whose sides k divides: a plain pooling."""
        mode = "max" if node.target is aten.adaptive_max_pool2d.default else "avg"
        h, w = (int(d) for d in node.args[0].meta["val"].shape[-2:])
        oh, ow = _pair(node.args[1], 1)
        src = self.value(node.args[0], node)
        if (oh, ow) == (1, 1):
            op = Op("global_pool", [src], self.fresh("gpool"), {"mode": mode})
        elif h % oh == 0 and w % ow == 0:
            k = [h // oh, w // ow]
            op = Op("pool", [src], self.fresh("pool"), {"mode": mode, "kernel": k, "stride": k, "padding": [0, 0]})
        else:
            raise ExportError(
                f"onednn export: {node.target} ({node.name}) pools {h}×{w} to {oh}×{ow} (only to sizes that "
                "divide the input): export torchscript or aoti"
            )
        self.emit(node, op)
        if mode == "max":  # (values, indices): the indices are never read by an inference graph
            self.env[node.name] = (op.dst, None)

    def mean(self, node: torch.fx.Node) -> None:
        """The mean over both spatial axes (timm's global average pooling)."""
        rank = len(node.args[0].meta["val"].shape)
        dims = sorted(int(d) % rank for d in node.args[1])
        keepdim = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("keepdim", False))
        if rank != 4 or dims != [2, 3]:
            raise ExportError(
                f"onednn export: {node.target} ({node.name}) over axes {dims} (only the two spatial ones)"
            )
        op = Op("global_pool", [self.value(node.args[0], node)], self.fresh("gpool"), {"mode": "avg"})
        self.emit(node, op)
        if not keepdim:  # (N, C): only a linear layer may read it
            self.env[node.name] = Flat(op.dst)

    def batch_norm(self, node: torch.fx.Node) -> None:
        """Inference batch norm, folded into the convolution before it when that is its only reader
        (in float64, then float32), else a 1×1 depthwise convolution: a per-channel a·x + b."""
        a = list(node.args)
        if node.target is aten.batch_norm.default:
            x, gamma, beta, mean, var, training, eps = a[0], a[1], a[2], a[3], a[4], a[5], a[7]
            if training:
                raise ExportError(f"onednn export: {node.name} is a batch norm in training mode")
        else:
            x, gamma, beta, mean, var, eps = a[0], a[1], a[2], a[3], a[4], a[6]
        mu, var = self.tensor(mean, node).double(), self.tensor(var, node).double()
        g = self.tensor(gamma, node).double() if gamma is not None else torch.ones_like(mu)
        b = self.tensor(beta, node).double() if beta is not None else torch.zeros_like(mu)
        scale = g / torch.sqrt(var + float(eps))
        shift = b - mu * scale
        producer = self.ops[-1] if self.ops else None
        src = self.value(x, node)
        fold = producer is not None and producer.op == "conv" and producer.dst == src and not producer.post
        if fold and isinstance(x, torch.fx.Node) and len(x.users) == 1:
            w = producer.weight.double() * scale.view(-1, 1, 1, 1)
            bias = producer.bias.double() * scale + shift if producer.bias is not None else shift
            producer.weight, producer.bias = w.float(), bias.float()
            self.env[node.name] = producer.dst
        else:
            c = scale.numel()
            attrs = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": c}
            self.emit(node, Op("conv", [src], self.fresh("bn"), attrs, scale.float().view(c, 1, 1, 1), shift.float()))
        if node.target is not aten.batch_norm.default:  # (out, mean, invstd) tuple
            self.env[node.name] = (self.env[node.name], None, None)

    def pool(self, node: torch.fx.Node) -> None:
        a = list(node.args) + [None] * 7
        kernel = _pair(a[1], 1)
        stride = _pair(a[2], 0) if a[2] else kernel
        padding = _pair(a[3], 0)
        if node.target is aten.max_pool2d.default:
            if _pair(a[4], 1) != [1, 1] or a[5]:
                raise ExportError("onednn export: max pooling with dilation or ceil_mode is not supported")
            mode = "max"
        else:
            if a[4] or a[6] is not None:
                raise ExportError("onednn export: avg pooling with ceil_mode or divisor_override is not supported")
            mode = "avg" if a[5] is None or a[5] else "avg_exclude_padding"
        attrs = {"mode": mode, "kernel": kernel, "stride": stride, "padding": padding}
        self.emit(node, Op("pool", [self.value(node.args[0], node)], self.fresh("pool"), attrs))

    def reshape(self, node: torch.fx.Node) -> None:
        src = node.args[0]
        shape_in = src.meta["val"].shape
        shape_out = node.meta["val"].shape
        if len(shape_out) < 1 or len(shape_in) < 1:
            raise ExportError(f"onednn export: {node.target} ({node.name}) reshapes away the batch axis")
        per_in = int(np.prod([int(d) for d in shape_in[1:]]))
        per_out = int(np.prod([int(d) for d in shape_out[1:]]))
        if per_in != per_out:
            raise ExportError(
                f"onednn export: {node.target} ({node.name}) changes the batch axis ({tuple(shape_in)} -> {tuple(shape_out)})"
            )
        got = self.env[src.name]
        same = tuple(int(d) for d in shape_in[1:]) == tuple(int(d) for d in shape_out[1:])
        if same or (len(shape_in) <= 2 and len(shape_out) <= 2) or (isinstance(got, Flat) and len(shape_out) == 2):
            self.env[node.name] = got  # a row-major view of the same rows
        elif len(shape_out) == 2:
            self.env[node.name] = Flat(self.value(src, node))
        else:
            raise ExportError(
                f"onednn export: {node.target} ({node.name}) reshapes a feature map to {tuple(shape_out)}; "
                "only a flatten into a linear layer has a oneDNN lowering: export torchscript or aoti"
            )

    def arith(self, node: torch.fx.Node) -> None:
        a, k = node.args, node.kwargs
        lhs, rhs = self.env.get(a[0].name) if isinstance(a[0], torch.fx.Node) else a[0], a[1]
        rhs = self.env.get(rhs.name) if isinstance(rhs, torch.fx.Node) else rhs
        is_add = node.target in (aten.add.Tensor, aten.add_.Tensor)
        alpha = float(k.get("alpha", 1.0))
        if isinstance(lhs, str) and isinstance(rhs, str):
            if not is_add or alpha != 1.0:
                raise ExportError(f"onednn export: {node.target} of two feature maps is not supported (only a + b)")
            if tuple(a[0].meta["val"].shape[1:]) != tuple(a[1].meta["val"].shape[1:]):
                raise ExportError(f"onednn export: {node.name} adds tensors of different shapes (no broadcasting)")
            self.emit(node, Op("add", [lhs, rhs], self.fresh("add")))
            return
        if not is_add and isinstance(rhs, str):
            lhs, rhs = rhs, lhs
        scalar = rhs.item() if isinstance(rhs, torch.Tensor) and rhs.numel() == 1 else rhs
        if not isinstance(lhs, str) or not isinstance(scalar, (int, float)):
            raise ExportError(f"onednn export: {node.target} ({node.name}) with a non-scalar constant is not supported")
        attrs = (
            {"mode": "linear", "alpha": 1.0, "beta": float(scalar) * alpha}
            if is_add
            else {"mode": "linear", "alpha": float(scalar), "beta": 0.0}
        )
        self.emit(node, Op("eltwise", [lhs], self.fresh("affine"), attrs))


def _consumers(ops: list[Op], outputs: list[str]) -> dict[str, int]:
    count: dict[str, int] = {}
    for op in ops:
        for v in op.src + [p["value"] for p in op.post if p["mode"] == "sum"]:
            count[v] = count.get(v, 0) + 1
    for v in outputs:
        count[v] = count.get(v, 0) + 1
    return count


def _append_post(post: list[dict[str, Any]], new: dict[str, Any]) -> None:
    """Append an element-wise post-op, merging a·(c·x + d) + b into one linear op: oneDNN 2.6's GEMM
    inner product applied the first of two chained linear post-ops twice (measured: 40·x then
    x + 172.5 gave 40·40·x)."""
    if post and new["mode"] == "linear" and post[-1]["mode"] == "linear":
        last = post[-1]
        a, b = float(new.get("alpha", 1.0)), float(new.get("beta", 0.0))
        last["alpha"], last["beta"] = a * float(last.get("alpha", 1.0)), a * float(last.get("beta", 0.0)) + b
        return
    post.append(new)


def fuse(ops: list[Op], outputs: list[str]) -> list[Op]:
    """Element-wise ops into the conv/linear/add before them; ``conv(x) + y`` into the conv (sum)."""
    changed = True
    while changed:
        changed = False
        producer = {op.dst: op for op in ops}
        uses = _consumers(ops, outputs)
        for i, op in enumerate(ops):
            src = producer.get(op.src[0]) if op.src else None
            if op.op == "eltwise" and src is not None and src.op in ("conv", "linear", "add") and uses[op.src[0]] == 1:
                _append_post(src.post, dict(op.attrs))
                src.dst = op.dst
                del ops[i]
                changed = True
                break
            if op.op == "add":
                for j in (0, 1):
                    conv = producer.get(op.src[j])
                    other = op.src[1 - j]
                    if conv is not None and conv.op == "conv" and not conv.post and uses[op.src[j]] == 1:
                        conv.post = [{"mode": "sum", "value": other}] + op.post
                        conv.dst = op.dst
                        # the conv must run after `other` is written: move it to the add's place
                        ops.remove(conv)
                        ops.insert(ops.index(op), conv)
                        ops.remove(op)
                        changed = True
                        break
                if changed:
                    break
    return ops


def lower(
    graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The program (JSON-able) and its tensors for ``graph`` (an ExportGraph in eval mode)."""
    if getattr(graph, "test_time", None) is not None:
        raise ExportError(
            "onednn export: the run evaluates with test-time flips (augment.test_time), which the oneDNN "
            "program cannot express: export torchscript or aoti"
        )
    if len(input_names) != 1:
        raise ExportError("onednn export: models with scalar inputs are not supported (image input only)")
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    try:
        with torch.no_grad():
            program = torch.export.export(graph, example, dynamic_shapes={input_names[0]: {0: batch}})
    except Exception as err:  # the exporter's own failures come as many types
        raise ExportError(f"onednn export: torch.export failed: {type(err).__name__}: {err}") from err
    low = _Lowering(program)
    low.run()
    ops = fuse(low.ops, low.outputs)
    tensors: dict[str, torch.Tensor] = {}
    records = []
    for i, op in enumerate(ops):
        rec: dict[str, Any] = {"op": op.op, "src": op.src, "dst": op.dst, **op.attrs}
        for key, t in (("weight", op.weight), ("bias", op.bias)):
            if t is not None:
                tensors[f"ops.{i}.{key}"] = t.detach().to(torch.float32).contiguous().clone()
                rec[key] = f"ops.{i}.{key}"
        if op.post:
            rec["post"] = op.post
        records.append(rec)
    prog = {
        "inputs": [{"name": n, "value": v} for n, v in zip(input_names, low.inputs)],
        "outputs": [{"name": n, "value": v} for n, v in zip(output_names, low.outputs)],
        "ops": records,
    }
    return prog, tensors


def write_program(path: Path, program: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "program": json.dumps(program)}
    save_file(tensors, str(path), metadata=meta)


def read_program(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise ExportError(f"{path}: not a safetensors file ({err})") from err
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: not an e2evision oneDNN export of version {FORMAT_VERSION} (metadata {sorted(meta)})"
        )
    return json.loads(meta["program"]), tensors


_ELTWISE_TORCH: dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    "relu": lambda x, a, b: torch.where(x > 0, x, x * a),
    "sigmoid": lambda x, a, b: torch.sigmoid(x),
    "tanh": lambda x, a, b: torch.tanh(x),
    "silu": lambda x, a, b: x * torch.sigmoid(a * x),
    "gelu": lambda x, a, b: F.gelu(x),
    "gelu_tanh": lambda x, a, b: F.gelu(x, approximate="tanh"),
    "elu": lambda x, a, b: F.elu(x, alpha=a),
    "clip": lambda x, a, b: x.clamp(a, b),
    "linear": lambda x, a, b: x * a + b,
}


def _eltwise(x: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
    return _ELTWISE_TORCH[spec["mode"]](x, float(spec.get("alpha", 0.0)), float(spec.get("beta", 0.0)))


def _step(op: dict[str, Any], vals: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    x = vals[op["src"][0]]
    w = tensors.get(op.get("weight", ""))
    b = tensors.get(op.get("bias", ""))
    kind = op["op"]
    if kind == "conv":
        return F.conv2d(x, w, b, op["stride"], op["padding"], op["dilation"], op["groups"])
    if kind == "linear":
        return F.linear(x.flatten(1), w.flatten(1), b)
    if kind == "pool":
        if op["mode"] == "max":
            return F.max_pool2d(x, op["kernel"], op["stride"], op["padding"])
        return F.avg_pool2d(x, op["kernel"], op["stride"], op["padding"], count_include_pad=op["mode"] == "avg")
    if kind == "global_pool":
        return x.amax(dim=(2, 3), keepdim=True) if op["mode"] == "max" else x.mean(dim=(2, 3), keepdim=True)
    if kind == "eltwise":
        return _eltwise(x, op)
    if kind == "softmax":
        return torch.softmax(x, dim=op["axis"])
    return x + vals[op["src"][1]]  # add


def run_program(
    program: dict[str, Any], tensors: dict[str, torch.Tensor], feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The program's outputs computed with PyTorch's ops: checks the lowering (not oneDNN's kernels)."""
    vals: dict[str, torch.Tensor] = {}
    for spec in program["inputs"]:
        vals[spec["value"]] = torch.from_numpy(np.ascontiguousarray(feeds[spec["name"]], dtype=np.float32))
    with torch.inference_mode():
        for op in program["ops"]:
            y = _step(op, vals, tensors)
            for p in op.get("post", []):
                y = y + vals[p["value"]] if p["mode"] == "sum" else _eltwise(y, p)
            vals[op["dst"]] = y
    return {spec["name"]: vals[spec["value"]].numpy() for spec in program["outputs"]}


def write_onednn(
    graph: nn.Module, example: tuple[torch.Tensor, ...], path: Path, input_names: list[str], output_names: list[str]
) -> None:
    """Lower ``graph`` and write it to ``path`` (ExportError naming the first op that cannot be lowered)."""
    program, tensors = lower(graph, example, input_names, output_names)
    write_program(path, program, tensors)


def onednn_runner(path: Path, output_names: list[str]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    program, tensors = read_program(path)
    got = [o["name"] for o in program["outputs"]]
    if got != output_names:
        raise ExportError(f"{path}: program outputs {got} are not {output_names}")
    return lambda feeds: run_program(program, tensors, feeds)
