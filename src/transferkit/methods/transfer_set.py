"""The transfer set of the distillation methods: the labelled rows plus unlabelled rows only the teacher labels.

A teacher's real strength is its outputs on examples the student has no labels for (Hinton et al. 2015's "transfer
set"; Beyer et al. 2022's "function matching" runs the teacher on the student's augmented view of every such
example). ``fit(..., extra={"unlabelled": rows})`` hands a distillation method those rows; :func:`transfer_set` gives
the loop one data set, the labelled rows followed by the unlabelled ones with label ``-1`` (the data loaders'
convention for "no label"), and :func:`labelled_ce` is the cross-entropy over a batch's labelled rows only, while the
distillation term covers every row:

    L = (1 - a) * mean_{i labelled} CE_i + a * R(all rows)            (kd; the feature methods add R to the CE)

**The labelled share** (``labelled_share``, a parameter of the methods that take a transfer set): with a few labels
and many unlabelled rows, one pass over both shows the cross-entropy about one labelled row per batch (200 labels
among 6,801 rows: 3%), so a method whose distillation term carries no class information (FitNets hints, attention,
RKD) learns its head from a few hundred labelled rows in a thousand steps, while the label-only student sees every
label a hundred times. ``labelled_share = s`` repeats the labelled rows ``k`` times in each epoch
(:func:`labelled_repeats`: the smallest ``k`` with ``k n_l >= s / (1 - s) n_u``), so about a share ``s`` of every
batch is labelled, as semi-supervised methods fix the ratio of labelled to unlabelled rows per batch (FixMatch:
1 to 7, a share of 1/8). ``0`` (the default) keeps each row once.

The loop then trains on rows that are not ``ctx.train``'s, so ``ctx.sample_weights`` (which weigh the labelled rows)
do not apply, and one epoch is one pass over labelled *and* unlabelled rows. Mixup / cutmix are refused with
unlabelled rows: a mixed pair with one unlabelled side has no label to mix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..data.base import Dataset
from ..errors import ConfigError
from .base import FitContext, Method

UNLABELLED = "unlabelled"


def labelled_repeats(n_labelled: int, n_unlabelled: int, share: float) -> int:
    """How many times the labelled rows go into one epoch so they are at least a share ``share`` of its rows (1 when
    ``share`` is 0 or there is nothing unlabelled)."""
    if share <= 0 or n_unlabelled <= 0 or n_labelled <= 0:
        return 1
    return max(1, math.ceil(share * n_unlabelled / ((1.0 - share) * n_labelled) - 1e-9))


def concatenate(labelled: Dataset, unlabelled: Dataset, repeats: int = 1) -> Dataset:
    """The labelled rows (``repeats`` times) followed by the unlabelled ones (label -1), as one data set of the
    labelled one's classes."""
    if unlabelled.modality != labelled.modality:
        raise ConfigError(f"The unlabelled rows are {unlabelled.modality} but the training data is "
                          f"{labelled.modality}; give unlabelled rows of the same kind.")
    a, b = labelled.inputs, unlabelled.inputs
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.shape[1:] != b.shape[1:]:
            raise ConfigError(f"The unlabelled rows have shape {b.shape[1:]} per example but the training data "
                              f"{a.shape[1:]}; give rows of the same shape.")
        inputs: Any = np.concatenate([a] * repeats + [b.astype(a.dtype, copy=False)])
    else:
        inputs = list(a) * repeats + list(b)
    labels = np.concatenate([np.asarray(labelled.labels, dtype=np.int64)] * repeats
                            + [np.full(len(b), -1, dtype=np.int64)])
    return Dataset(labelled.modality, inputs, labels, list(labelled.classes), labelled.name, {})


def check_no_mixing(ctx: FitContext, why: str) -> None:
    """Refuse mixup / cutmix (one sentence saying ``why``)."""
    cfg = ctx.train_config
    if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
        raise ConfigError(f"{why}; set train.mixup_alpha and train.cutmix_alpha to 0.")


def transfer_set(ctx: FitContext, method: str, labelled_share: float = 0.0) -> Dataset:
    """``ctx.train`` alone, or (``labelled_repeats`` times) followed by ``ctx.extra["unlabelled"]`` (label -1) when the
    fit was given one."""
    unlabelled = ctx.extra.get(UNLABELLED)
    if unlabelled is None or len(unlabelled) == 0:
        return ctx.train
    check_no_mixing(ctx, f"Method '{method}' cannot mix unlabelled rows (mixup / cutmix need a label on each side)")
    return concatenate(ctx.train, unlabelled, labelled_repeats(len(ctx.train), len(unlabelled), labelled_share))


def labelled_ce(method: Method, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The classification loss over the rows whose label is known (``y >= 0``); zero, with a gradient path, when the
    batch has none. Soft (2-D) targets are all labelled."""
    if y.ndim != 1:
        return method.classification_loss(logits, y)
    known = y >= 0
    if bool(known.all()):
        return method.classification_loss(logits, y)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return method.classification_loss(logits[known], y[known])
