"""The one contract every source model satisfies.

A :class:`Backbone` maps a batch of inputs to features of shape ``(N, D)``. Around that it tells the rest of the
toolkit what it needs to know without looking inside: the feature size, its ordered blocks (input to output, for
freezing the first k and for per-block learning rates), its preprocessing (image size and normalisation, or the
tokenizer), the pretrained classifier if it has one, and a JSON spec from which :func:`transferkit.backbones.build`
rebuilds the same architecture (without downloading anything: saved models carry their own weights).

:class:`~transferkit.data.preprocessing.Preprocessing` is defined in ``transferkit.data`` (the loaders read it) and
re-exported here, so backbones import data and never the reverse.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from ..data.preprocessing import Preprocessing

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "Preprocessing"]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """A feature extractor: ``forward(x) -> (N, feature_dim)``.

    Subclasses set ``feature_dim`` and ``preprocessing`` and implement :meth:`forward`, :meth:`blocks` and
    :meth:`spec`. ``x`` is a float tensor ``(N, C, H, W)`` for images, a dict of tensors (``input_ids``,
    ``attention_mask``...) for text, and a float tensor ``(N, F)`` for tabular data.
    """

    feature_dim: int
    preprocessing: Preprocessing

    @abc.abstractmethod
    def forward(self, x: Any) -> torch.Tensor:
        """Features of shape ``(N, feature_dim)``."""

    @abc.abstractmethod
    def blocks(self) -> list[nn.Module]:
        """Ordered blocks from input to output; together they hold every parameter of the backbone."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able description from which ``transferkit.backbones.build_from_spec`` rebuilds the architecture."""

    def source_head(self) -> nn.Module | None:
        """The pretrained classifier on top of these features, if the source model has one (for LEEP, LwF)."""
        return None

    def source_classes(self) -> list[str] | None:
        """Names of the source head's classes, when known."""
        return None
