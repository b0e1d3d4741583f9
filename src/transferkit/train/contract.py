"""The types the training loop and the methods speak: :class:`FitContext`, :class:`StepOutput`, :class:`FitResult`.

They live here, under ``train``, so that methods import the loop's vocabulary and the loop never imports methods:
the loop drives any object with the :class:`LoopMethod` shape (every :class:`~transferkit.methods.base.Method`).

The pipeline (:mod:`transferkit.pipeline`) builds one :class:`FitContext` per fit; the loop fills in what only it
knows (``make_loader``, ``device``, ``steps_per_epoch``) before it calls the method's ``setup``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..config import ModelConfig, TrainConfig
from ..data.base import Dataset
from ..model import TransferModel


@dataclass
class FitContext:
    """Everything one fit works with, built once per fit by the pipeline.

    Attributes:
        model: the model being trained (before device placement).
        train: the labelled training split (after source selection); ``ctx.sample_weights`` weigh its rows.
        model_config / train_config: the resolved configuration.
        make_loader: ``make_loader(dataset, train=..., epoch=..., batch_size=...)`` builds a loader with the
            model's preprocessing, for methods that draw extra batches (e.g. unlabelled target data); set by the
            loop (``None`` before it starts).
        extra: named extra data sets a method declared in ``Method.needs`` (e.g. ``{"target": Dataset}``).
        device: where the model runs (set by the loop).
        steps_per_epoch: optimisation steps per epoch of this process (set by the loop).
        val: the split that chooses the epoch (early stopping, best checkpoint), or ``None``.
        sample_weights: per-row weights of ``train`` (source selection); the loop draws rows in proportion to them.
        scorers: ``name -> fn(model) -> float`` computed each epoch into the history (label-free validators).
        checkpoint_dir / resume: where the loop writes its checkpoint, and whether to continue from it.
    """

    model: TransferModel
    train: Dataset
    model_config: ModelConfig
    train_config: TrainConfig
    make_loader: Callable[..., Any] | None = None
    extra: dict[str, Dataset] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    steps_per_epoch: int = 0
    val: Dataset | None = None
    sample_weights: Any = None
    scorers: dict[str, Callable[[TransferModel], float]] = field(default_factory=dict)
    checkpoint_dir: Path | None = None
    resume: bool = False


@dataclass
class StepOutput:
    """A training step's loss (to back-propagate), the logits on the labelled batch, and scalars to log."""

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class FitResult:
    """What training produced: per-epoch history, the chosen epoch and its weights."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    stopped_early: bool = False
    seconds: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class LoopMethod(Protocol):
    """What the loop calls on a method: an ``nn.Module`` with these hooks (every ``Method`` is one)."""

    def setup(self, ctx: FitContext) -> None: ...
    def param_groups(self, model: TransferModel) -> list[dict[str, Any]]: ...
    def apply_freezing(self, model: TransferModel, epoch: int) -> None: ...
    def on_epoch_start(self, model: TransferModel, epoch: int) -> None: ...
    def on_step_start(self, step: int, total_steps: int) -> None: ...
    def train_mode(self, model: TransferModel) -> None: ...
    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput: ...
    def to(self, device: torch.device) -> Any: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...
