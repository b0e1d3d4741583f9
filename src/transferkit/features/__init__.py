"""Frozen-feature transfer: features computed once by a frozen backbone, cached on disk, fast on any hardware.

* :func:`extract_features` runs a backbone over a :class:`~transferkit.data.base.Dataset` (ONNX Runtime on CPU
  after a parity check, PyTorch on a GPU) and caches the result in a :class:`FeatureCache`, keyed by
  :func:`feature_key` (backbone, weights hash, preprocessing, image size, layers, pooling, data inputs).
* :class:`TapBackbone` reads chosen blocks of a backbone; :class:`FusedBackbone` concatenates several backbones;
  :func:`feature_backbone` builds either from names.
"""

from .cache import FeatureCache, default_cache
from .extract import extract_features
from .keys import feature_key, weights_sha256
from .taps import FusedBackbone, SharedPass, TapBackbone, feature_backbone

__all__ = [
    "FeatureCache",
    "FusedBackbone",
    "SharedPass",
    "TapBackbone",
    "default_cache",
    "extract_features",
    "feature_backbone",
    "feature_key",
    "weights_sha256",
]
