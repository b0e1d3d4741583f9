"""Small randomly initialised backbones for domain-adaptation experiments: ``digits-cnn`` and ``mlp:<in>-<h>...``.

Neither has pretrained weights: as in the DANN paper, the source knowledge comes from the labelled source data, so
these backbones are trained end to end (``method: finetune`` or an adaptation method), never probed frozen.

``digits-cnn`` is the feature extractor Ganin et al. (2016, JMLR, "Domain-adversarial training of neural networks",
appendix: MNIST -> MNIST-M) use for 28x28 digits, with BatchNorm added after each convolution (our choice: it makes
training from scratch stable at the default learning rate and keeps the scale of the features steady for the
domain losses)::

    x (3x28x28) -> conv5x5(32) -> BN -> ReLU -> maxpool2      (32x12x12)   block "stage1"
                -> conv5x5(48) -> BN -> Dropout2d -> ReLU -> maxpool2  (48x4x4)  block "stage2"
                -> adaptive max-pool to 4x4 -> flatten                  (768)

At 28 px the adaptive pool is the identity, so the features are exactly the paper's 48*4*4 = 768. At other sizes
(at least 16 px) it keeps the feature size at 768, so the head does not depend on ``image_size``. Inputs are grey
digits turned into 3 channels by the loader (or RGB MNIST-M images), normalised with mean 0.5 and std 0.5.

``mlp:<in>-<h1>-<h2>...`` is a tabular feature extractor: ``Linear(in, h1) -> ReLU -> Linear(h1, h2) -> ReLU ...``,
features = the last hidden layer (``h_last``-d), one block per hidden layer. ``mlp:<in>`` has no hidden layer: the
features are the inputs themselves (identity, no parameters), so a linear head on it is multinomial logistic
regression, the classical baseline for tabular shifts. Both rebuild from their spec (the name's numbers are stored
as factory arguments), so saved models load without this module's catalog.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from .base import Preprocessing
from .module_backbone import ModuleBackbone

DIGITS_CNN_SIZE = 28
DIGITS_CNN_DIM = 48 * 4 * 4
DIGITS_MEAN = (0.5, 0.5, 0.5)
DIGITS_STD = (0.5, 0.5, 0.5)


class DigitsCNN(nn.Module):
    """The DANN paper's MNIST feature extractor (two conv stages) with BatchNorm; output ``(N, 768)``.

    Args:
        dropout: channel dropout after the second convolution (a light regulariser; 0.1 keeps source-only training
            on 3,500 digits quick to converge).
    """

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=5), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2)
        )
        self.stage2 = nn.Sequential(
            nn.Conv2d(32, 48, kernel_size=5), nn.BatchNorm2d(48), nn.Dropout2d(dropout), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.pool = nn.AdaptiveMaxPool2d(4)  # identity at 28 px; keeps 768-d features at other sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 16 or x.shape[-2] < 16:
            raise BackboneError(f"digits-cnn needs images of at least 16x16 pixels, not {tuple(x.shape[-2:])}.")
        return self.pool(self.stage2(self.stage1(x))).flatten(1)


def digits_cnn(dropout: float = 0.1, weights: str | None = None) -> ModuleBackbone:
    """The ``digits-cnn`` backbone: :class:`DigitsCNN`, random init, 768-d, 28 px, mean/std 0.5, blocks = 2 stages.

    ``weights``: a local state-dict file of a :class:`DigitsCNN` (e.g. one trained on the source before).
    """
    module = DigitsCNN(dropout=dropout)
    pre = Preprocessing("image", image_size=DIGITS_CNN_SIZE, mean=DIGITS_MEAN, std=DIGITS_STD)
    return ModuleBackbone(
        module, DIGITS_CNN_DIM, pre, blocks=["stage1", "stage2"], weights=weights,
        factory=f"{__name__}:DigitsCNN", factory_kwargs={"dropout": float(dropout)},
    )  # fmt: skip


class MLPFeatures(nn.Module):
    """``Linear -> ReLU`` per hidden layer; ``dims = [in, h1, h2, ...]``; ``dims = [in]`` is the identity."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = [int(d) for d in dims]
        for i, (a, b) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            self.add_module(f"layer{i + 1}", nn.Sequential(nn.Linear(a, b), nn.ReLU(inplace=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dims[0]:
            raise BackboneError(
                f"This mlp backbone takes {self.dims[0]} input columns but got inputs of shape {tuple(x.shape)}; "
                f"name it mlp:{x.shape[-1]}-... to match the data."
            )
        for layer in self.children():  # layer1, layer2, ... in registration order
            x = layer(x)
        return x


_MLP_NAME = re.compile(r"^\d+(-\d+)*$")


def parse_mlp_name(rest: str) -> list[int]:
    """``"2-64-64"`` (the part after ``mlp:``) -> ``[2, 64, 64]``; a malformed name raises :class:`BackboneError`."""
    text = rest.strip()
    dims = [int(t) for t in text.split("-")] if _MLP_NAME.match(text) else []
    if not dims or min(dims) < 1:
        raise BackboneError(
            f"'mlp:{rest}' is not a valid MLP backbone name; write mlp:<inputs>-<hidden>-<hidden> (any number of "
            "hidden layers) with positive whole numbers, e.g. mlp:2-64-64, or mlp:2 for logistic regression."
        )
    if len(dims) > 33 or max(dims) > 1_000_000:
        raise BackboneError(f"'mlp:{rest}' is too large; use at most 32 hidden layers of at most 1,000,000 units.")
    return dims


def mlp(dims: list[int] | str) -> ModuleBackbone:
    """A tabular MLP backbone from ``[in, h1, ...]`` or a name such as ``"2-64-64"``; features = last hidden layer."""
    dims = parse_mlp_name(dims) if isinstance(dims, str) else [int(d) for d in dims]
    module = MLPFeatures(dims)
    blocks: list[Any] = [f"layer{i + 1}" for i in range(len(dims) - 1)]
    return ModuleBackbone(
        module, dims[-1], Preprocessing("tabular"), blocks=blocks,
        factory=f"{__name__}:MLPFeatures", factory_kwargs={"dims": dims},
    )  # fmt: skip
