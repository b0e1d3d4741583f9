"""Relational knowledge distillation (Park et al. 2019): the student keeps the teacher's distances and angles.

    L = CE(y_hat, y) + s(t) * ( sum_j [ beta_d * RKD-D(s_j, t_j) + beta_a * RKD-A(s_j, t_j) ]  [+ alpha * T^2 * KL] )

    RKD-D = mean_{i,k} huber( ||s_i - s_k|| / mu_s ,  ||t_i - t_k|| / mu_t )        (mu: mean distance in the batch)
    RKD-A = mean_{i,k,l} huber( <e^s_ki, e^s_li> , <e^t_ki, e^t_li> ),   e_ki = (s_k - s_i) / ||s_k - s_i||

``s_j`` / ``t_j`` are embeddings of the paired student and teacher layers (``student_layers`` / ``teacher_layers``:
block indices or module paths of the one tap mechanism, default the last block of each), averaged over their
positions (a spatial map's pixels, a token map's tokens) and compared within the batch: only relations between
examples are matched, so widths and scales may differ and nothing is learned besides the student. The teacher runs
online on the student's batch (see :mod:`.feature_distil`). Defaults ``beta_d = 25``, ``beta_a = 50`` are the
weights of the RKD row of Tian et al.'s (2020) distillation benchmark; Park et al. use 1 and 2 for metric learning.
The angle term costs O(N^2 D + N^3) per batch: fine for batches of a few hundred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..config import param
from .distil_losses import rkd_angle_loss, rkd_distance_loss
from .feature_distil import LayerParams, OnlineDistillation
from .registry import register


@dataclass
class RKDParams(LayerParams):
    distance_weight: float = field(default=25.0, metadata=param(ge=0))  # beta_d
    angle_weight: float = field(default=50.0, metadata=param(ge=0))  # beta_a


@register
class RKD(OnlineDistillation):
    name: ClassVar[str] = "rkd"
    summary: ClassVar[str] = "match the distances and angles between examples in the teacher's embedding (RKD)"
    Params: ClassVar[type] = RKDParams

    def distil_loss(self, s_maps: list[torch.Tensor], t_maps: list[torch.Tensor], logits: torch.Tensor,
                    t_logits: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for s, t in zip(s_maps, t_maps, strict=True):
            if self.params.distance_weight > 0:
                total = total + self.params.distance_weight * rkd_distance_loss(s, t)
            if self.params.angle_weight > 0:
                total = total + self.params.angle_weight * rkd_angle_loss(s, t)
        return total
