"""The one contract every source model satisfies.

A :class:`Backbone` maps a batch of inputs to features of shape ``(N, D)``. Around that it tells the rest of the
toolkit what it needs to know without looking inside: the feature size, its ordered blocks (input to output, for
freezing the first k and for per-block learning rates), its preprocessing (image size and normalisation, or the
tokenizer), the pretrained classifier if it has one, and a JSON spec from which :func:`transferkit.backbones.build`
rebuilds the same architecture (without downloading anything: saved models carry their own weights).
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.base import Modality


@dataclass
class Preprocessing:
    """How raw inputs become the tensors a backbone expects.

    Images: resized to ``image_size`` (square), grey turned to 3 channels, scaled to [0, 1], then normalised with
    ``mean``/``std``. Text: tokenised with the tokenizer at ``tokenizer`` (a local folder or hub name), padded and
    truncated to ``max_length``. Tabular: used as float32 as it is.
    """

    modality: Modality
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tokenizer: str | None = None
    max_length: int = 128
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean) if self.mean is not None else None
        d["std"] = list(self.std) if self.std is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        d = dict(d)
        for k in ("mean", "std"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


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
