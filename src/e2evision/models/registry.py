"""A timm-like model registry: ``create_model(name, in_chans=..., img_size=..., num_outputs=...)``.

Every model takes any channel count and image size and returns logits of shape
``(N, num_outputs)``; extra scalar inputs (pt, m0, ieta, iphi, ...) go in as ``forward(x, scalars)``
when the model was built with ``num_scalars > 0``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    family: str
    defaults: dict[str, Any] = field(default_factory=dict)
    source: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, description: str, family: str, source: str = "", **defaults: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder(in_chans, img_size, num_outputs, **kwargs)`` under ``name``.

    ``defaults`` are preset keyword arguments (e.g. a ViT's width and depth); user kwargs win.
    """

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, builder, description, family, dict(defaults), source)
        return builder

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def create_model(
    name: str,
    *,
    in_chans: int,
    img_size: int | tuple[int, int],
    num_outputs: int = 1,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model for ``in_chans`` × ``img_size`` inputs and ``num_outputs`` logits."""
    entry = get_entry(name)
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    size = _pair(img_size)
    if min(size) < 8:
        raise ValueError(f"img_size must be at least 8 pixels per side, got {img_size}")
    args = {**entry.defaults, **kwargs}
    model = entry.builder(in_chans=in_chans, img_size=size, num_outputs=num_outputs, **args)
    model.model_name = name  # type: ignore[attr-defined]
    model.model_kwargs = {"in_chans": in_chans, "img_size": list(size), "num_outputs": num_outputs, **args}  # type: ignore[attr-defined]
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, in_chans: int, img_size: int | tuple[int, int]) -> int:
    """Forward FLOPs for one image (a multiply-add counts 2), from PyTorch's operator counter.

    Runs on the meta device when the model lives there, so no memory or compute is spent.
    """
    from torch.utils.flop_counter import FlopCounterMode

    h, w = _pair(img_size)
    device = next(model.parameters()).device
    x = torch.zeros(1, in_chans, h, w, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def model_table(
    in_chans: int = 2, img_size: int = 32, num_outputs: int = 1, *, flops: bool = False, pattern: str = "*"
) -> list[dict[str, Any]]:
    """One row per registered model: name, family, parameters (and FLOPs) at the given geometry."""
    rows = []
    for name in list_models(pattern):
        entry = _REGISTRY[name]
        if entry.family == "scalars":  # takes no image: no per-geometry size to report
            continue
        with torch.device("meta"):  # count without allocating weights
            model = create_model(name, in_chans=in_chans, img_size=img_size, num_outputs=num_outputs)
        row: dict[str, Any] = {
            "name": name,
            "family": entry.family,
            "params": count_parameters(model),
            "input": [in_chans, *_pair(img_size)],
            "description": entry.description,
            "source": entry.source,
        }
        if flops:
            row["flops"] = count_flops(model, in_chans, img_size)
        rows.append(row)
    return rows


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))
