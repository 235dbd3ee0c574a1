"""``preprocess.json``: the contract between an exported model and whoever runs it.

It names the inputs and outputs, their shapes (``-1`` is the batch axis) and the per-channel
normalisation that turns raw detector images into what the exported graph expects, in this order
(that of :meth:`e2evision.transforms.ChannelNormalizer.forward`):

1. zero suppression: ``|x| < zero_suppression → 0`` (skipped when null);
2. ``x *= channel_scale[c]`` (fixed per-channel factors; all ones when absent);
3. ``per_sample[c]``: ``"sum"`` divides channel ``c`` of each sample by the sum of its positive
   values, ``"max"`` by its maximum, when that is > 0 (``"none"``, null or absent: skipped);
4. ``log1p[c]``: ``x = sign(x)·log1p(|x| / log1p[c])`` where it is not null;
5. ``x = (x − centre[c]) / scale[c]``;
6. ``x = clamp(x, −clip, clip)`` (skipped when null).

Schema version 2 added steps 3 and 4; version-1 files (four steps) are still read.

Geometry (crop, pad, resize) is part of the exported graph, not of the contract. The same file
serves every format exported from one fold into one directory (``exports`` maps each format to its
file), as weaver-core's ``preprocess.json`` serves the CMSSW producers.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from e2evision.export.errors import ExportError
from e2evision.export.run import LoadedFold
from e2evision.rundir import PREPROCESS_FILE

SCHEMA = "e2evision.preprocess"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
ORDER = ["zero_suppression", "channel_scale", "per_sample", "log1p", "centre_scale", "clip"]
ORDER_V1 = ["zero_suppression", "channel_scale", "centre_scale", "clip"]
FILE_NAME = PREPROCESS_FILE


def output_specs(task: str, num_outputs: int, class_names: list[str]) -> list[dict[str, Any]]:
    """The exported graph's outputs, in order. Binary: the sigmoid probability first, then the logit."""
    if task == "binary":
        positive = class_names[1] if len(class_names) > 1 else "1"
        return [
            {
                "name": "prob",
                "kind": "probability",
                "dtype": "float32",
                "shape": [-1, num_outputs],
                "meaning": f"sigmoid(logit): probability of label 1 ({positive!r}); what the run's predictions.npz holds",
                "classes": class_names or None,
            },
            {
                "name": "logit",
                "kind": "logit",
                "dtype": "float32",
                "shape": [-1, num_outputs],
                "meaning": "log-odds of label 1 (the model's raw output; prob = 1 / (1 + exp(-logit)))",
            },
        ]
    if task == "multiclass":
        return [
            {
                "name": "prob",
                "kind": "probability",
                "dtype": "float32",
                "shape": [-1, num_outputs],
                "meaning": "softmax over the classes",
                "classes": class_names or None,
            },
            {
                "name": "logit",
                "kind": "logit",
                "dtype": "float32",
                "shape": [-1, num_outputs],
                "meaning": "unnormalised class scores (the model's raw output)",
            },
        ]
    return [
        {
            "name": "value",
            "kind": "value",
            "dtype": "float32",
            "shape": [-1, num_outputs],
            "meaning": "regression prediction in the target's units (the training module's forward, "
            "target scaling included)",
        }
    ]


def input_specs(fold: LoadedFold) -> list[dict[str, Any]]:
    c, h, w = fold.image_shape
    norm = fold.normalizer_dict
    specs: list[dict[str, Any]] = [
        {
            "name": "image",
            "kind": "image",
            "dtype": "float32",
            "layout": "NCHW",
            "shape": [-1, c, h, w],
            "channels": fold.channel_names,
            "preprocess": {
                "order": ORDER,
                "mode": norm["mode"],
                "zero_suppression": norm["zero_suppression"],
                "channel_scale": [float(v) for v in norm.get("channel_scale", [1.0] * c)],
                "per_sample": [str(v) for v in norm.get("per_sample") or ["none"] * c],
                "log1p": [None if v is None else float(v) for v in norm.get("log1p") or [None] * c],
                "centre": [float(v) for v in norm["centre"]],
                "scale": [float(v) for v in norm["scale"]],
                "clip": norm["clip"],
            },
        }
    ]
    if fold.num_scalars:
        specs.append(
            {
                "name": "scalars",
                "kind": "scalars",
                "dtype": "float32",
                "shape": [-1, fold.num_scalars],
                "names": fold.scalar_names,
                "preprocess": _scalar_preprocess(fold),
            }
        )
    return specs


def _scalar_preprocess(fold: LoadedFold) -> dict[str, Any] | None:
    """The scalar inputs' normalisation (fitted on the training folds), in the image's format."""
    norm = getattr(fold.module, "scalar_normalizer", None)
    if norm is None:
        return None
    d = norm.to_dict()
    n = len(d["centre"])
    return {
        "order": ORDER,
        "mode": d["mode"],
        "zero_suppression": None,
        "channel_scale": [float(v) for v in d["channel_scale"]],
        "per_sample": ["none"] * n,
        "log1p": [None] * n,
        "centre": [float(v) for v in d["centre"]],
        "scale": [float(v) for v in d["scale"]],
        "clip": None,
    }


def build_contract(fold: LoadedFold) -> dict[str, Any]:
    """preprocess.json for ``fold`` without its ``exports`` table (filled in per format)."""
    from e2evision.utils import package_versions

    versions = package_versions(extra=("onnx", "onnxruntime", "onnxscript"))
    keep = ("python", "e2evision", "torch", "numpy", "onnx", "onnxruntime", "onnxscript", "timm")
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "inputs": input_specs(fold),
        "outputs": output_specs(fold.task, fold.num_outputs, fold.class_names),
        "model": {
            "name": fold.config.model.name,
            "kwargs": fold.config.model.kwargs,
            "task": fold.task,
            "geometry_in_graph": {k: getattr(fold.config.preprocess, k, None) for k in ("crop", "pad", "resize")},
        },
        "source": {
            "run_dir": str(fold.run_dir),
            "run_name": fold.config.name,
            "fold": fold.fold,
            "fold_choice": fold.fold_reason,
            "weights": str(fold.weights_path.relative_to(fold.run_dir)),
            "weights_sha256": fold.weights_sha256,
            "data_fingerprint": (fold.run_info.get("data") or {}).get("fingerprint"),
        },
        "versions": {k: versions[k] for k in keep if k in versions},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "exports": {},
    }


def apply_preprocess(x: np.ndarray, spec: dict[str, Any] | None) -> np.ndarray:
    """Apply one input's ``preprocess`` block to raw values ``(N, C, ...)`` in float32 (NumPy).

    Written from the contract, not from the normaliser's code, so that comparing
    ``exported(apply_preprocess(raw))`` with ``module(raw)`` tests the contract itself.
    """
    x = np.array(x, dtype=np.float32, copy=True)
    if spec is None:
        return x
    order = list(spec.get("order", ORDER))
    if order not in (ORDER, ORDER_V1):
        raise ExportError(f"preprocess order {spec.get('order')} is not the supported {ORDER}")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    zs = spec.get("zero_suppression")
    if zs is not None:
        x[np.abs(x) < np.float32(zs)] = 0.0
    k = spec.get("channel_scale")
    if k is not None:
        x = x * np.asarray(k, dtype=np.float32).reshape(shape)
    for c, mode in enumerate(spec.get("per_sample") or []):
        if mode in (None, "none"):
            continue
        if mode not in ("sum", "max"):
            raise ExportError(f"preprocess per_sample[{c}] {mode!r} is not sum, max or none")
        ch = x[:, c]
        axes = tuple(range(1, ch.ndim))
        ref = np.clip(ch, 0, None).sum(axis=axes) if mode == "sum" else ch.max(axis=axes)
        ref = np.where(ref > 0, ref, 1.0).astype(np.float32)
        x[:, c] = ch / ref.reshape((-1,) + (1,) * (ch.ndim - 1))
    for c, s in enumerate(spec.get("log1p") or []):
        if s is not None:
            x[:, c] = np.sign(x[:, c]) * np.log1p(np.abs(x[:, c]) / np.float32(s))
    x = (x - np.asarray(spec["centre"], dtype=np.float32).reshape(shape)) / np.asarray(
        spec["scale"], dtype=np.float32
    ).reshape(shape)
    clip = spec.get("clip")
    if clip is not None:
        x = np.clip(x, -np.float32(clip), np.float32(clip))
    return x.astype(np.float32, copy=False)


def preprocess_inputs(contract: dict[str, Any], raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every input of the contract, normalised, from raw arrays keyed by input name."""
    out = {}
    for spec in contract["inputs"]:
        if spec["name"] not in raw:
            raise ExportError(f"input {spec['name']!r} is not provided")
        out[spec["name"]] = apply_preprocess(raw[spec["name"]], spec.get("preprocess"))
    return out


def contract_beside(model: str | Path) -> Path:
    """The preprocess.json of an exported model file (beside it) or of an export directory (in it)."""
    path = Path(model)
    return path / FILE_NAME if path.is_dir() else path.parent / FILE_NAME


def read_contract(path: str | Path) -> dict[str, Any]:
    """Read and minimally validate a preprocess.json (the C++ engine validates it fully)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{p}: preprocess.json not found (export writes it beside the model)") from None
    except json.JSONDecodeError as err:
        raise ExportError(f"{p}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ExportError(f"{p}: not an e2evision preprocess.json (schema must be {SCHEMA!r})")
    if data.get("schema_version") not in READABLE_VERSIONS:
        raise ExportError(
            f"{p}: schema_version {data.get('schema_version')!r} is not one of "
            f"{', '.join(map(str, READABLE_VERSIONS))} (this e2evision reads those)"
        )
    for key in ("inputs", "outputs", "source"):
        if key not in data:
            raise ExportError(f"{p}: missing field {key!r}")
    return data


def merge_contract(existing: dict[str, Any], new: dict[str, Any], path: Path) -> dict[str, Any]:
    """Add ``new``'s export entries to the preprocess.json already in the directory.

    Only exports of the same fold (same weights, same contract) may share a directory; anything
    else would silently describe one model with another's normalisation.
    """
    same_weights = existing.get("source", {}).get("weights_sha256") == new["source"]["weights_sha256"]
    same_io = existing.get("inputs") == new["inputs"] and existing.get("outputs") == new["outputs"]
    if not (same_weights and same_io):
        src = existing.get("source", {})
        raise ExportError(
            f"{path} describes another model (run {src.get('run_dir')!r}, fold {src.get('fold')!r}); "
            "export into a separate directory, or remove that preprocess.json and the files it lists"
        )
    merged = dict(new)
    merged["exports"] = {**existing.get("exports", {}), **new["exports"]}
    return merged
