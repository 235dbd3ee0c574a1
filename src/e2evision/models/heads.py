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

    def forward(self, features: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_scalars:
            if scalars is None:
                raise ValueError(f"this model was built with num_scalars={self.num_scalars}: pass scalars")
            features = torch.cat([features, scalars.to(features.dtype)], dim=1)
        elif scalars is not None:
            raise ValueError("this model was built without scalar inputs (num_scalars=0)")
        return self.fc(self.drop(features))
