"""Shared classifier/regressor head: pooled features, optionally fused with scalar inputs."""

from __future__ import annotations

import torch
from torch import nn


class FusionHead(nn.Module):
    """``Linear([features, scalars]) -> num_outputs``.

    Scalars (pt, ieta, iphi, lensing features, ...) are concatenated to the pooled image features
    before the last layer, as the E2E regression models do. With ``num_scalars == 0`` this is a
    plain linear head and ``scalars`` must be ``None``.
    """

    def __init__(self, in_features: int, num_outputs: int, num_scalars: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_scalars = num_scalars
        self.num_outputs = num_outputs
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features + num_scalars, num_outputs)
        # Small initial logits: un-normalised CNN features (no batch norm in ResNet-15) times a
        # default-initialised layer start training with confident, random predictions.
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_scalars:
            if scalars is None:
                raise ValueError(f"this model was built with num_scalars={self.num_scalars}: pass scalars")
            features = torch.cat([features, scalars.to(features.dtype)], dim=1)
        elif scalars is not None:
            raise ValueError("this model was built without scalar inputs (num_scalars=0)")
        return self.fc(self.drop(features))


class ImageModel(nn.Module):
    """The interface every registered model shares (timm's, plus scalar fusion).

    Subclasses set ``self.num_features`` and ``self.head`` (a :class:`FusionHead`) and implement
    ``forward_features``; the rest is the same for every architecture.
    """

    num_features: int
    head: FusionHead

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled image features ``(N, num_features)``."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(features, scalars)

    def forward(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), scalars)

    def reset_classifier(self, num_outputs: int, num_scalars: int | None = None) -> None:
        """A fresh head (e.g. for fine-tuning to another task), keeping the feature extractor."""
        n_s = self.head.num_scalars if num_scalars is None else num_scalars
        self.head = FusionHead(self.num_features, num_outputs, n_s)

    def no_weight_decay(self) -> set[str]:
        """Parameter names the optimiser must not decay (besides biases and norms)."""
        return set()
