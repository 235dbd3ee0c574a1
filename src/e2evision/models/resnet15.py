"""The CMS E2E ResNet-15 (references.md: "Architectures as published").

conv 7×7 (in → 16) + ReLU + max-pool 2; three residual blocks 16 → 16; one block 16 → 32 with
stride 2 and a 1×1 projection shortcut; three blocks 32 → 32; no batch norm; global max pool;
linear 32 → outputs, with extra scalar inputs concatenated before it for regression.
Fifteen weight layers: the stem, 7 blocks × 2 convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from e2evision.models.heads import FusionHead, ImageModel
from e2evision.models.registry import register_model


class ResBlock(nn.Module):
    """conv3×3 – ReLU – conv3×3, plus the (projected) input, then ReLU; no batch norm as published."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = (
            nn.Conv2d(in_ch, out_ch, 1, stride=stride) if (stride != 1 or in_ch != out_ch) else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act(self.conv1(x)))
        return self.act(out + self.shortcut(x))


class ResNet15(ImageModel):
    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        widths: tuple[int, int] = (16, 32),
        blocks_per_stage: int = 3,
        num_scalars: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        w1, w2 = widths
        self.img_size = img_size
        self.stem = nn.Sequential(nn.Conv2d(in_chans, w1, 7, padding=3), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        layers: list[nn.Module] = [ResBlock(w1, w1) for _ in range(blocks_per_stage)]
        layers.append(ResBlock(w1, w2, stride=2))
        layers.extend(ResBlock(w2, w2) for _ in range(blocks_per_stage))
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.num_features = w2
        self.head = FusionHead(w2, num_outputs, num_scalars, drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled image features ``(N, num_features)``."""
        return self.pool(self.blocks(self.stem(x))).flatten(1)


@register_model(
    "resnet15",
    description="CMS E2E ResNet-15: 7 residual blocks (16→32 ch), no batch norm, global max pool",
    family="cnn",
    source="CMS E2E (references.md)",
)
def resnet15(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> ResNet15:
    return ResNet15(in_chans, img_size, num_outputs, **kwargs)
