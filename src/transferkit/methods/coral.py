"""Deep CORAL (Sun & Saenko 2016, "Deep CORAL: correlation alignment for deep domain adaptation"): match the
second-order statistics of source and target features.

    L = CE(h(f(x_s)), y_s) + trade_off * ||C_s - C_t||_F^2 / (4 d^2)

    C = (F^T F - (1^T F)^T (1^T F) / n) / (n - 1)      (the batch covariance of the d-dimensional features)

The paper applies it to the last layer (the logits, ``d = C``); here it applies to the backbone's features by
default (``on: features``), the common choice of later re-implementations for a linear head, and to the logits with
``on: logits``. Because of the ``1 / (4 d^2)`` the term is small for wide features, so ``trade_off`` scales with
``d``: the paper tunes it so that the two losses are about equal at the end of training.

Logged per step: ``coral`` (the adaptation term before ``trade_off``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..adaptation.losses import coral_loss
from ..config import param
from ..model import TransferModel
from .base import StepOutput
from .domain_adaptive import AdaptationMethod, AdaptationParams
from .registry import register

LAYERS = ("features", "logits")


@dataclass
class CORALParams(AdaptationParams):
    # features | logits: which layer's covariances to match
    on: str = field(default="features", metadata=param(choices=LAYERS))


@register
class CORAL(AdaptationMethod):
    name: ClassVar[str] = "coral"
    summary: ClassVar[str] = "match the covariances of source and target features (Deep CORAL)"
    Params: ClassVar[type] = CORALParams

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x_s, y_s = self.mix(batch)
        x_t = self.next_target(self.device_of(model))
        v = self.forward_views(model, x_s, x_t)
        ce = self.classification_loss(v.z_s, y_s)
        coral = coral_loss(v.f_s, v.f_t) if self.params.on == "features" else coral_loss(v.z_s, v.z_t)
        return StepOutput(ce + self.params.trade_off * coral, v.z_s, {"coral": coral.detach()})
