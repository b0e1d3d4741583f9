"""BitFit (Ben Zaken et al. 2022): fine-tune only the bias terms of the backbone, plus the new head.

Every backbone parameter whose name ends in ``bias`` (linear, convolution and normalisation biases) trains; every
other one stays at its source value. That is typically 0.1% of a transformer's parameters and a few per cent of a
CNN's (mostly the batch-norm shifts). Batch-norm running statistics adapt to the target data as in plain
fine-tuning (they are not parameters); ``update_norm_stats: false`` keeps them at the source values instead.
Frozen blocks (``train.freeze_blocks``) keep their biases frozen too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import ConfigError
from ..model import TransferModel, freeze_norm_statistics
from .base import FitContext, Method
from .registry import register


@dataclass
class BitFitParams:
    update_norm_stats: bool = True  # batch-norm running statistics adapt to the target data


def is_bias(name: str) -> bool:
    return name == "bias" or name.endswith(".bias")


@register
class BitFit(Method):
    name: ClassVar[str] = "bitfit"
    summary: ClassVar[str] = "train only the backbone's bias terms and the new head (BitFit)"
    Params: ClassVar[type] = BitFitParams

    def setup(self, ctx: FitContext) -> None:
        if not any(is_bias(n) for n, _ in ctx.model.backbone.named_parameters()):
            raise ConfigError("This backbone has no bias parameters for BitFit; use linear-probe or lora instead.")
        super().setup(ctx)

    def apply_freezing(self, model: TransferModel, epoch: int) -> None:
        super().apply_freezing(model, epoch)
        for name, p in model.backbone.named_parameters():
            if not is_bias(name):
                p.requires_grad_(False)

    def train_mode(self, model: TransferModel) -> None:
        super().train_mode(model)
        if not self.params.update_norm_stats:
            freeze_norm_statistics(model.backbone)
