"""Self-training with confidence-thresholded pseudo-labels, FixMatch-style (Sohn et al. 2020), across domains.

The model labels the target data itself, keeps only the labels it is sure of, and learns to give them also under
strong augmentation. For each target image a *weak* view (``weak_augment``, default ``light``) and a *strong* view
(``strong_augment``, default ``strong``: RandAugment and cutout) of the same image::

    q_i = softmax(h(f(weak(x_i^t))))                    (no gradient: a fixed pseudo-label)
    L_u = 1/n_t sum_i 1[max_c q_ic >= tau] * CE(h(f(strong(x_i^t))), argmax_c q_ic)

    L = CE(h(f(x_s)), y_s) + trade_off * L_u             (trade_off is FixMatch's lambda_u; tau = 0.95)

``L_u`` is averaged over the whole target batch, not over the kept examples, as in FixMatch: early in training few
predictions pass the threshold and the term is small by itself. The two views come from two target loaders with
the same seed and round, whose order is the same (it depends only on the seed and the round, see
:class:`~transferkit.data.loaders.EpochBatchSampler`), so the i-th weak and strong images are the same example.
Source, weak and strong batches go through the model in one pass, as in FixMatch (batch-norm sees all three).

Text and tabular data have no augmentation presets: there the "two views" are the same batch, and the method is
classic confidence-thresholded pseudo-labelling (Lee 2013), i.e. entropy minimisation on the confident examples.

Logged per step: ``pseudo_loss`` (``L_u``) and ``mask_rate`` (the share of target examples above the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..config import param
from ..data.transforms import check_preset
from ..model import TransferModel
from .base import FitContext, StepOutput
from .domain_adaptive import AdaptationMethod, AdaptationParams
from .registry import register


@dataclass
class SelfTrainingParams(AdaptationParams):
    # tau: keep pseudo-labels whose top class probability is at least this
    threshold: float = field(default=0.95, metadata=param(ge=0, le=1))
    # augmentation preset of the view that gives the pseudo-labels
    weak_augment: str = field(default="light", metadata=param(check=check_preset))
    # augmentation preset of the view that learns them
    strong_augment: str = field(default="strong", metadata=param(check=check_preset))


@register
class SelfTraining(AdaptationMethod):
    name: ClassVar[str] = "self-training"
    summary: ClassVar[str] = "FixMatch-style pseudo-labels: confident weak-view labels taught on strong views"
    Params: ClassVar[type] = SelfTrainingParams

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self._two_views = True

    def setup(self, ctx: FitContext) -> None:
        super().setup(ctx)
        self._two_views = ctx.extra["target"].modality == "image"

    def pseudo_label_loss(self, z_weak: torch.Tensor, z_strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_u`` and the share of kept examples from the logits of the weak and the strong view."""
        probs = torch.softmax(z_weak.detach().float(), dim=1)
        conf, pseudo = probs.max(dim=1)
        mask = (conf >= self.params.threshold).float()
        loss = (F.cross_entropy(z_strong.float(), pseudo, reduction="none") * mask).mean()
        return loss, mask.mean()

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x_s, y_s = self.mix(batch)
        device = self.device_of(model)
        p = self.params
        if self._two_views:
            x_w = self.next_target(device, augment=p.weak_augment)
            x_st = self.next_target(device, augment=p.strong_augment)
            n, m = x_s.shape[0], x_w.shape[0]
            z = model(torch.cat([x_s, x_w, x_st]))
            z_s, z_w, z_st = z[:n], z[n:n + m], z[n + m:]
        else:
            v = self.forward_views(model, x_s, self.next_target(device))
            z_s, z_w, z_st = v.z_s, v.z_t, v.z_t
        ce = self.classification_loss(z_s, y_s)
        pseudo, rate = self.pseudo_label_loss(z_w, z_st)
        return StepOutput(ce + p.trade_off * pseudo, z_s, {"pseudo_loss": pseudo.detach(), "mask_rate": rate})
