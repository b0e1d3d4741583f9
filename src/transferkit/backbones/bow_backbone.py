"""A bag-of-words text featuriser as a backbone: the classical baseline every text encoder must beat.

Features are hashed counts of the tokenizer's word pieces (the MiniLM tokenizer, which ships offline):

    x_j = log(1 + #{t : mask_t = 1, h(id_t) = j}),  h(id) = (id * 2654435761) mod D,  f = x / ||x||_2

for j = 0..D-1 (D = 4096 by default). The hashing trick (Weinberger et al. 2009) keeps the featuriser stateless: no
vocabulary is fitted on the target data, so it is a frozen feature extractor like any pretrained backbone and fits
the same cache, ranking and probe machinery; sublinear term frequency and L2 normalisation are the usual TF-IDF
choices without the document-frequency part (which would need fitting). Special tokens ([CLS], [SEP]) are
counted too; they add the same constant to every text and do not change a linear probe.

Written by hand because scikit-learn's HashingVectorizer works on strings outside the tensor pipeline; this one
takes the same tokenised batches as every other text backbone, so it runs through the one loader and extractor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Backbone, Preprocessing

_MULTIPLIER = 2654435761  # Knuth's multiplicative hash constant


class _Buckets(nn.Module):
    """Holds the bucket of every vocabulary id as a buffer (no parameters: nothing to train or freeze)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        ids = torch.arange(vocab_size, dtype=torch.int64)
        self.register_buffer("bucket", (ids * _MULTIPLIER) % dim, persistent=False)


class BowBackbone(Backbone):
    """Hashed bag of word pieces, ``log1p`` term frequency, L2-normalised; ``feature_dim`` = ``dim``."""

    def __init__(self, tokenizer: str, *, dim: int = 4096, max_length: int = 256, vocab_size: int = 30522) -> None:
        super().__init__()
        self.feature_dim = int(dim)
        self.vocab_size = int(vocab_size)
        self.max_length = int(max_length)
        self.tokenizer_path = str(tokenizer)
        self.buckets = _Buckets(self.vocab_size, self.feature_dim)
        self.preprocessing = Preprocessing("text", tokenizer=self.tokenizer_path, max_length=self.max_length)

    def forward(self, x: Any) -> torch.Tensor:
        ids = x["input_ids"].clamp(0, self.vocab_size - 1)
        mask = x.get("attention_mask")
        weight = torch.ones_like(ids, dtype=torch.float32) if mask is None else mask.to(torch.float32)
        counts = torch.zeros(ids.shape[0], self.feature_dim, dtype=torch.float32, device=ids.device)
        counts.scatter_add_(1, self.buckets.bucket[ids], weight)
        feats = torch.log1p(counts)
        return feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def blocks(self) -> list[nn.Module]:
        return [self.buckets]

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "type": "bow", "dim": self.feature_dim, "tokenizer": self.tokenizer_path,
            "max_length": self.max_length, "vocab_size": self.vocab_size,
        }
        catalog = getattr(self, "catalog_name", None)
        if catalog is not None:
            spec["catalog"] = catalog
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> BowBackbone:
        return cls(spec["tokenizer"], dim=spec["dim"], max_length=spec["max_length"], vocab_size=spec["vocab_size"])
