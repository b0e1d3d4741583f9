"""MCD (Saito, Watanabe, Ushiku, Harada 2018, "Maximum classifier discrepancy for unsupervised domain adaptation"):
two classifiers that disagree on target examples far from the source support, and features that make them agree.

With the features ``f = G(x)``, two heads ``F1`` (the model's own head) and ``F2`` (a second head of the same kind,
owned by the method, initialised differently) and the discrepancy of their class probabilities ``p1``, ``p2``::

    d(p1, p2) = mean_i 1/C sum_c | p1_ic - p2_ic |

the paper trains in three steps per batch:

    A. G, F1, F2:  min  CE(F1(G(x_s)), y_s) + CE(F2(G(x_s)), y_s)
    B. F1, F2:     min  CE(F1(G(x_s)), y_s) + CE(F2(G(x_s)), y_s) - d(F1(G(x_t)), F2(G(x_t)))   (G fixed)
    C. G:          min  d(F1(G(x_t)), F2(G(x_t)))          (F1, F2 fixed; repeated num_k = 4 times)

The training loop here does one forward, one backward and one optimizer step per batch (the method contract: the
loop knows no method, and a method has no optimizer of its own), so the three steps are played as one loss with a
gradient reversal ``R_lambda`` (identity forward, ``-lambda`` times the gradient backward) between the target
features and both heads::

    L = CE(F1(f_s), y_s) + CE(F2(f_s), y_s) - trade_off * d( F1(R_lambda(f_t)), F2(R_lambda(f_t)) )

The gradient of ``L`` with respect to the heads is that of step B (minimise the source error, maximise the target
discrepancy); with respect to ``G`` it is step A's source gradient plus ``trade_off * lambda`` times the gradient
of ``d`` itself (the reversal turns ``-d`` into ``+d``), i.e. step C, with ``lambda`` standing in for its ``num_k``
repetitions. So one step is a simultaneous gradient descent-ascent on the same min-max game rather than the
alternating one (the choice that keeps MCD inside the one loop; the alternation's extra forward passes are saved
too). ``lambda`` warms up as in DANN, ``lambda(p) = max_coeff * (2 / (1 + exp(-gamma p))
- 1)`` over the share of training done ``p``, so that the heads first learn the source (step A dominates) before
the game starts. Defaults: ``trade_off = 1`` (the paper's weight of ``d`` in step B), ``max_coeff = 1``,
``gamma = 10``.

Predictions use ``F1`` (the model's head; the saved model has one head). Why hand-written: the loss is a few lines
on top of torch; skada's deep module has no MCD, and Transfer-Learning-Library's runs its own three-optimizer loop.

Logged per step: ``discrepancy`` (``d`` on the target batch), ``grl_coeff`` (``lambda``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..config import param
from ..model import TransferModel, unwrap
from .base import StepOutput
from .domain_adaptive import AdaptationParams, ReversedHeadMethod
from .registry import register


def classifier_discrepancy(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """``d(p1, p2) = mean |softmax(z1) - softmax(z2)|`` over examples and classes (MCD's L1 discrepancy)."""
    return (torch.softmax(z1.float(), dim=1) - torch.softmax(z2.float(), dim=1)).abs().mean()


@dataclass
class MCDParams(AdaptationParams):
    """The weight of the discrepancy, and the warm-up of its reversal into the features."""

    gamma: float = field(default=10.0, metadata=param(ge=0))  # steepness of the reversal warm-up; 0: max_coeff always
    # the reversal coefficient's ceiling: how strongly the features follow step C (the paper's num_k steps)
    max_coeff: float = field(default=1.0, metadata=param(gt=0))


@register
class MCD(ReversedHeadMethod):
    name: ClassVar[str] = "mcd"
    summary: ClassVar[str] = "maximum classifier discrepancy between two heads, in one reversal step (MCD)"
    Params: ClassVar[type] = MCDParams

    def build_modules(self, model: TransferModel) -> None:
        self.second_head = self.head_like_models(model)

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x_s, y_s = self.mix(batch)
        x_t = self.next_target(self.device_of(model))
        v = self.forward_views(model, x_s, x_t)
        ce = self.classification_loss(v.z_s, y_s) + self.classification_loss(self.second_head(v.f_s), y_s)
        f_t = self.grl(v.f_t)
        disc = classifier_discrepancy(unwrap(model).head(f_t), self.second_head(f_t))
        logs = {"discrepancy": disc.detach(), "grl_coeff": self.grl.coeff}
        return StepOutput(ce - self.params.trade_off * disc, v.z_s, logs)
