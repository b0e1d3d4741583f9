"""Image pipelines (torchvision.transforms.v2) for the augmentation presets.

The presets (``train.augment``):

* ``none``: resize to ``image_size`` x ``image_size``; nothing random.
* ``light``: resize, random horizontal flip, and a small random affine (up to 10 degrees of rotation, 10 % shift,
  0.9-1.1 scale): safe for almost any data set.
* ``standard``: ``RandomResizedCrop`` (area 25-100 %, milder than ImageNet's 8 % because transfer data sets are
  small and their images often already tightly framed), horizontal flip, colour jitter and ``RandAugment``.
* ``strong``: the "strong" view of FixMatch-style self-training (Sohn et al. 2020): the small affine of ``light``
  (no flip: digits and text-like images are not mirror-symmetric), ``RandAugment`` at magnitude 10 and a cutout
  (``RandomErasing`` of 2-15 % of the image). Too harsh for supervised training on its own.

Random presets apply only when ``train=True``; evaluation always uses ``none``. Every pipeline starts from uint8
pixels (a numpy ``HxW`` or ``HxWx3`` array, a ``CxHxW`` tensor, or a PIL image), turns grey into 3 channels, and works
on uint8 tensors (cheaper than float, and than PIL); :func:`image_transform` then by default scales to [0, 1] and
normalises with the backbone's mean/std. The loader asks for ``normalize=False`` and normalises whole batches at
once instead (see :class:`BatchNormalizer`), which is faster than doing it image by image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from ..errors import ConfigError
from .preprocessing import Preprocessing

AUGMENT_PRESETS: tuple[str, ...] = ("none", "light", "standard", "strong")


def to_uint8_chw(img: Any) -> torch.Tensor:
    """Any supported image as a uint8 tensor ``(C, H, W)`` with C in {1, 3} (no copy for numpy input).

    Accepts a numpy/torch array ``HxW`` (grey), ``HxWx3`` / ``HxWx1`` (channels last) or ``CxHxW`` tensor, or a PIL
    image (any mode: palette, RGBA, 16-bit grey... are converted to RGB or L first).
    """
    if isinstance(img, np.ndarray):
        t = torch.from_numpy(img if img.flags.writeable else img.copy())
        if t.ndim == 2:
            return t.unsqueeze(0)
        if t.ndim == 3 and t.shape[-1] in (1, 3):
            return t.permute(2, 0, 1)
        raise ValueError(f"image array of shape {tuple(img.shape)} is not HxW or HxWx3")
    if isinstance(img, torch.Tensor):
        if img.ndim == 2:
            return img.unsqueeze(0)
        return img
    from PIL import Image

    if isinstance(img, Image.Image):
        if img.mode not in ("L", "RGB"):
            img = img.convert("L" if img.mode in ("1", "I", "I;16", "F") else "RGB")
        return v2.functional.pil_to_tensor(img)
    raise TypeError(f"cannot turn {type(img).__name__} into an image tensor")


def _to_rgb(t: torch.Tensor) -> torch.Tensor:
    """Grey ``(1, H, W)`` -> ``(3, H, W)`` by expanding (a view: no copy)."""
    return t.expand(3, -1, -1) if t.shape[-3] == 1 else t


def check_preset(augment: str) -> None:
    """Raise :class:`ConfigError` naming the valid presets if ``augment`` is not one of them."""
    if augment not in AUGMENT_PRESETS:
        raise ConfigError(f"Unknown augmentation preset '{augment}'; use one of: {', '.join(AUGMENT_PRESETS)}.")


def uint8_transform(image_size: int, train: bool, augment: str) -> Callable[[Any], torch.Tensor]:
    """The per-image part of a preset: any supported image -> uint8 tensor ``(3, S, S)``, S = ``image_size``."""
    check_preset(augment)
    size = [int(image_size), int(image_size)]
    # grey stays 1 channel through the geometric steps (a third of the work) and is expanded before colour ones
    steps: list[Callable[[Any], Any]] = [v2.Lambda(to_uint8_chw)]
    if not train or augment == "none":
        steps += [v2.Resize(size, antialias=True), v2.Lambda(_to_rgb)]
    elif augment == "light":
        steps += [
            v2.Resize(size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.Lambda(_to_rgb),
        ]
    elif augment == "strong":
        steps += [
            v2.Resize(size, antialias=True),
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.Lambda(_to_rgb),
            v2.RandAugment(num_ops=2, magnitude=10),
            v2.RandomErasing(p=1.0, scale=(0.02, 0.15), value=0),
        ]
    else:  # standard
        steps += [
            v2.RandomResizedCrop(size, scale=(0.25, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.Lambda(_to_rgb),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            v2.RandAugment(num_ops=2, magnitude=9),
        ]
    return v2.Compose(steps)


def image_transform(
    pre: Preprocessing, image_size: int | None, train: bool, augment: str = "none", normalize: bool = True
) -> Callable[[Any], torch.Tensor]:
    """The full image pipeline of a preset for one image.

    Args:
        pre: the backbone's preprocessing (mean/std; its ``image_size`` is the default size).
        image_size: output side S; ``None`` uses ``pre.image_size``.
        train: apply the random part of the preset (``False``: plain resize, for evaluation and prediction).
        augment: ``"none"``, ``"light"``, ``"standard"`` or ``"strong"``.
        normalize: ``True``: float32 ``(3, S, S)`` scaled to [0, 1] and normalised with ``pre.mean``/``pre.std``.
            ``False``: uint8 ``(3, S, S)`` (normalise a whole batch later with :class:`BatchNormalizer`).

    Raises:
        ConfigError: unknown preset (the message lists the valid ones), or no image size known.
    """
    size = _resolve_size(pre, image_size)
    base = uint8_transform(size, train, augment)
    if not normalize:
        return base
    norm = BatchNormalizer(pre)
    return v2.Compose([base, v2.Lambda(lambda t: norm(t.unsqueeze(0))[0])])


def _resolve_size(pre: Preprocessing, image_size: int | None) -> int:
    size = image_size or pre.image_size
    if not size:
        raise ConfigError("No image size is known for this backbone; set model.image_size.")
    return int(size)


class BatchNormalizer:
    """uint8 ``(N, C, H, W)`` (C = 1 or 3) -> float32 ``(N, 3, H, W)``: ``(x / 255 - mean) / std`` in one pass.

    Folded into one multiply-add per pixel (``x * scale + shift``, with ``scale = 1 / (255 std)`` and
    ``shift = -mean / std``); grey batches broadcast to 3 channels in the same operation, so grey data never needs
    a 3-channel copy in uint8. With no mean/std in ``pre`` it only scales to [0, 1].
    """

    def __init__(self, pre: Preprocessing) -> None:
        mean = torch.tensor(pre.mean if pre.mean is not None else (0.0, 0.0, 0.0), dtype=torch.float32)
        std = torch.tensor(pre.std if pre.std is not None else (1.0, 1.0, 1.0), dtype=torch.float32)
        if mean.numel() == 1:
            mean = mean.expand(3)
        if std.numel() == 1:
            std = std.expand(3)
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).contiguous()
        self.shift = (-mean / std).view(1, -1, 1, 1).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.to(torch.float32), self.scale)
