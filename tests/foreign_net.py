"""A small image network shaped like one ported from TensorFlow, for tests of ``module:`` backbones.

As in such ports: every stage sits in one top-level ``features`` container (so the top-level children give one block
with all the parameters), batch-norm keeps Keras' ``momentum=0.99`` (PyTorch's 0.01), and the network ends in a
classifier. Its "published" weights are a fixed draw from a seeded generator, so a re-initialised copy differs.
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.backbones import ModuleBackbone, Preprocessing

WIDTH = 8
FEATURES = 8 * WIDTH
CLASSES = 10
SIZE = 32
PRE = Preprocessing("image", image_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _stage(cin: int, cout: int, stride: int, momentum: float | None) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=momentum),
        nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=momentum), nn.ReLU(),
    )  # fmt: skip


class PortedNet(nn.Module):
    """Stem and four stages in ``features``, global pooling, a ``CLASSES``-way classifier; ``(N, 3, 32, 32)`` in."""

    def __init__(self, bn_momentum: float | None = 0.01) -> None:
        super().__init__()
        w = WIDTH
        stem = nn.Sequential(nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w, momentum=bn_momentum))
        self.features = nn.Sequential(
            stem, _stage(w, w, 1, bn_momentum), _stage(w, 2 * w, 2, bn_momentum), _stage(2 * w, 4 * w, 2, bn_momentum),
            _stage(4 * w, 8 * w, 2, bn_momentum),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(FEATURES, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def published_weights() -> dict[str, torch.Tensor]:
    """The network's "published" checkpoint: every tensor (classifier included) from a fixed seeded draw."""
    g = torch.Generator().manual_seed(1234)
    net = PortedNet()
    return {k: (torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v)
            for k, v in net.state_dict().items()}


def headless(net: PortedNet) -> tuple[PortedNet, nn.Module]:
    """The network returning its features, and its classifier (the source head)."""
    head, net.classifier = net.classifier, nn.Identity()
    return net, head


def build() -> ModuleBackbone:
    """The ``module:tests.foreign_net:build`` backbone: published weights loaded in the function, default blocks."""
    net = PortedNet(bn_momentum=0.1)
    net.load_state_dict(published_weights())
    net, head = headless(net)
    return ModuleBackbone(net, FEATURES, PRE, source_head=head)


def build_plain() -> ModuleBackbone:
    """Random start and TensorFlow's batch-norm momentum kept (weights come from ``model.weights``)."""
    net, head = headless(PortedNet())
    return ModuleBackbone(net, FEATURES, PRE, source_head=head)
