"""DIST (Huang et al. 2022): knowledge distillation from a stronger teacher by correlation, not exact match.

    L = CE(y_hat, y) + s(t) * ( beta * T^2 * (1 - mean_i rho(p_s[i,:], p_t[i,:]))        (inter-class relation)
                             + gamma * T^2 * (1 - mean_c rho(p_s[:,c], p_t[:,c])) )       (intra-class relation)

``p = softmax(z / T)`` of the student's and the teacher's logits on the student's own batch (the teacher online, see
:mod:`.feature_distil`) and ``rho`` Pearson's correlation: the student has to rank the classes of each example, and
the examples of each class, as the teacher does, but not reproduce its probabilities exactly, which the paper finds
more robust than KL when the teacher is much stronger than the student. Defaults ``beta = gamma = 1``, ``T = 1``
(those of the authors' implementation); on Animal-MNIST with a small CNN student and 10 labels per class,
``T = 4``, ``beta = gamma = 2`` brought the student closer to the teacher on all 3 seeds tried, the defaults on 2.
Reads only the logits, so any torch teacher works (no layers are tapped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..config import param
from .distil_losses import dist_losses
from .feature_distil import OnlineDistillation, TeacherParams
from .registry import register


@dataclass
class DISTParams(TeacherParams):
    beta: float = field(default=1.0, metadata=param(ge=0))  # weight of the inter-class term
    gamma: float = field(default=1.0, metadata=param(ge=0))  # weight of the intra-class term
    tau: float = field(default=1.0, metadata=param(gt=0))  # temperature T of the correlations


@register
class DIST(OnlineDistillation):
    name: ClassVar[str] = "dist"
    summary: ClassVar[str] = "match the teacher's class and example rankings by correlation (DIST)"
    Params: ClassVar[type] = DISTParams
    uses_layers: ClassVar[bool] = False

    def distil_loss(self, s_maps: list[torch.Tensor], t_maps: list[torch.Tensor], logits: torch.Tensor,
                    t_logits: torch.Tensor) -> torch.Tensor:
        inter, intra = dist_losses(logits, t_logits, self.params.tau)
        return self.params.beta * inter + self.params.gamma * intra
