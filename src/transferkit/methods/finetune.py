"""Fine-tuning strategies of the foundation: plain fine-tuning, linear probe, and freeze-then-unfreeze.

All three train with cross-entropy on the labelled batch and differ only in which backbone blocks learn when, which
is what the :class:`~transferkit.methods.base.Method` freezing hooks express:

* ``finetune``: every block learns from the start, except the first ``train.freeze_blocks`` blocks; with
  ``train.layer_decay < 1`` block i (of n) learns at ``lr * layer_decay ** (n - 1 - i)`` (layer-wise LR decay).
* ``linear-probe``: the whole backbone is frozen, batch-norm in inference mode; only the new head learns.
* ``freeze-unfreeze``: the head alone for ``train.head_epochs`` epochs (so a random head does not wreck the
  pretrained features with large early gradients), then every block with the discriminative (decayed) rates.
"""

from __future__ import annotations

from typing import ClassVar

from ..model import TransferModel
from .base import Method
from .registry import register


@register
class FineTune(Method):
    name: ClassVar[str] = "finetune"
    summary: ClassVar[str] = "fine-tune backbone and new head (optional freeze of the first k blocks, layer-wise LR)"


@register
class LinearProbe(Method):
    name: ClassVar[str] = "linear-probe"
    summary: ClassVar[str] = "train only a new head on the frozen backbone (batch-norm in inference mode)"

    def frozen_block_count(self, model: TransferModel, epoch: int) -> int:
        return len(model.backbone.blocks())


@register
class FreezeUnfreeze(Method):
    name: ClassVar[str] = "freeze-unfreeze"
    summary: ClassVar[str] = "train the head alone for head_epochs, then everything with discriminative LRs"

    def frozen_block_count(self, model: TransferModel, epoch: int) -> int:
        if epoch < self.train_config.head_epochs:
            return len(model.backbone.blocks())
        return super().frozen_block_count(model, epoch)
