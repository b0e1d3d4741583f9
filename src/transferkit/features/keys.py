"""What a cached feature set (or an exported model) depends on, as a JSON-able dict of key parts.

Features change when any of these change, and only then:

* the backbone architecture, as its :meth:`~transferkit.backbones.base.Backbone.spec` (a tapped backbone's spec holds
  its layers and pooling, a fused one's spec its parts);
* its weights: a SHA-256 over every ``state_dict`` tensor (name, dtype, shape and bytes, in sorted name order), so
  fine-tuned weights never reuse features of the pretrained ones;
* the preprocessing (normalisation, tokenizer, lengths) and the image size actually used;
* the data inputs: :meth:`Dataset.fingerprint` with ``labels=False``, so relabelled data keeps its features.

:meth:`FeatureCache.key <transferkit.features.cache.FeatureCache.key>` hashes the canonical JSON of these parts.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from ..backbones.base import Backbone
from ..backbones.deferred import declared_weights_sha256, state_sha256
from ..data.base import Dataset

FEATURES_FORMAT = "transferkit-features/1"
MODEL_FORMAT = "transferkit-onnx/1"


def canonical_json(parts: Any) -> str:
    """JSON with sorted keys and no spaces: equal parts give equal text (the input of the key hash)."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of every tensor in ``module.state_dict()`` (names, dtypes, shapes and bytes, sorted by name).

    A deferred packaged backbone (not built yet) gives the hash its card recorded when it was last built, which the
    build checks again (:mod:`transferkit.backbones.deferred`).
    """
    return declared_weights_sha256(module) or state_sha256(module)


def resolved_image_size(backbone: Backbone, data: Dataset | None, image_size: int | None) -> int | None:
    """The square side images are resized to (``image_size`` or the backbone's own); ``None`` for text and tables."""
    modality = data.modality if data is not None else backbone.preprocessing.modality
    if modality != "image":
        return None
    size = image_size or backbone.preprocessing.image_size
    return int(size) if size else None


def feature_key(backbone: Backbone, data: Dataset, image_size: int | None) -> dict[str, Any]:
    """The key parts of ``backbone``'s features on ``data`` at ``image_size`` (see the module docstring)."""
    return {
        "format": FEATURES_FORMAT,
        "backbone": backbone.spec(),
        "weights": weights_sha256(backbone),
        "preprocessing": backbone.preprocessing.to_dict(),
        "image_size": resolved_image_size(backbone, data, image_size),
        "data": data.fingerprint(labels=False),
    }


def model_key(backbone: Backbone, image_size: int | None, input_names: list[str]) -> dict[str, Any]:
    """The key parts of an exported ONNX model: those of the features, less the data, plus the graph inputs."""
    return {
        "format": MODEL_FORMAT,
        "backbone": backbone.spec(),
        "weights": weights_sha256(backbone),
        "image_size": image_size if backbone.preprocessing.modality == "image" else None,
        "inputs": list(input_names),
        "torch": torch.__version__,
    }


def describe_spec(spec: dict[str, Any]) -> str:
    """A short human name for a backbone spec (what ``transferkit cache list`` shows)."""
    kind = spec.get("type")
    if kind == "tap":
        return describe_spec(spec.get("backbone", {}))
    if kind == "fused":
        return "+".join(describe_spec(p) for p in spec.get("parts", []))
    if spec.get("catalog"):
        return str(spec["catalog"])
    if kind == "factory":
        return f"module:{spec.get('target')}"
    name = spec.get("name") or spec.get("factory")
    return f"{kind}:{name}" if kind and name else str(kind or spec.get("kind") or "backbone")


def taps_of(spec: dict[str, Any]) -> tuple[Any, Any]:
    """``(layers, pooling)`` of a spec: one value when all parts agree, a list per part when they differ."""
    found: list[tuple[Any, Any]] = []

    def walk(s: dict[str, Any]) -> None:
        if s.get("type") == "tap":
            found.append((s.get("layers"), s.get("pooling") if s.get("layers") is not None else None))
        elif s.get("type") == "fused":
            for p in s.get("parts", []):
                walk(p)
        else:
            found.append((None, None))

    walk(spec)
    layers = [f[0] for f in found]
    pools = [f[1] for f in found]
    one_layers = layers[0] if all(v == layers[0] for v in layers) else layers
    one_pool = pools[0] if all(v == pools[0] for v in pools) else pools
    return one_layers, one_pool
