"""SEED similarity-distribution distillation (Fang et al., ICLR 2021, "SEED: Self-supervised Distillation for
Visual Representation"; also CompRess, Abbasi Koohpayegani et al. 2020): the student learns to see the same
neighbours the teacher sees.

For an example ``i`` with teacher embedding ``t_i`` and student embedding ``s_i`` (both L2-normalised) and a set of
anchors ``A`` (a queue of the ``K`` most recent teacher embeddings plus this batch's own),

    p^T_ij = softmax_j( <t_i, a_j> / tau_t ),    p^S_ij = softmax_j( <s_i, a_j> / tau_s )
    R = 1/N * sum_i sum_j -p^T_ij log p^S_ij
    L = CE(y_hat, y) [labelled rows] + s(t) * ( beta * R  [+ alpha * T^2 * KL(p_t^T || p_s^T)] )

``t_i = normalise(f_t(x_i) - m)`` where ``f_t`` is the teacher's tapped layer (default: its backbone's output, the
features its classifier reads), pooled to a vector, and ``m`` a running mean of it (momentum 0.99: features after a
ReLU are all positive, so without centring every cosine is close to 1 and the softmax sees little contrast);
``s_i = normalise(g(f_s(x_i)))`` with ``g`` a learned two-layer projection (Linear-ReLU-Linear; SEED's student
head also has a batch norm, left out so that a last batch of one example trains) from the student's width to the
teacher's, owned by the method and dropped after the fit. Gradients reach the
student only: the anchors are teacher embeddings.

Why a feature method of this kind, next to ``fitnets``, ``rkd`` and ``attention``: a fine-tuned teacher's nearest
neighbours are mostly examples of the same class, so on an unlabelled transfer set the sharp teacher distribution
``p^T`` (small ``tau_t``) tells the student which examples belong together, which a hint's mean squared error (whose
error is spread over every teacher dimension, most of them not about the classes) or RKD's distances do not say as
directly; and the student is free to place its embedding anywhere that keeps the neighbours, so its width and
capacity may be far below the teacher's. The head still learns from the labelled rows alone. Measured (BENCHMARKS.md,
"A feature method that beats the label-only student"): on Animal-MNIST a 48,730-parameter CNN taught by a fine-tuned
MobileNetV2 gains +1.1 +- 0.4 points over its step-matched label-only twin (KD: +2.7), where FitNets, attention and RKD
did not gain.

Written by hand (no maintained library ships it for a torch student and an arbitrary teacher); the queue is a
buffer of the method, so a checkpoint restores it and a resumed run continues with the same anchors. Under data
parallelism each process queues its own shard's embeddings (no all-gather): the queue is then per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import param
from ..errors import ConfigError
from ..model import TransferModel
from .distil_losses import as_vector, width_of
from .feature_distil import LayerParams, OnlineDistillation
from .registry import register


@dataclass
class SEEDParams(LayerParams):
    beta: float = field(default=1.0, metadata=param(ge=0))  # weight of the similarity-distribution term
    queue: int = field(default=4096, metadata=param(ge=0))  # K: teacher embeddings kept as anchors
    # tau_t and tau_s: chosen on held-out training images of Animal-MNIST (BENCHMARKS.md), among (0.05, 0.1),
    # (0.1, 0.1), (0.02, 0.05) and (0.01, 0.05)
    tau_teacher: float = field(default=0.02, metadata=param(gt=0))  # tau_t: the teacher distribution's sharpness
    tau_student: float = field(default=0.05, metadata=param(gt=0))  # tau_s
    hidden: int = field(default=512, metadata=param(ge=1))  # width of the student projection's hidden layer


def similarity_distribution_loss(s: torch.Tensor, t: torch.Tensor, anchors: torch.Tensor, tau_s: float,
                                 tau_t: float) -> torch.Tensor:
    """``R`` of the module docstring for normalised ``s``, ``t`` ``(N, D)`` and anchors ``(M, D)``."""
    p_t = F.softmax(t.float() @ anchors.float().T / tau_t, dim=1)
    log_p_s = F.log_softmax(s.float() @ anchors.float().T / tau_s, dim=1)
    return -(p_t * log_p_s).sum(dim=1).mean()


@register
class SEEDDistil(OnlineDistillation):
    name: ClassVar[str] = "seed-distil"
    summary: ClassVar[str] = "match the teacher's similarity distribution over a queue of its embeddings (SEED)"
    Params: ClassVar[type] = SEEDParams

    def _pair_layers(self, student: TransferModel, teacher_module: nn.Module) -> tuple[list[str], list[str]]:
        """Named layers as the family resolves them; by default the backbones' outputs (what the heads read)."""
        p = self.params
        if p.student_layers is None and p.teacher_layers is None:
            return [""], [""]
        return super()._pair_layers(student, teacher_module)

    def build_owned(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        if len(s_shapes) != 1:
            raise ConfigError("Method 'seed-distil' compares one embedding per example; name one student layer and "
                              "one teacher layer (or leave both unset: the backbones' outputs).")
        d_s, d_t = width_of(s_shapes[0]), width_of(t_shapes[0])
        h = self.params.hidden
        self.projection = nn.Sequential(nn.Linear(d_s, h), nn.ReLU(inplace=True), nn.Linear(h, d_t))
        self.register_buffer("anchors", torch.zeros(self.params.queue, d_t))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))
        self.register_buffer("centre", torch.zeros(d_t))
        self.register_buffer("centred", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _teacher_embedding(self, t: torch.Tensor, update: bool) -> torch.Tensor:
        """Centre with the running mean (first updated with this batch when ``update``) and normalise."""
        t = as_vector(t).float()
        if update:
            batch_mean = t.mean(dim=0)
            if bool(self.centred):
                self.centre.mul_(0.99).add_(batch_mean, alpha=0.01)
            else:
                self.centre.copy_(batch_mean)
                self.centred.fill_(True)
        return F.normalize(t - self.centre, dim=1)

    @torch.no_grad()
    def _enqueue(self, t: torch.Tensor) -> None:
        k = self.anchors.shape[0]
        if k == 0:
            return
        t = t[-k:]
        idx = (self.cursor + torch.arange(len(t), device=t.device)) % k
        self.anchors[idx] = t.to(self.anchors.dtype)
        self.cursor.copy_((self.cursor + len(t)) % k)
        self.filled.copy_(torch.clamp(self.filled + len(t), max=k))

    def distil_loss(self, s_maps: list[torch.Tensor], t_maps: list[torch.Tensor], logits: torch.Tensor,
                    t_logits: torch.Tensor) -> torch.Tensor:
        training = torch.is_grad_enabled()  # a training step, not an evaluation pass: the buffers move
        t = self._teacher_embedding(t_maps[0], update=training)
        s = F.normalize(self.projection(as_vector(s_maps[0]).float()), dim=1)
        anchors = torch.cat([self.anchors[: int(self.filled)], t], dim=0)
        loss = similarity_distribution_loss(s, t, anchors, self.params.tau_student, self.params.tau_teacher)
        if training:
            self._enqueue(t)
        return self.params.beta * loss
