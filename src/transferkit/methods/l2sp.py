"""L2-SP (Li, Grandvalet & Davoine 2018): weight decay towards the starting point instead of towards zero.

    L(w) = CE(y_hat, y) + s(t) * ( alpha / 2 * ||w_S - w_S^0||^2  +  beta / 2 * ||w_H||^2 )

``w_S`` are the backbone weights shared with the source model, ``w_S^0`` their pretrained values (the starting point,
SP) and ``w_H`` the new head, which has no starting point and gets a plain L2 penalty. The norms are sums over every
element (the paper's formulation), so ``alpha`` is per-weight and independent of the batch; the paper's defaults are
``alpha = beta = 0.01`` and it searches ``alpha`` in {0.001, 0.01, 0.1, 1}. ``s(t)`` is the lambda schedule of
:mod:`.regularised`. Frozen blocks (``train.freeze_blocks``) do not drift and are left out of the sum.

The source weights are stored as buffers of the method (a frozen copy of the parameters, no graph), so they move to
the device and are checkpointed with it. The configured decoupled weight decay (``train.weight_decay``, towards 0)
still applies on top; the paper replaces it, so set ``train.weight_decay=0`` for its exact recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..config import param
from ..model import TransferModel, unwrap
from .base import FitContext, StepOutput
from .registry import register
from .regularised import RegularisedMethod, ScheduleParams, sum_of_squares


@dataclass
class L2SPParams(ScheduleParams):
    # weight of the squared distance of the backbone weights to their source values
    alpha: float = field(default=0.01, metadata=param(ge=0))
    beta: float = field(default=0.01, metadata=param(ge=0))  # weight of the plain L2 penalty on the new head


@register
class L2SP(RegularisedMethod):
    name: ClassVar[str] = "l2-sp"
    summary: ClassVar[str] = "fine-tune with alpha/2 ||w - w_source||^2 on the backbone and beta/2 ||w||^2 on the head"
    Params: ClassVar[type] = L2SPParams

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self._count = 0

    def setup(self, ctx: FitContext) -> None:
        super().setup(ctx)
        params = list(ctx.model.backbone.parameters())
        for i, p in enumerate(params):
            self.register_buffer(f"source_{i}", p.detach().clone())
        self._count = len(params)

    def source_weights(self) -> list[torch.Tensor]:
        """The backbone's starting point ``w_S^0``, in ``backbone.parameters()`` order."""
        return [getattr(self, f"source_{i}") for i in range(self._count)]

    def drift(self, model: TransferModel) -> torch.Tensor:
        """``||w_S - w_S^0||^2`` over the backbone weights that train (a differentiable scalar)."""
        live = list(unwrap(model).backbone.parameters())
        if len(live) != self._count:
            raise RuntimeError("the backbone's parameters changed since setup; L2-SP needs the same architecture")
        pairs = [(p, s) for p, s in zip(live, self.source_weights()) if p.requires_grad]
        if not pairs:
            return torch.zeros((), device=live[0].device if live else None)
        diffs = torch._foreach_sub([p for p, _ in pairs], [s for _, s in pairs])
        return sum_of_squares(diffs)

    def regulariser(self, model: TransferModel) -> torch.Tensor:
        """``alpha / 2 * drift + beta / 2 * ||w_H||^2`` (without the schedule)."""
        p = self.params
        head = [q for q in unwrap(model).head.parameters() if q.requires_grad]
        return 0.5 * p.alpha * self.drift(model) + 0.5 * p.beta * sum_of_squares(head)

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x, y = self.mix(batch)
        logits = model(x)
        ce = self.classification_loss(logits, y)
        return StepOutput(ce + self.strength() * self.regulariser(model), logits)
