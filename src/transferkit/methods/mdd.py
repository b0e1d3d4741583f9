"""MDD (Zhang, Liu, Long, Jordan 2019, "Bridging theory and algorithm for domain adaptation"): margin disparity
discrepancy, measured and minimised with an adversarial auxiliary head.

The theory bounds the target error of a scoring classifier ``h`` by its source margin loss plus the *margin
disparity discrepancy* between the domains, ``d = sup_{h'} ( disp_T(h', h) - disp_S(h', h) )``: how far a second
classifier ``h'`` of the same kind can disagree with ``h`` on the target while agreeing with it on the source. The
algorithm estimates the supremum with an auxiliary head ``h'`` trained to find it and trains the features ``f`` to
shrink it. With ``z = h(f(x))`` (the model's own head), ``z' = h'(R_lambda(f(x)))`` (the auxiliary head behind a
gradient reversal) and the main head's predictions ``y^ = argmax z`` (no gradient)::

    D = gamma * mean_s CE(z'_s, y^_s)  +  mean_t [ -log(1 - softmax(z'_t)[y^_t]) ]

    L = CE(z_s, y_s) + trade_off * D

``h'`` minimises ``D``: it agrees with ``h`` on the source (cross-entropy towards ``y^_s``) and puts little mass on
``h``'s class on the target (the "modified" log loss of the paper, bounded where the plain log loss is not). The
features see ``D`` through the reversal ``R_lambda`` (identity forward, ``-lambda`` times the gradient backward,
:mod:`transferkit.adaptation.losses`), so they maximise it: they make ``h'`` unable to disagree with ``h`` on the
target unless it also disagrees on the source, which is what a small margin disparity discrepancy means. ``gamma``
(``margin``) is the paper's ``exp(rho)``: a larger margin weighs the source agreement more (the theory's margin
``rho``); the main head gets no gradient from ``D`` (``argmax``).

Defaults: ``trade_off = 1`` and a reversal coefficient that warms up from 0 to a ceiling of 0.1 (``lambda(p) =
max_coeff * (2 / (1 + exp(-gamma p)) - 1)``, the DANN schedule scaled; ``p`` the share of training done), as in the
authors' code kept in Transfer-Learning-Library; ``margin = 2`` by measurement rather than their 4 (also skada's):
``digits-cnn`` on MNIST -> MNIST-M-style, 5 epochs of batch 32 (~550 steps, AdamW 1e-3) from a 2-epoch source
model, target accuracy on seeds 3 / 1 / 2 / 4 / 5 was 34.1 / 76.7 / 67.3 / 26.5 / 75.7 % with margin 4 (two seeds
collapsed below source-only's 43.7-50.8 %) and 83.9 / 80.9 / 80.6 / 83.4 / 83.2 % with margin 2. ``h'`` is a
fresh head of the model's own kind (``model.head``: linear or MLP, the same hypothesis class as ``h``, as the theory
needs), trained at the head's learning rate; predictions use ``h`` alone.

Why hand-written: the loss is a few lines on top of torch; the libraries that have it (Transfer-Learning-Library,
skada's skorch-based ``MDD``) bring their own training loop.

Logged per step: ``mdd`` (``D``), ``grl_coeff`` (``lambda``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..config import param
from ..model import TransferModel
from .base import StepOutput
from .domain_adaptive import AdaptationParams, ReversedHeadMethod
from .registry import register


def log_one_minus_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log(1 - softmax(z)[k])`` per row, computed stably as ``logsumexp_{j != k} z_j - logsumexp_j z_j``."""
    z = logits.float()
    others = z.scatter(1, index.view(-1, 1), float("-inf"))
    return torch.logsumexp(others, dim=1) - torch.logsumexp(z, dim=1)


def margin_disparity_loss(z_s: torch.Tensor, z_adv_s: torch.Tensor, z_t: torch.Tensor, z_adv_t: torch.Tensor,
                          margin: float = 4.0) -> torch.Tensor:
    """``D`` of the module docstring: ``margin * CE(z'_s, argmax z_s) - mean log(1 - softmax(z'_t)[argmax z_t])``.

    ``z_s`` / ``z_t`` are the main head's logits (only their argmax is used), ``z_adv_*`` the auxiliary head's.
    """
    y_s = z_s.detach().argmax(1)
    y_t = z_t.detach().argmax(1)
    source = F.cross_entropy(z_adv_s.float(), y_s)
    target = -log_one_minus_softmax(z_adv_t, y_t).mean()
    return margin * source + target


@dataclass
class MDDParams(AdaptationParams):
    """The margin, and the warm-up of the gradient reversal into the features."""

    margin: float = field(default=2.0, metadata=param(gt=0))  # gamma = exp(rho): weight of the source agreement
    gamma: float = field(default=10.0, metadata=param(ge=0))  # steepness of the reversal warm-up; 0: max_coeff always
    max_coeff: float = field(default=0.1, metadata=param(gt=0))  # the reversal coefficient's ceiling


@register
class MDD(ReversedHeadMethod):
    name: ClassVar[str] = "mdd"
    summary: ClassVar[str] = "margin disparity discrepancy with an adversarial auxiliary head (MDD)"
    Params: ClassVar[type] = MDDParams

    def build_modules(self, model: TransferModel) -> None:
        self.adversary = self.head_like_models(model)

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x_s, y_s = self.mix(batch)
        x_t = self.next_target(self.device_of(model))
        v = self.forward_views(model, x_s, x_t)
        ce = self.classification_loss(v.z_s, y_s)
        n = v.f_s.shape[0]
        z_adv = self.adversary(self.grl(torch.cat([v.f_s, v.f_t])))
        mdd = margin_disparity_loss(v.z_s, z_adv[:n], v.z_t, z_adv[n:], self.params.margin)
        logs = {"mdd": mdd.detach(), "grl_coeff": self.grl.coeff}
        return StepOutput(ce + self.params.trade_off * mdd, v.z_s, logs)
