"""Several backbones side by side: :class:`FusedBackbone`, the "feature fusion" of the design notes.

It concatenates the features of backbones that read the same inputs (same modality and preprocessing). Its JSON
:meth:`~FusedBackbone.spec` lists its parts, so :func:`transferkit.backbones.build_from_spec` rebuilds it and a model
over it saves and loads like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from .base import Backbone, Preprocessing


def _same_preprocessing(a: Preprocessing, b: Preprocessing) -> str | None:
    """``None`` when two backbones read identical tensors; otherwise the name of the first field that differs."""
    if a.modality != b.modality:
        return "modality"
    for name in ("image_size", "tokenizer", "max_length"):
        if getattr(a, name) != getattr(b, name):
            return name
    for name in ("mean", "std"):
        va, vb = getattr(a, name), getattr(b, name)
        if (va is None) != (vb is None) or (va is not None and (
                len(va) != len(vb) or any(abs(float(p) - float(q)) > 1e-6 for p, q in zip(va, vb)))):
            return name
    return None


class FusedBackbone(Backbone):
    """The concatenated features of several backbones over the same inputs: ``[f_1(x), ..., f_k(x)]``.

    Raises:
        BackboneError: no parts, a part given twice, or parts that read different inputs (modality, image size,
            normalisation, tokenizer).
    """

    def __init__(self, parts: Sequence[Backbone]) -> None:
        super().__init__()
        parts = list(parts)
        if not parts:
            raise BackboneError("FusedBackbone needs at least one backbone to fuse.")
        for p in parts:
            if not isinstance(p, Backbone):
                raise BackboneError(f"FusedBackbone parts must be transferkit Backbones, not {type(p).__name__}.")
        if len({id(p) for p in parts}) != len(parts):
            raise BackboneError(
                "The same backbone object is fused twice; build it twice, or tap two of its layers with TapBackbone."
            )
        first = parts[0].preprocessing
        for i, p in enumerate(parts[1:], start=1):
            diff = _same_preprocessing(first, p.preprocessing)
            if diff is not None:
                raise BackboneError(
                    f"Backbones 0 and {i} cannot be fused: they need different inputs ({diff} differs); fuse "
                    "backbones of the same modality, image size and normalisation (or the same tokenizer)."
                )
        self.parts = nn.ModuleList(parts)
        self.training = parts[0].training
        self.feature_dim = int(sum(p.feature_dim for p in parts))

    @property
    def preprocessing(self) -> Preprocessing:  # type: ignore[override]
        return self.parts[0].preprocessing

    @preprocessing.setter
    def preprocessing(self, value: Preprocessing) -> None:
        for p in self.parts:
            p.preprocessing = value

    def forward(self, x: Any) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=1)

    def blocks(self) -> list[nn.Module]:
        return [b for p in self.parts for b in p.blocks()]

    def spec(self) -> dict[str, Any]:
        return {"type": "fused", "parts": [p.spec() for p in self.parts]}
