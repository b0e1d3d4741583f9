"""LoRA (Hu et al. 2021) through the ``peft`` library: train low-rank updates of chosen layers, not the layers.

Each targeted layer ``W`` (Linear or Conv2d) becomes ``W x + (alpha / r) * B A x`` with ``A`` (r x in) random, ``B``
(out x r) zero at the start (so training starts from the source model exactly) and dropout on the LoRA branch's input.
Only ``A``, ``B`` and the new head train; every base weight stays as it was, and so do batch-norm statistics unless
``update_norm_stats`` (the backbone is then exactly "source + low-rank update").

Targets: ``target_modules`` (peft's syntax: module-name suffixes, or one regular expression); by default peft's own
choice for a transformers model (the attention ``query`` and ``value`` projections for BERT-like encoders such as
``minilm-l6``) and, for timm / torchvision / user networks, every ``nn.Linear`` and every ungrouped ``nn.Conv2d`` (peft
cannot merge LoRA into grouped / depthwise convolutions).

Saving: when training ends the LoRA update of the chosen epoch is merged into the base weights (peft's
``merge_and_unload``), so the saved ``model.safetensors`` has the plain backbone architecture, reloads without peft
and predicts exactly what the trained model predicted. This happens in :meth:`LoRA.finish`, which the pipeline calls
on the chosen epoch's model after the one training loop; running the training loop alone leaves the
adapters in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from ..config import param
from ..errors import ConfigError
from ..model import TransferModel, freeze_norm_statistics
from .base import FitContext, FitResult, Method
from .registry import register


def layer_names(value: object) -> str | None:
    """``None`` for a layer name or a list of them; what ``target_modules`` must be otherwise."""
    ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    return None if ok else "a list of layer names"


@dataclass
class LoRAParams:
    r: int = field(default=8, metadata=param(gt=0))  # rank of the update
    alpha: float = field(default=16.0, metadata=param(gt=0))  # scale: the update is multiplied by alpha / r
    dropout: float = field(default=0.1, metadata=param(ge=0, lt=1))  # dropout on the LoRA branch's input
    # None: peft's default for transformers, else Linear + Conv2d
    target_modules: list[str] | str | None = field(default=None, metadata=param(check=layer_names))
    update_norm_stats: bool = False  # let batch-norm running statistics adapt to the target data


def _network(backbone: nn.Module) -> nn.Module:
    inner = getattr(backbone, "model", None)
    return inner if isinstance(inner, nn.Module) else backbone


def _is_transformers(net: nn.Module) -> bool:
    return getattr(getattr(net, "config", None), "model_type", None) is not None and hasattr(net, "config")


def default_targets(net: nn.Module) -> list[str] | None:
    """``None`` (peft decides) for transformers models; otherwise every Linear and ungrouped Conv2d by name."""
    if _is_transformers(net):
        return None
    return [n for n, m in net.named_modules()
            if n and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))]


def is_lora_parameter(name: str) -> bool:
    return "lora_" in name


@register
class LoRA(Method):
    name: ClassVar[str] = "lora"
    summary: ClassVar[str] = "train low-rank (LoRA, via peft) updates of attention / linear / conv layers and the head"
    Params: ClassVar[type] = LoRAParams

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self.__dict__["_peft"] = None

    # --- set-up -------------------------------------------------------------------------------------------
    def inject(self, model: TransferModel) -> None:
        """Wrap the targeted layers of the backbone with LoRA layers, in place (idempotent)."""
        if self.__dict__["_peft"] is not None:
            return
        from peft import LoraConfig, LoraModel

        net = _network(model.backbone)
        p = self.params
        targets = p.target_modules if p.target_modules else default_targets(net)
        if targets == []:
            raise ConfigError("The backbone has no Linear or Conv2d layers for LoRA; use another method (e.g. bitfit).")
        cfg = LoraConfig(r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=targets, bias="none")
        try:
            self.__dict__["_peft"] = LoraModel(net, cfg, "default")
        except ValueError as e:
            raise ConfigError(
                f"LoRA cannot be applied to this backbone ({str(e).splitlines()[0]}); set "
                "model.method_params.target_modules to names of its Linear / Conv2d layers."
            ) from None

    def setup(self, ctx: FitContext) -> None:
        self.inject(ctx.model)
        super().setup(ctx)

    def apply_freezing(self, model: TransferModel, epoch: int) -> None:
        """Only LoRA parameters of the backbone train (in the blocks not frozen by ``train.freeze_blocks``)."""
        super().apply_freezing(model, epoch)
        for name, p in model.backbone.named_parameters():
            if not is_lora_parameter(name):
                p.requires_grad_(False)

    def train_mode(self, model: TransferModel) -> None:
        super().train_mode(model)
        if not self.params.update_norm_stats:
            freeze_norm_statistics(model.backbone)

    # --- fit, then merge -----------------------------------------------------------------------------------
    def finish(self, model: TransferModel, result: FitResult) -> None:
        """Merge the chosen epoch's LoRA update into the base weights; record the LoRA and merged sizes."""
        lora_params = sum(p.numel() for n, p in model.backbone.named_parameters() if is_lora_parameter(n))
        self.merge(model)
        result.extra.update(lora_params=lora_params, merged_total_params=sum(p.numel() for p in model.parameters()))

    def merge(self, model: TransferModel) -> None:
        """Fold ``(alpha / r) B A`` into each targeted base weight and put the plain layers back (peft)."""
        lm = self.__dict__["_peft"]
        if lm is None:
            return
        lm.merge_and_unload(progressbar=False)
        self.__dict__["_peft"] = None
        model.eval()
