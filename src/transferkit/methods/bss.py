"""BSS, Batch Spectral Shrinkage (Chen et al. 2019): suppress the spectral components the target data cannot support.

    L(w) = CE(y_hat, y) + s(t) * eta * sum_{i=1..k} sigma_{-i}(F)^2

``F`` is the ``(N, D)`` matrix of the batch's backbone features (the head's input) and ``sigma_{-i}`` its ``i``-th
smallest singular value (``torch.linalg.svdvals``, in float32). With few labelled examples, fine-tuning transfers
the source features' small spectral components too, and those carry the source-specific (negative) transfer; shrinking
them regularises without tying the weights to the source. The paper uses ``k = 1`` and ``eta = 0.001``.

A batch of ``N`` examples has ``min(N, D)`` singular values; at most ``min(N, D) - 1`` of them are shrunk (the largest
is never penalised, so a batch of one example adds nothing). No copy of the source model is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..config import param
from ..model import TransferModel, forward_with_features
from .base import StepOutput
from .registry import register
from .regularised import RegularisedMethod, ScheduleParams


@dataclass
class BSSParams(ScheduleParams):
    eta: float = field(default=0.001, metadata=param(ge=0))  # weight of the shrinkage term
    k: int = field(default=1, metadata=param(gt=0))  # how many of the smallest singular values are shrunk


def spectral_shrinkage(features: torch.Tensor, k: int) -> torch.Tensor:
    """``sum_{i=1..k} sigma_{-i}^2`` of the feature matrix (``k`` capped at ``min(N, D) - 1``)."""
    f = features.flatten(1)
    with torch.autocast(device_type=f.device.type, enabled=False):
        sigma = torch.linalg.svdvals(f.float())  # descending
    k = min(k, sigma.numel() - 1)
    if k <= 0:
        return sigma.sum() * 0.0
    return sigma[-k:].pow(2).sum()


@register
class BSS(RegularisedMethod):
    name: ClassVar[str] = "bss"
    summary: ClassVar[str] = "fine-tune shrinking the k smallest singular values of the batch features (BSS)"
    Params: ClassVar[type] = BSSParams

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x, y = self.mix(batch)
        feats, logits = forward_with_features(model, x)
        ce = self.classification_loss(logits, y)
        reg = self.params.eta * spectral_shrinkage(feats, self.params.k)
        return StepOutput(ce + self.strength() * reg, logits)
