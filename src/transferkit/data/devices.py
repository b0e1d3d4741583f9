"""Moving batches between devices (kept apart from the loaders so that code which only predicts on tensors, such as a
head on cached features, does not import torchvision's transforms with them)."""

from __future__ import annotations

from typing import Any

import torch


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensor, dict of tensors, or tuple of those) to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
