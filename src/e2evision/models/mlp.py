"""A model of the scalar inputs alone: the "features only" arm of an image + features ablation.

It takes the same ``forward(x, scalars)`` call as every image model and ignores the image, so the
trainer, K-fold runner, metrics and report treat it exactly like the fused model it is compared
with. Its head is the same :class:`FusionHead`, fed with an MLP's features and the scalars
themselves (a linear skip path), so with ``hidden=()`` it is logistic (or linear) regression.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from e2evision.models.heads import FusionHead, ImageModel
from e2evision.models.registry import register_model


class ScalarMLP(ImageModel):
    """MLP on the scalar inputs (``num_scalars`` ≥ 1); the image is accepted and not used."""

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        num_scalars: int = 0,
        hidden: Sequence[int] = (64, 64),
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if num_scalars < 1:
            raise ValueError(
                "scalar_mlp reads only scalar inputs: list them in data.scalars "
                "(e.g. the lens features of data.features)"
            )
        layers: list[nn.Module] = []
        width = num_scalars
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.GELU()]
            width = int(h)
        self.mlp = nn.Sequential(*layers)
        self.num_features = width if hidden else 0
        self.head = FusionHead(self.num_features, num_outputs, num_scalars, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("scalar_mlp has no image features: call model(x, scalars)")

    def forward(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        if scalars is None:
            raise ValueError(f"scalar_mlp needs its {self.head.num_scalars} scalar inputs")
        features = self.mlp(scalars) if self.num_features else scalars.new_zeros(scalars.shape[0], 0)
        return self.head(features, scalars)


@register_model(
    "scalar_mlp",
    description="MLP on the scalar inputs only (features-only ablation arm); the image is ignored",
    family="scalars",
    source="seed 004's ablation (image / features / both)",
)
def scalar_mlp(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> ScalarMLP:
    return ScalarMLP(in_chans, img_size, num_outputs, **kwargs)
