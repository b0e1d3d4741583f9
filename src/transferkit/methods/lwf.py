"""LwF, Learning without Forgetting (Li & Hoiem 2016): keep answering the source task as the source model did.

    L(w) = CE(y_hat, y) + s(t) * lambda * T^2 * KL( softmax(z_src / T) || softmax(z_new_src / T) )

``z_src = h_0(f(x; w^0))`` are the source model's own logits on the batch (its pretrained classifier ``h_0`` on a
frozen copy of the backbone, one no-grad forward per step), ``z_new_src = h(f(x; w))`` the logits of a copy ``h`` of
that classifier on the fine-tuned backbone's features. ``T`` is the distillation temperature (the paper's ``T = 2``)
and the ``T^2`` factor keeps the gradient scale independent of ``T`` (Hinton et al. 2015). As in the paper the copy
``h`` trains with the backbone (``train_source_head``; it learns at the backbone's rate, not the new head's); it is
part of the method, not of the saved model. The paper records the source responses once before training; computing
them per step on the same (augmented) batch is the same loss and needs no storage.

Only for backbones that keep their pretrained classifier (``backbone.source_head()``, e.g. ``mobilenet_v2.imagenet``
or timm / torchvision models with pretrained weights).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..config import param
from ..errors import ConfigError
from ..model import TransferModel, forward_with_features, unwrap
from .base import FitContext, StepOutput
from .registry import register
from .regularised import Frozen, RegularisedMethod, ScheduleParams


@dataclass
class LwFParams(ScheduleParams):
    weight: float = field(default=1.0, metadata=param(ge=0))  # lambda: weight of the distillation term
    temperature: float = field(default=2.0, metadata=param(gt=0))  # T
    train_source_head: bool = True  # the copy of the source classifier trains with the backbone


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return t * t * F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")


@register
class LwF(RegularisedMethod):
    name: ClassVar[str] = "lwf"
    summary: ClassVar[str] = "fine-tune distilling the source classifier's outputs from a frozen copy (LwF)"
    Params: ClassVar[type] = LwFParams

    def setup(self, ctx: FitContext) -> None:
        backbone = ctx.model.backbone
        head = backbone.source_head()
        if head is None:
            name = f"'{ctx.model_config.backbone}'" if ctx.model_config is not None else "this backbone"
            raise ConfigError(
                f"Method 'lwf' needs a backbone that keeps its pretrained classifier, and {name} has none; use one "
                "with pretrained weights (e.g. mobilenet_v2.imagenet) or another regulariser (l2-sp, delta, bss)."
            )
        super().setup(ctx)
        self.source = Frozen(backbone)
        self.source_classifier = Frozen(head)
        self.old_head = copy.deepcopy(head)
        self.old_head.train()
        self.old_head.requires_grad_(bool(self.params.train_source_head))

    def param_groups(self, model: TransferModel) -> list[dict[str, Any]]:
        groups = [g for g in super().param_groups(model) if g["name"] != f"method.{self.name}"]
        own = [p for p in self.old_head.parameters() if p.requires_grad]
        if own:
            groups.append({"params": own, "lr": self.train_config.lr, "name": "method.lwf.source_head"})
        return groups

    def regulariser(self, model: TransferModel, x: Any, feats: torch.Tensor) -> torch.Tensor:
        """The distillation term (without lambda and schedule) given the fine-tuned features on ``x``."""
        self.source.mirror_norm_modes(unwrap(model).backbone)
        with torch.no_grad():
            z_src = self.source_classifier(self.source(x))
        return distillation(self.old_head(feats), z_src, self.params.temperature)

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x, y = self.mix(batch)
        feats, logits = forward_with_features(model, x)
        ce = self.classification_loss(logits, y)
        reg = self.params.weight * self.regulariser(model, x, feats)
        return StepOutput(ce + self.strength() * reg, logits)
