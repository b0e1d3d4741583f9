"""DANN (Ganin et al. 2016, "Domain-adversarial training of neural networks"): features the domains cannot tell apart.

A domain discriminator ``D`` learns to tell source features (label 1) from target features (label 0); a gradient
reversal layer between the backbone and ``D`` makes the backbone learn the opposite, features on which ``D`` fails,
while the head keeps them useful for the source labels::

    L = CE(h(f(x_s)), y_s) + trade_off * L_adv( D(R_lambda(f(x_s))), D(R_lambda(f(x_t))) )

    L_adv = 1/2 [ mean_i BCE(D_i^s, 1) + mean_j BCE(D_j^t, 0) ]
    lambda(p) = 2 / (1 + exp(-gamma p)) - 1       (p: share of training done, gamma = 10)

``R_lambda`` is the identity forward and multiplies the gradient by ``-lambda`` backward
(:mod:`transferkit.adaptation.losses`), so one backward pass trains ``D`` to minimise ``L_adv`` and the backbone to
maximise it. The schedule keeps the adversarial signal off while ``D`` is still noise. ``D`` is an MLP
(``hidden`` wide, ``layers`` deep, dropout), built in ``setup`` from the backbone's feature size and trained at the
head's learning rate.

Logged per step: ``transfer_loss`` (``L_adv``), ``domain_acc`` (the discriminator's accuracy; 0.5 means the features
no longer tell the domains apart) and ``grl_coeff`` (``lambda``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..adaptation.losses import (
    DomainDiscriminator,
    GradientReversal,
    dann_schedule,
    domain_accuracy,
    domain_adversarial_loss,
)
from ..config import param
from ..model import TransferModel
from .base import StepOutput
from .domain_adaptive import AdaptationMethod, AdaptationParams
from .registry import register


@dataclass
class DiscriminatorParams(AdaptationParams):
    """The adversarial weight, the GRL schedule and the discriminator's shape."""

    # steepness of the GRL schedule lambda(p); 0: lambda = 1 throughout
    gamma: float = field(default=10.0, metadata=param(ge=0))
    hidden: int = field(default=1024, metadata=param(gt=0))  # width of the discriminator's hidden layers
    layers: int = field(default=2, metadata=param(ge=0))  # hidden layers of the discriminator
    # dropout after each hidden layer (ignored with batch_norm)
    dropout: float = field(default=0.5, metadata=param(ge=0, lt=1))
    batch_norm: bool = False  # Linear-BatchNorm-ReLU hidden layers instead of Linear-ReLU-Dropout


class AdversarialMethod(AdaptationMethod):
    """DANN and CDAN: a discriminator behind a scheduled gradient reversal layer."""

    Params: ClassVar[type] = DiscriminatorParams

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self.grl = GradientReversal(0.0)

    def discriminator_input_dim(self, model: TransferModel) -> int:
        return self.feature_dim(model)

    def build_modules(self, model: TransferModel) -> None:
        p = self.params
        self.discriminator = DomainDiscriminator(self.discriminator_input_dim(model), p.hidden, p.layers, p.dropout,
                                                 p.batch_norm)

    def coefficient(self) -> float:
        """``lambda(p)`` at the current progress (1 throughout with ``gamma = 0``)."""
        return 1.0 if self.params.gamma == 0 else dann_schedule(self.progress, self.params.gamma)

    def on_step_start(self, step: int, total_steps: int) -> None:
        super().on_step_start(step, total_steps)
        self.grl.coeff = self.coefficient()

    def discriminate(self, h_s: torch.Tensor, h_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Discriminator logits of both domains, behind the gradient reversal, in one pass."""
        d = self.discriminator(self.grl(torch.cat([h_s, h_t])))
        return d[: h_s.shape[0]], d[h_s.shape[0]:]


@register
class DANN(AdversarialMethod):
    name: ClassVar[str] = "dann"
    summary: ClassVar[str] = "domain-adversarial training: a discriminator behind gradient reversal (DANN)"

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x_s, y_s = self.mix(batch)
        x_t = self.next_target(self.device_of(model))
        v = self.forward_views(model, x_s, x_t)
        ce = self.classification_loss(v.z_s, y_s)
        d_s, d_t = self.discriminate(v.f_s, v.f_t)
        transfer = domain_adversarial_loss(d_s, d_t)
        logs = {"transfer_loss": transfer.detach(), "domain_acc": domain_accuracy(d_s, d_t),
                "grl_coeff": self.grl.coeff}
        return StepOutput(ce + self.params.trade_off * transfer, v.z_s, logs)
