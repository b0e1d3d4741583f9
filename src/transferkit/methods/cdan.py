"""CDAN and CDAN+E (Long et al. 2018, "Conditional adversarial domain adaptation"): align the joint of features
and predictions, not only the features.

The discriminator of DANN sees the features alone, so it can be fooled by features that match overall while the
classes are mixed up across domains. CDAN feeds it the multilinear map of features and class probabilities
``g = softmax(h(f))`` (detached, as in the authors' code: the prediction conditions the discriminator, it is not
trained by it)::

    T(f, g) = g (x) f                          (C * d values; outer product)
    T_R(f, g) = (f R_f) * (g R_g) / sqrt(k)    (randomized, k values, when C * d > randomized_threshold)

    L = CE(h(f(x_s)), y_s) + trade_off * L_adv( D(R_lambda(T(f_s, g_s))), D(R_lambda(T(f_t, g_t))) )

with the gradient reversal ``R_lambda`` and schedule ``lambda(p) = 2 / (1 + exp(-gamma p)) - 1`` of DANN
(:mod:`transferkit.methods.dann`). ``T_R`` preserves the inner products of ``T`` in expectation (see
:mod:`transferkit.adaptation.losses`); its random matrices are buffers of the method, saved with it.

CDAN+E (``cdan-e``, or ``entropy: true``) weights each example's adversarial loss by the certainty of its
prediction, ``w = 1 + exp(-H(g))``, normalised to mean 1 within each domain, so that hard-to-classify examples,
whose ``g`` is an unreliable condition, count less.

Defaults, by measurement (issue 16; peer protocol of ``benchmarks/da_peers.py``, 5 seeds x 10 epochs, target
accuracy %): the full map is used up to ``C * d = 8192`` (it was 4096, the authors' cut-off). On MNIST ->
uci-digits (768-d features, 10 classes: 7,680 values) the randomized 1,024-d map gave 69.8 +- 2.5 against
source-only's 69.0 +- 1.2 (+0.8 +- 2.9, behind skada's CDAN at +4.5 +- 2.3, whose map is 4,096-d), the full map
73.9 +- 3.6 (+4.9): a 1,024-d random projection of a 7,680-d map keeps too little of the class conditioning on a mild
shift. ``entropy`` stays off (``cdan-e`` has it) and the reversal schedule is DANN's; both untested against
alternatives here. The result is the moving average of the weights (``ema``, :mod:`.averaging`), as for every
adaptation method.

Logged per step: ``transfer_loss``, ``domain_acc``, ``grl_coeff``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..adaptation.losses import (
    RandomizedMultilinearMap,
    certainty_weights,
    domain_accuracy,
    domain_adversarial_loss,
    multilinear_map,
)
from ..config import param
from ..model import TransferModel
from .base import StepOutput
from .dann import AdversarialMethod, DiscriminatorParams
from .registry import register


@dataclass
class CDANParams(DiscriminatorParams):
    entropy: bool = False  # CDAN+E: weight examples by 1 + exp(-H(g)), normalised per domain
    randomized: bool | None = None  # randomized multilinear map; None: when C * d > randomized_threshold
    randomized_dim: int = field(default=1024, metadata=param(gt=0))  # k, the output size of the randomized map
    # with randomized unset: use the randomized map above this C * d (8192: the full map up to 10 classes x 768-d)
    randomized_threshold: int = field(default=8192, metadata=param(gt=0))


@dataclass
class CDANEParams(CDANParams):
    entropy: bool = True


@register
class CDAN(AdversarialMethod):
    name: ClassVar[str] = "cdan"
    summary: ClassVar[str] = "conditional adversarial adaptation on the features x predictions map (CDAN)"
    Params: ClassVar[type] = CDANParams

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self.random_map: RandomizedMultilinearMap | None = None

    def use_randomized(self, model: TransferModel) -> bool:
        p = self.params
        if p.randomized is not None:
            return bool(p.randomized)
        return self.feature_dim(model) * self.num_classes(model) > p.randomized_threshold

    def discriminator_input_dim(self, model: TransferModel) -> int:
        if self.use_randomized(model):
            return self.params.randomized_dim
        return self.feature_dim(model) * self.num_classes(model)

    def build_modules(self, model: TransferModel) -> None:
        if self.use_randomized(model):
            self.random_map = RandomizedMultilinearMap(self.feature_dim(model), self.num_classes(model),
                                                       self.params.randomized_dim, seed=self.train_config.seed)
        else:
            self.random_map = None
        super().build_modules(model)

    def condition(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``T(f, g)`` or ``T_R(f, g)``."""
        return multilinear_map(f, g) if self.random_map is None else self.random_map(f, g)

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x_s, y_s = self.mix(batch)
        x_t = self.next_target(self.device_of(model))
        v = self.forward_views(model, x_s, x_t)
        ce = self.classification_loss(v.z_s, y_s)
        g_s = torch.softmax(v.z_s.detach().float(), dim=1).to(v.f_s.dtype)
        g_t = torch.softmax(v.z_t.detach().float(), dim=1).to(v.f_t.dtype)
        d_s, d_t = self.discriminate(self.condition(v.f_s, g_s), self.condition(v.f_t, g_t))
        if self.params.entropy:
            transfer = domain_adversarial_loss(d_s, d_t, certainty_weights(g_s), certainty_weights(g_t))
        else:
            transfer = domain_adversarial_loss(d_s, d_t)
        logs = {"transfer_loss": transfer.detach(), "domain_acc": domain_accuracy(d_s, d_t),
                "grl_coeff": self.grl.coeff}
        return StepOutput(ce + self.params.trade_off * transfer, v.z_s, logs)


@register
class CDANE(CDAN):
    name: ClassVar[str] = "cdan-e"
    summary: ClassVar[str] = "CDAN with entropy conditioning: confident examples weigh more (CDAN+E)"
    Params: ClassVar[type] = CDANEParams
