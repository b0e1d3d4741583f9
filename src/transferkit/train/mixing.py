"""Mixup and CutMix of the labelled batch, with their soft targets (``train.mixup_alpha``, ``train.cutmix_alpha``).

Mixup (Zhang et al. 2018) trains on convex combinations of pairs of examples and of their one-hot labels:
``x~ = lam x_i + (1 - lam) x_j``, ``y~ = lam e(y_i) + (1 - lam) e(y_j)``, ``lam ~ Beta(alpha, alpha)``. CutMix (Yun et
al. 2019) pastes a random box of ``x_j`` into ``x_i`` and mixes the labels by the box's area share. The pairs are
each example and its neighbour in the batch (the batch rolled by one), one ``lam`` per batch.

Both come from ``torchvision.transforms.v2`` (``MixUp``, ``CutMix``, ``RandomChoice`` when both are on: each batch
gets one of them, with equal chance); they draw from torch's global generator, which the loop reseeds per epoch, so
runs stay reproducible. The soft targets go straight into the cross-entropy (``F.cross_entropy`` takes class
probabilities), so every method that uses :meth:`Method.classification_loss` supports them.

Tabular inputs ``(N, F)`` are mixed (mixup only) through a ``(N, F, 1, 1)`` view; text (token ids) cannot be mixed.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError


class BatchMixer:
    """Callable ``(x, y) -> (x_mixed, y_soft)`` for a batch of inputs and integer labels."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        from torchvision.transforms import v2

        if num_classes < 2:
            raise ConfigError("Mixup and cutmix need at least two classes; set train.mixup_alpha and "
                              "train.cutmix_alpha to 0.")
        self.num_classes = int(num_classes)
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        parts = []
        if cutmix_alpha > 0:
            parts.append(v2.CutMix(alpha=float(cutmix_alpha), num_classes=self.num_classes))
        if mixup_alpha > 0:
            parts.append(v2.MixUp(alpha=float(mixup_alpha), num_classes=self.num_classes))
        if not parts:
            raise ValueError("BatchMixer needs mixup_alpha > 0 or cutmix_alpha > 0")
        self._mixup_only = v2.MixUp(alpha=float(mixup_alpha), num_classes=self.num_classes) if mixup_alpha > 0 else None
        self.transform = parts[0] if len(parts) == 1 else v2.RandomChoice(parts)

    def __call__(self, x: Any, y: torch.Tensor) -> tuple[Any, torch.Tensor]:
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise ConfigError("Mixup and cutmix need image or tabular inputs; set train.mixup_alpha and "
                              "train.cutmix_alpha to 0 for text.")
        if y.ndim != 1:  # already soft (a method mixed or distilled before): leave it alone
            return x, y
        if x.ndim == 4:
            return self.transform(x, y)
        if x.ndim == 2 and self._mixup_only is not None:
            xm, ym = self._mixup_only(x[:, :, None, None], y)
            return xm[:, :, 0, 0], ym
        raise ConfigError("CutMix needs image batches (N, C, H, W); use train.mixup_alpha for tabular data.")


def make_mixer(num_classes: int, modality: str | None, mixup_alpha: float, cutmix_alpha: float) -> BatchMixer | None:
    """The mixer for this run's settings, ``None`` when both are off; a ConfigError for data that cannot be mixed."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    if modality == "text":
        raise ConfigError("Mixup and cutmix need image or tabular inputs, not text; set train.mixup_alpha and "
                          "train.cutmix_alpha to 0.")
    if modality == "tabular" and cutmix_alpha > 0:
        raise ConfigError("CutMix pastes image boxes and needs image data; for tabular data set train.cutmix_alpha "
                          "to 0 (train.mixup_alpha works).")
    return BatchMixer(num_classes, mixup_alpha, cutmix_alpha)
