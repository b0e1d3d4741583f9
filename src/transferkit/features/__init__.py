"""Frozen-feature transfer: features computed once by a frozen backbone, cached on disk, fast on any hardware.

* :func:`extract_features` runs a backbone over a :class:`~transferkit.data.base.Dataset` (ONNX Runtime on CPU
  after a parity check, PyTorch on a GPU) and caches the result in a :class:`FeatureCache`, keyed by
  :func:`feature_key` (backbone, weights hash, preprocessing, image size, layers, pooling, data inputs).

The feature sources themselves are backbones: :class:`~transferkit.backbones.TapBackbone` (chosen layers of one),
:class:`~transferkit.backbones.FusedBackbone` (several side by side) and
:func:`~transferkit.backbones.feature_backbone` (either, from names) live in :mod:`transferkit.backbones`.
"""

from .cache import FeatureCache, default_cache
from .extract import extract_features
from .keys import feature_key, weights_sha256

__all__ = [
    "FeatureCache",
    "default_cache",
    "extract_features",
    "feature_key",
    "weights_sha256",
]
