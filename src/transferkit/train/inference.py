"""Batched inference with a trained model: logits and probabilities over a whole data set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..data.base import Dataset
from ..data.devices import to_device
from ..model import TransferModel


@torch.no_grad()
def predict_logits(
    model: TransferModel,
    ds: Dataset,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    loader: Callable[[Dataset], Any] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Logits ``(N, C)`` of ``model`` on every example of ``ds`` in order (eval mode, restored afterwards)."""
    from tqdm.auto import tqdm

    from ..data.loaders import make_loader

    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    if loader is None:
        dl = make_loader(ds, model.preprocessing, image_size=model.image_size, train=False, batch_size=batch_size)
    else:
        dl = loader(ds)
    out = []
    for x, _ in tqdm(dl, desc="predict", leave=False, disable=not progress, mininterval=1.0):
        out.append(model(to_device(x, device)).float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros((0, len(model.classes)), dtype=np.float32)
    return torch.cat(out).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stable probabilities."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
