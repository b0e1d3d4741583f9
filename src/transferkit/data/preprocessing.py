"""How raw inputs become the tensors a backbone expects: the :class:`Preprocessing` a backbone declares.

It lives in ``data/`` because the loaders and transforms read it (image size, mean/std, tokenizer) while the
backbones only declare it: ``transferkit.backbones`` imports it from here (and re-exports it for users), so data
never imports backbones. Free of torch, like the rest of reading data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .base import Modality


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
