"""What the regularised fine-tuning methods share: the schedule of lambda and frozen source copies.

The methods of this family (``l2-sp``, ``delta``, ``bss``, ``lwf``, ``soft-targets``) all train with one loss,

    L(theta) = CE(y_hat, y) + lambda(t) * R(f_hat; f),

where R measures how far the fine-tuned model f_hat has drifted from the source model f (or, for BSS, how much of
its features' spectrum is spent on directions the target data cannot support). ``lambda(t) = lambda * s(t)``, with
``t`` the share of training done (``Method.progress``, updated by the loop every step) and the schedule ``s``:

* ``constant``: ``s(t) = 1``;
* ``linear``: ``s(t) = min(1, t / ramp)``, a linear ramp from 0 to full strength over the first ``ramp`` of training;
* ``cosine``: ``s(t) = (1 - cos(pi * min(1, t / ramp))) / 2``, the same ramp with a smooth start and end.

A frozen copy of the source model is a submodule of the method (:class:`Frozen`), so it moves to the device and is
saved in checkpoints without the loop knowing it exists, and it stays in evaluation mode whatever ``train()`` calls
reach it. Its batch-norm layers *mirror* the fine-tuned model's mode every step (:func:`mirror_norm_modes`): where
the fine-tuned model normalises with the batch's statistics, so does the copy (with momentum 0, so its running
statistics never move). Otherwise a distance between the two would be non-zero at ``w == w0`` and its gradient
would pull the weights to make up for the two normalisation modes, not for any drift.

Intermediate outputs are taken with the one tap mechanism, :class:`transferkit.backbones.taps.Taps` (forward hooks
registered for one forward pass and removed right after it): the trained model never keeps a hook that refers to the
method.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import param
from .base import Method

SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class ScheduleParams:
    """The schedule of lambda (see the module docstring)."""

    schedule: str = field(default="constant", metadata=param(choices=SCHEDULES))
    # share of training over which linear / cosine ramp up to full strength
    ramp: float = field(default=1.0, metadata=param(gt=0, le=1))


def schedule_factor(schedule: str, ramp: float, progress: float) -> float:
    """``s(t)`` of the module docstring, for ``t = progress`` in [0, 1]."""
    if schedule == "constant":
        return 1.0
    t = min(1.0, max(0.0, progress) / ramp) if ramp > 0 else 1.0
    if schedule == "linear":
        return t
    if schedule == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}")


class RegularisedMethod(Method):
    """Base of ``CE + lambda(t) * R`` methods: evaluates the schedule of lambda."""

    Params: ClassVar[type] = ScheduleParams

    def strength(self) -> float:
        """``s(t)`` at the current training progress."""
        return schedule_factor(self.params.schedule, self.params.ramp, self.progress)


class Frozen(nn.Module):
    """A frozen copy of a module: no gradients, always in evaluation mode, run under ``torch.no_grad``."""

    def __init__(self, module: nn.Module, *, copy_module: bool = True) -> None:
        super().__init__()
        self.module = copy.deepcopy(module) if copy_module else module
        self.module.requires_grad_(False)
        self.module.eval()
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0  # batch statistics may be used (mirror_norm_modes) but never stored
        self._norm_pairs: list[tuple[str, nn.Module]] = [
            (n, m) for n, m in self.module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]

    def train(self, mode: bool = True) -> Frozen:
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def mirror_norm_modes(self, live: nn.Module) -> None:
        """Batch-norm layers of the copy take the training mode of the same layers in ``live`` (the trained one)."""
        for name, m in self._norm_pairs:
            try:
                m.training = live.get_submodule(name).training
            except AttributeError:
                m.training = False


def sum_of_squares(params: list[torch.Tensor]) -> torch.Tensor:
    """``sum_i ||p_i||^2`` over a list of tensors (one fused norm kernel per list on GPU)."""
    if not params:
        return torch.zeros(())
    return torch.stack(torch._foreach_norm(params)).float().pow(2).sum()

