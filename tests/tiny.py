"""A tiny random image backbone for fast unit tests of mechanics (never for claims about accuracy)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transferkit.backbones.base import Backbone, Preprocessing


class TinyConvBackbone(Backbone):
    """Three conv blocks (each with batch-norm) and global pooling: 16-d features."""

    def __init__(self) -> None:
        super().__init__()
        self.b0 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.feature_dim = 16
        self.preprocessing = Preprocessing("image", image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b2(self.b1(self.b0(x))).mean(dim=(2, 3))

    def blocks(self) -> list[nn.Module]:
        return [self.b0, self.b1, self.b2]

    def spec(self) -> dict[str, Any]:
        return {"kind": "tiny-test"}


def make_tiny() -> TinyConvBackbone:
    """Factory for the ``module:tests.tiny:make_tiny`` backbone name (a user's own model)."""
    return TinyConvBackbone()
