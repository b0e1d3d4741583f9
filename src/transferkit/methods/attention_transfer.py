"""Attention transfer (Zagoruyko and Komodakis 2017): match where the teacher's inner layers are active.

    Q_j(x) = sum_c |A_jc(x)|^p                        (a spatial map of layer j's activity, p = 2)
    L = CE(y_hat, y) + s(t) * ( beta / 2 * sum_j mean_{i,k} ( q_s,j - q_t,j )^2  [+ alpha * T^2 * KL] )
    q_j = vec(Q_j) / || vec(Q_j) ||_2

``A_j`` are the paired student and teacher layers (``student_layers`` / ``teacher_layers``: block indices or module
paths of the one tap mechanism, default the last block of each), read on the student's own batch (the teacher
online, see :mod:`.feature_distil`). Widths may differ (the maps sum over channels); the student's attention map is
brought to the teacher's grid before normalising (adaptive average pooling when it is at least as fine, bilinear
interpolation otherwise). The paper writes the norm of the difference; the authors' code (and this) takes its square
averaged over positions, which their ``beta = 1000`` is scaled for. Token maps ``(N, L, D)`` attend over tokens;
pooled vectors, and maps with a single position (the last stage of a deep network on small images: MobileNetV2's
``features.18`` is 1x1 at 32 px), have constant attention and are refused. No parameters of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..config import param
from ..errors import ConfigError
from .distil_losses import attention_loss
from .feature_distil import LayerParams, OnlineDistillation
from .registry import register


@dataclass
class AttentionParams(LayerParams):
    beta: float = field(default=1000.0, metadata=param(ge=0))  # weight of the attention term (the paper's 1e3)
    p: float = field(default=2.0, metadata=param(gt=0))  # exponent of |A_c| in the attention map


@register
class AttentionTransfer(OnlineDistillation):
    name: ClassVar[str] = "attention"
    summary: ClassVar[str] = "match the teacher's spatial attention maps at paired layers (attention transfer)"
    Params: ClassVar[type] = AttentionParams

    def build_owned(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        for j, (s, t) in enumerate(zip(s_shapes, t_shapes, strict=True)):
            if len(s) not in (3, 4) or len(t) not in (3, 4) or len(s) != len(t):
                raise ConfigError(
                    f"Attention transfer compares spatial (or token) maps, but layer pair {j} gives outputs of shapes "
                    f"{tuple(s)} (student) and {tuple(t)} (teacher); name convolutional stages (or transformer layers "
                    "on both sides) in model.method_params.student_layers and teacher_layers.")
            if math.prod(t[2:] if len(t) == 4 else t[1:2]) == 1:
                raise ConfigError(
                    f"Attention transfer needs maps with more than one position, but the teacher's layer of pair {j} "
                    f"is {tuple(t)} (a single position at this image size, so its attention map is constant); name "
                    "an earlier teacher layer in model.method_params.teacher_layers or give the teacher larger images.")

    def distil_loss(self, s_maps: list[torch.Tensor], t_maps: list[torch.Tensor], logits: torch.Tensor,
                    t_logits: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for s, t in zip(s_maps, t_maps, strict=True):
            total = total + attention_loss(s, t, self.params.p)
        return 0.5 * self.params.beta * total
