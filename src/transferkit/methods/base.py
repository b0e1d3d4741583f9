"""The method interface: how a transfer method plugs into the one training loop.

The training loop (in ``transferkit.train``) knows no method by name. Each step it asks the method for a loss on a
batch; each epoch it tells the method the epoch is starting; before training it asks which parameters train at which
learning rate. A method is an ``nn.Module`` so that anything it owns (a frozen copy of the source model for L2-SP or
DELTA, a domain discriminator for DANN) moves to the device, is saved in checkpoints and is restored on resume
without the loop knowing it exists. Methods that need more data than the labelled batch (the unlabelled target set
of domain adaptation) declare it in :attr:`Method.needs`, get it through :class:`FitContext` and draw their own
batches.

One entry point: the pipeline (:mod:`transferkit.pipeline`) builds the fit's one :class:`FitContext` and then calls,
in order, :meth:`Method.fit_closed_form` (a fit that is not gradient steps; ``None`` by default), else the loop on
:meth:`Method.training_data`, and last :meth:`Method.finish` on the chosen model. No method runs the loop itself.
How the saved model predicts (:meth:`Method.inference`) is written into ``model.json`` by the pipeline.

The default implementation here *is* plain fine-tuning: cross-entropy (with optional label smoothing) on the
labelled batch (mixed by mixup / cutmix into soft targets when ``train.mixup_alpha`` / ``cutmix_alpha`` are set,
see :mod:`transferkit.train.mixing`: subclasses get the same through :meth:`Method.mix`), the first
``freeze_blocks`` backbone blocks frozen with their batch-norm statistics fixed, a layer-wise learning-rate decay
counted down from the top block, and the new head at ``lr * head_lr_scale``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, TrainConfig, _build
from ..data.base import Dataset
from ..model import TransferModel
from ..train.contract import FitContext, FitResult, StepOutput

__all__ = ["FitContext", "FitResult", "Method", "NoParams", "StepOutput", "build_params", "infinite"]


@dataclass
class NoParams:
    """Methods without parameters of their own."""


class Method(nn.Module):
    """Base class of every transfer method (and itself plain fine-tuning)."""

    name: ClassVar[str] = "finetune"
    summary: ClassVar[str] = "fine-tune the backbone and a new head with cross-entropy"
    Params: ClassVar[type] = NoParams
    #: True: the backbone never trains; the pipeline fits the head on cached features, and predictions may use
    #: the fast frozen-inference engines (read only here and in the pipeline; the saved model says how it predicts)
    frozen_backbone: ClassVar[bool] = False
    #: Data the method needs besides the labelled source, by ``ctx.extra`` key: ``"target"`` (the unlabelled target
    #: training split), ``"target_labelled"`` (k labelled target examples per class), ``"target_oracle"`` (the whole
    #: labelled target training split; only the oracle baseline may ask). The pipeline supplies exactly these and
    #: refuses a fit that cannot.
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, params: Any | None = None) -> None:
        super().__init__()
        self.params = params if params is not None else self.Params()
        self.train_config = TrainConfig()
        self._frozen_blocks: int = 0
        self._backbone_frozen: bool = False
        self.progress: float = 0.0
        self._mixer: Any = None  # mixup / cutmix of the labelled batch (train.mixup_alpha, train.cutmix_alpha)

    # --- set-up -------------------------------------------------------------------------------------------
    def build_backbone(self, model_cfg: ModelConfig) -> Any:
        """The backbone this method trains on (by default the configured one; feature methods tap and fuse)."""
        from ..backbones import build_backbone
        from ..train.stochastic_depth import set_drop_path

        backbone = build_backbone(model_cfg.backbone, weights=model_cfg.weights, pretrained=model_cfg.pretrained)
        set_drop_path(backbone, getattr(model_cfg, "drop_path", 0.0), model_cfg.backbone)
        return backbone

    # --- the fit's entry points (called by the pipeline, in this order) -------------------------------------
    def fit_closed_form(self, ctx: FitContext, val: Dataset | None) -> FitResult | None:
        """Fit without the epoch loop and return a :class:`FitResult`, or ``None`` (the default) to use the loop.

        For methods whose training is not a sequence of gradient steps (the probe's L-BFGS head on cached
        features). The fit leaves ``ctx.model`` at its chosen state; it still shares the data, the model, the
        evaluation and the run folder with every other method.
        """
        return None

    def training_data(self, ctx: FitContext) -> Dataset:
        """The split the loop trains on: the labelled training split by default (the oracle: the labelled target)."""
        return ctx.train

    def finish(self, model: TransferModel, result: FitResult) -> None:
        """End-of-fit work on the chosen model (LoRA merges its adapters); may add entries to ``result.extra``."""

    def inference(self) -> dict[str, Any]:
        """How the fitted model predicts, saved in ``model.json``: ``frozen_backbone`` and the ``engine`` of its
        frozen feature extraction (``auto``, ``onnx`` or ``torch``; a trained backbone predicts with ``torch``)."""
        return {"frozen_backbone": bool(self.frozen_backbone), "engine": "auto" if self.frozen_backbone else "torch"}

    def features(self, model: TransferModel, ds: Dataset, cfg: TrainConfig) -> Any:
        """``(N, D)`` features of ``ds`` from the frozen backbone, for a ``frozen_backbone`` method: the pipeline
        fits the head on them (as a tabular problem) instead of running the backbone every step."""
        from ..features import extract_features

        return extract_features(model.backbone, ds, image_size=model.image_size, engine=self.inference()["engine"],
                                cache=False, progress=cfg.progress, batch_size=max(cfg.batch_size, 64))

    def setup(self, ctx: FitContext) -> None:
        """Called once before training (before device placement); build owned modules here."""
        from ..train.mixing import make_mixer

        self.train_config = ctx.train_config
        cfg = ctx.train_config
        modality = ctx.train.modality if ctx.train is not None else None
        self._mixer = make_mixer(len(ctx.model.classes), modality, cfg.mixup_alpha, cfg.cutmix_alpha)
        self.apply_freezing(ctx.model, epoch=0)

    def frozen_block_count(self, model: TransferModel, epoch: int) -> int:
        """How many backbone blocks (from the input side) are frozen in ``epoch``; all of them = frozen backbone."""
        return min(self.train_config.freeze_blocks, len(model.backbone.blocks()))

    def apply_freezing(self, model: TransferModel, epoch: int) -> None:
        """Set ``requires_grad`` of the backbone blocks for this epoch."""
        blocks = model.backbone.blocks()
        k = self.frozen_block_count(model, epoch)
        for i, block in enumerate(blocks):
            for p in block.parameters():
                p.requires_grad_(i >= k)
        self._frozen_blocks = k
        self._backbone_frozen = k >= len(blocks)

    def param_groups(self, model: TransferModel) -> list[dict[str, Any]]:
        """Optimizer parameter groups: one per backbone block (layer-wise LR decay), the head, owned modules.

        Frozen parameters are included too (they get no gradient, so the optimizer skips them), so that a method
        may unfreeze them later without rebuilding the optimizer.
        """
        cfg = self.train_config
        blocks = model.backbone.blocks()
        groups: list[dict[str, Any]] = []
        n = len(blocks)
        for i, block in enumerate(blocks):
            params = list(block.parameters())
            if params:
                scale = cfg.layer_decay ** (n - 1 - i)
                groups.append({"params": params, "lr": cfg.lr * scale, "name": f"backbone.block{i}"})
        groups.append({"params": list(model.head.parameters()), "lr": cfg.lr * cfg.head_lr_scale, "name": "head"})
        own = [p for p in self.parameters() if p.requires_grad]
        if own:
            groups.append({"params": own, "lr": cfg.lr * cfg.head_lr_scale, "name": f"method.{self.name}"})
        return groups

    # --- per epoch / per step -------------------------------------------------------------------------------
    def on_epoch_start(self, model: TransferModel, epoch: int) -> None:
        """Called at the start of every epoch (0-based), also after a resume."""
        if self.frozen_block_count(model, epoch) != self._frozen_blocks:
            self.apply_freezing(model, epoch)

    def on_step_start(self, step: int, total_steps: int) -> None:
        """Called before every optimisation step with the global step; ``self.progress`` runs from 0 to 1."""
        self.progress = step / max(1, total_steps)

    def train_mode(self, model: TransferModel) -> None:
        """Put the model in training mode, but keep frozen blocks (and their batch-norm statistics) in eval mode."""
        model.train()
        for block in model.backbone.blocks()[: self._frozen_blocks]:
            block.eval()

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        """Cross-entropy on the labelled batch (mixed, when mixup/cutmix is on). Subclasses add regularisers."""
        x, y = self.mix(batch)
        logits = model(x)
        return StepOutput(self.classification_loss(logits, y), logits)

    def mix(self, batch: tuple[Any, torch.Tensor]) -> tuple[Any, torch.Tensor]:
        """The labelled batch after mixup / cutmix (targets become class probabilities); unchanged when both are off."""
        return batch if self._mixer is None else self._mixer(*batch)

    def classification_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CE(y_hat, y) with the configured label smoothing; ``y`` may be class indices or soft targets."""
        return F.cross_entropy(logits, y, label_smoothing=self.train_config.label_smoothing)

    def describe(self) -> dict[str, Any]:
        """The method's name and resolved parameters, for the run record."""
        return {"name": self.name, "params": dataclasses.asdict(self.params)}


def infinite(loader_factory: Callable[[int], Any]) -> Iterator[Any]:
    """Cycle through loaders made by ``loader_factory(round)``: for methods drawing unlabelled batches forever."""
    r = 0
    while True:
        yield from loader_factory(r)
        r += 1


def build_params(cls: type[Method], raw: dict[str, Any]) -> Any:
    """Validate ``method_params`` against the method's ``Params`` dataclass (unknown keys get a suggestion)."""
    return _build(cls.Params, dict(raw or {}), f"method '{cls.name}'", "model.method_params")
