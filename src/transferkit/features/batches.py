"""Input batches for a frozen forward pass over a data set, in data order.

Everything goes through the usual loader (:func:`transferkit.data.loaders.make_loader`: the same resizing,
normalisation and tokenisation as training and prediction) except the commonest case, an in-memory uint8 image
array, which takes a shortcut built from the loader's own parts: the loader's cached resized copy of the array
(:func:`~transferkit.data.loaders.resized_images`) and its normaliser
(:class:`~transferkit.data.transforms.BatchNormalizer`, the same ``addcmul``, so the tensors are bit-identical).
The shortcut slices consecutive rows (no index gather) and normalises into a small ring of preallocated float
buffers instead of a fresh tensor per batch.

Why hand-written: a 64 x 3 x 224 x 224 float batch is 38 MB. Allocated fresh for every batch, it is returned to the
operating system and faulted in again page by page each time, which on this project's virtual machines costs about
as much as normalising it; on a CPU that ONNX Runtime keeps busy, the loader's cost is taken straight off the
extraction rate (measured with ``benchmarks/frozen_extraction.py``). A buffer may be overwritten ``slots`` batches
later, so a consumer must be done with a batch before it draws ``slots - 1`` more (the extractor draws the next
batch only when done with the current one, or, with its prefetch thread on a GPU, holds at most the prefetch depth
plus two).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..backbones.base import Preprocessing
from ..data.base import Dataset


class _RingImageBatches:
    """Normalised float32 ``(B, 3, S, S)`` batches of consecutive rows of a resized uint8 array, in reused buffers."""

    def __init__(self, resized: torch.Tensor, pre: Preprocessing, batch_size: int, slots: int, pin: bool) -> None:
        from ..data.transforms import BatchNormalizer

        self.resized = resized
        self.normalize = BatchNormalizer(pre)
        self.batch_size = batch_size
        self.slots = slots
        self.pin = pin

    def __iter__(self) -> Iterator[torch.Tensor]:
        n, _, h, w = self.resized.shape
        rows = min(self.batch_size, n)
        buffers = [torch.empty((rows, 3, h, w), dtype=torch.float32, pin_memory=self.pin) for _ in range(self.slots)]
        for k, start in enumerate(range(0, n, self.batch_size)):
            u8 = self.resized[start : start + self.batch_size]
            out = buffers[k % self.slots][: len(u8)]
            torch.addcmul(self.normalize.shift, u8, self.normalize.scale, out=out)
            yield out


def frozen_batches(
    data: Dataset, pre: Preprocessing, *, image_size: int | None, batch_size: int, slots: int, pin_memory: bool = False
) -> Any:
    """An iterable of input batches (no labels) for ``data`` in order, as the backbone with ``pre`` expects them."""
    from ..data.loaders import make_loader, resized_images

    x = data.inputs
    in_memory = isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim in (3, 4)
    if data.modality == "image" and image_size and in_memory:
        resized = resized_images(x, int(image_size))
        if resized is not None:
            return _RingImageBatches(resized, pre, batch_size, slots, pin_memory)
    loader = make_loader(data, pre, image_size=image_size, train=False, batch_size=batch_size, pin_memory=pin_memory)
    return (inputs for inputs, _ in loader)
