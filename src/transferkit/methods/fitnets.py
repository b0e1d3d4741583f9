"""FitNets hints (Romero et al. 2015): the student's inner layer, through a learned projection, regresses the teacher's.

    L = CE(y_hat, y) + s(t) * ( beta / J * sum_j MSE( r_j( resize_j(S_j(x)) ), T_j(x) )  [+ alpha * T^2 * KL] )

``S_j`` / ``T_j`` are the paired student and teacher layers (``student_layers`` / ``teacher_layers``, block indices
or module paths of the one tap mechanism; default the last block of each), read on the student's own batch (the
teacher online, see :mod:`.feature_distil`). ``r_j`` is the regressor of the paper, owned by the method and trained
with it (at the head's learning rate; not saved with the student):

* spatial maps ``(N, C_s, H_s, W_s)`` -> ``(N, C_t, H_t, W_t)``: the student map is first brought to the teacher's
  grid (adaptive average pooling when it is at least as fine in both directions, bilinear interpolation otherwise;
  :func:`.distil_losses.resize_to`), then a 1x1 convolution maps ``C_s`` to ``C_t`` channels. Both steps are linear
  and act on different axes, so their order does not change the result; resizing first is cheaper;
* token maps ``(N, L, D)``: the same with a linear layer on ``D`` (and the token axis resized);
* vectors, or outputs of different kinds (a map and a vector: both averaged over their positions): a linear layer.

MSE is the mean over elements, so ``beta`` does not depend on the layer sizes; the default ``beta = 100`` is the
hint weight of Tian et al.'s (2020) distillation benchmark (RepDistiller), where the mean per element is small.
The paper trains in two stages (hints first, then KD); here the hint is one term of a single loss from the first step
(as torchdistill and most later work do), with the optional logit-KD term of the base class for the second stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..config import param
from .distil_losses import grid_of, hint_loss, resize_to, same_kind, width_of
from .feature_distil import LayerParams, OnlineDistillation
from .registry import register


@dataclass
class FitNetsParams(LayerParams):
    beta: float = field(default=100.0, metadata=param(ge=0))  # weight of the hint (MSE) term


class Projection(nn.Module):
    """``r_j``: a 1x1 convolution for spatial maps, a linear layer for token maps and vectors."""

    def __init__(self, s_shape: torch.Size, t_shape: torch.Size) -> None:
        super().__init__()
        same = len(s_shape) == len(t_shape) and len(s_shape) in (2, 3, 4)
        kind = len(s_shape) if same else 2  # outputs of different kinds are compared as vectors
        self.map = nn.Conv2d(width_of(s_shape), width_of(t_shape), kernel_size=1) if kind == 4 else \
            nn.Linear(width_of(s_shape), width_of(t_shape))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.map(s)


@register
class FitNets(OnlineDistillation):
    name: ClassVar[str] = "fitnets"
    summary: ClassVar[str] = "distil a teacher's inner layers through a learned projection (FitNets hints)"
    Params: ClassVar[type] = FitNetsParams

    def build_owned(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        self.projections = nn.ModuleList(Projection(s, t) for s, t in zip(s_shapes, t_shapes, strict=True))

    def distil_loss(self, s_maps: list[torch.Tensor], t_maps: list[torch.Tensor], logits: torch.Tensor,
                    t_logits: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for proj, s, t in zip(self.projections, s_maps, t_maps, strict=True):
            s, t = same_kind(s, t)
            s = resize_to(s, grid_of(t))
            total = total + hint_loss(proj(s.float()), t)
        return self.params.beta * total / len(self.projections)
