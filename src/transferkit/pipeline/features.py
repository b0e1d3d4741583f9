"""The fit of a ``frozen_backbone`` method: its head on cached features, as a tabular problem.

The backbone never trains, so the pipeline computes its features once (the method's ``features``: cached on disk,
through the fastest engine) and hands the method a :class:`~transferkit.train.contract.FitContext` whose model is
the head on those features (an identity backbone sharing the real model's head module, so training it trains the
real head) and whose training and validation splits are the features as tabular data. The probe fits it in closed
form, the mlp-head with the one training loop (which then sees plain tabular batches: no augmentation, no mixing,
no worker processes, ``train.lr`` for the head). The run's record keeps the whole model's size and the time spent
on features.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..backbones.deferred import declared_parameter_count
from ..data.base import Dataset
from ..train.contract import FitContext, FitResult


class _Features(nn.Module):
    """The identity: the head model's input already is the backbone's features."""

    def forward(self, x: Any) -> Any:
        return x


@dataclass
class FeatureStage:
    """What the feature stage adds to the fit's record: the feature time, and the whole model's parameter count."""

    t0: float
    feature_seconds: float

    def record(self, result: FitResult, model: nn.Module) -> None:
        """Add the feature time to every history row and to ``result``; count the whole model's parameters."""
        for row in result.history:
            row.setdefault("feature_seconds", round(self.feature_seconds, 3))
        result.seconds = time.perf_counter() - self.t0
        result.total_params = declared_parameter_count(model)
        result.extra["feature_seconds"] = self.feature_seconds


def feature_context(p: Any, *, checkpoint_dir: Path | None, resume: bool) -> tuple[FitContext, FeatureStage]:
    """The fit's context for a frozen-backbone method (see the module docstring), and its record keeper."""
    from ..backbones import ModuleBackbone, Preprocessing
    from ..model import TransferModel

    model, method, cfg = p.model, p.method, p.train_config
    for q in model.backbone.parameters():
        q.requires_grad_(False)
    t0 = time.perf_counter()
    train = _tabular(method.features(model, p.train, cfg), p.train)
    val = _tabular(method.features(model, p.val, cfg), p.val) if p.val is not None and len(p.val) else None
    stage = FeatureStage(t0, time.perf_counter() - t0)
    dim = int(train.inputs.shape[1])
    head_model = TransferModel(ModuleBackbone(_Features(), dim, Preprocessing("tabular")), model.classes,
                               head=model.head_kind, head_hidden=model.head_hidden, head_dropout=model.head_dropout)
    head_model.head = model.head  # shared: training the head model trains the real model's head
    head_cfg = dataclasses.replace(cfg, head_lr_scale=1.0, augment="none", num_workers=0, mixup_alpha=0.0,
                                   cutmix_alpha=0.0)
    ctx = FitContext(head_model, train, p.model_config, head_cfg, val=val, checkpoint_dir=checkpoint_dir,
                     resume=resume)
    return ctx, stage


def _tabular(features: Any, ds: Dataset) -> Dataset:
    """The features of ``ds`` as a tabular data set with its labels and classes."""
    return Dataset("tabular", np.array(features, dtype=np.float32), ds.labels, list(ds.classes), ds.name)
