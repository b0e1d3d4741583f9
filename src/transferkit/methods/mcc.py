"""MCC (Jin et al. 2020, "Minimum class confusion for versatile domain adaptation"): make target predictions
confident and keep different classes apart, with no discriminator and no distribution distance.

    L = CE(h(f(x_s)), y_s) + trade_off * L_MCC(z_t)

On the target logits ``z_t`` at temperature ``T`` (``g = softmax(z_t / T)``), with certainty weights
``w_i = 1 + exp(-H(g_i))`` normalised to mean 1 over the batch, the class correlation matrix
``M = G^T diag(w) G`` (``C x C``) is normalised per row and its off-diagonal mass, per class, is the loss::

    L_MCC = (sum_{c,c'} M~_cc' - sum_c M~_cc) / C

``M~_cc'`` measures how often the model hesitates between classes ``c`` and ``c'`` on the target batch; minimising
it sharpens predictions without collapsing them to one class (the row normalisation keeps rare classes as heavy as
common ones). ``T = 2.5`` and ``trade_off = 1`` are the paper's defaults. See :mod:`transferkit.adaptation.losses`.

Source and target go through the model in one pass (as in the authors' code), so batch-norm sees both domains.

Logged per step: ``mcc`` (the adaptation term before ``trade_off``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..adaptation.losses import mcc_loss
from ..config import param
from ..model import TransferModel
from .base import StepOutput
from .domain_adaptive import AdaptationMethod, AdaptationParams
from .registry import register


@dataclass
class MCCParams(AdaptationParams):
    temperature: float = field(default=2.5, metadata=param(gt=0))  # T, the softmax temperature of the class correlation


@register
class MCC(AdaptationMethod):
    name: ClassVar[str] = "mcc"
    summary: ClassVar[str] = "minimum class confusion on target predictions (MCC)"
    Params: ClassVar[type] = MCCParams

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x_s, y_s = self.mix(batch)
        x_t = self.next_target(self.device_of(model))
        v = self.forward_views(model, x_s, x_t)
        ce = self.classification_loss(v.z_s, y_s)
        mcc = mcc_loss(v.z_t, self.params.temperature)
        return StepOutput(ce + self.params.trade_off * mcc, v.z_s, {"mcc": mcc.detach()})
