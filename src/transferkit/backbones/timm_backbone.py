"""Any timm model as a backbone (``timm:resnet18``, ``timm:resnet50.a1_in1k``, ``timm:vit_small_patch16_224``).

The model is created with its classifier, weights are loaded (timm's pretrained weights, or a local file), the
classifier is kept as :meth:`source_head`, and ``reset_classifier(0)`` leaves a network whose output is the pooled
pre-logits feature vector. Blocks follow timm's own ``feature_info`` (stem, then each stage or transformer block).

Pretrained weights come from the Hugging Face hub (or an older release URL). A copy already in the local HF or torch
hub cache is used directly, with no network at all; otherwise, when offline, the name fails at once with a sentence
saying how to give a local file. Preprocessing comes from ``timm.data.resolve_data_config``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from .base import Preprocessing
from .module_backbone import WrappedBackbone, param_children_anchors
from .weights import is_network_error, load_into, load_state_dict, offline_error, offline_reason

_HF_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin", "open_clip_model.safetensors")


def _hf_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def _unknown(name: str) -> BackboneError:
    import difflib

    import timm

    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=1, cutoff=0.6)
    hint = f"; did you mean 'timm:{close[0]}'?" if close else "; see timm.list_models()."
    return BackboneError(f"timm has no model '{name}'{hint}")


def cached_pretrained_file(name: str) -> str | None:
    """Path of timm's pretrained weights for ``name`` in the local HF or torch hub cache, or ``None``."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.file and Path(cfg.file).is_file():
        return str(cfg.file)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_FILES
        for fname in files:
            try:
                hit = try_to_load_from_cache(repo, fname, revision=revision or None)
            except Exception:  # noqa: BLE001 - a malformed cache entry only means "not cached"
                hit = None
            if isinstance(hit, str) and Path(hit).is_file():
                return hit
    if cfg.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
        if local.is_file():
            return str(local)
    return None


def create_timm_model(name: str, *, pretrained: bool, shown: str | None = None) -> nn.Module:
    """``timm.create_model(name)`` with its classifier: cached weights used directly, fast failure offline."""
    import timm
    import timm.models

    if not timm.is_model(name.split(".")[0]):
        raise _unknown(name)
    shown = shown or f"timm:{name}"
    if not pretrained:
        return timm.create_model(name, pretrained=False)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise BackboneError(f"timm model '{name}' has no pretrained weights; use pretrained: false or a tagged name.")
    cached = cached_pretrained_file(name)
    if cached is not None:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
    host = _hf_host() if cfg.hf_hub_id else (cfg.url.split("/")[2] if cfg.url and "//" in cfg.url else _hf_host())
    reason = offline_reason(host)
    if reason is not None:
        raise offline_error(shown, reason)
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as e:
        if is_network_error(e):
            raise offline_error(shown, f"{type(e).__name__}: {e}") from None
        raise


def _classifier_paths(model: nn.Module) -> list[str]:
    cls = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    return [cls] if isinstance(cls, str) else list(cls)


def timm_anchors(model: nn.Module) -> list[str]:
    """Block ends from timm's ``feature_info`` (stages or transformer blocks), else ``stages``/``blocks`` children."""
    names = dict(model.named_modules())
    anchors = []
    for info in getattr(model, "feature_info", None) or []:
        mod = info.get("module") if isinstance(info, dict) else None
        if mod and mod in names and mod not in anchors:
            anchors.append(mod)
    if anchors:
        return anchors
    for attr in ("stages", "blocks", "layers"):
        seq = getattr(model, attr, None)
        if isinstance(seq, nn.Sequential | nn.ModuleList) and len(seq) > 0:
            return [f"{attr}.{n}" for n, _ in seq.named_children()]
    return param_children_anchors(model)


class TimmBackbone(WrappedBackbone):
    """A timm model with ``num_classes=0``: ``forward(x) -> (N, D)`` pooled pre-logits features.

    Args:
        name: a timm model name, optionally with a pretrained tag (``resnet50.a1_in1k``).
        pretrained: load timm's pretrained weights (cache first; fails at once offline when not cached).
        weights: a local weights file for the whole model (classifier optional); overrides ``pretrained``.
        classes: names of the source classes for a file with a classifier.
    """

    separate_stem = True

    def __init__(
        self,
        name: str,
        *,
        pretrained: bool = False,
        weights: str | os.PathLike[str] | None = None,
        classes: list[str] | None = None,
        display_name: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        model = create_timm_model(name, pretrained=pretrained and weights is None, shown=display_name)
        head_paths = _classifier_paths(model)
        has_head = pretrained and weights is None
        source_classes = _timm_classes(model) if has_head else None
        if weights is not None:
            res = load_into(model, load_state_dict(weights), what=f"timm {name}", source=weights, optional=head_paths)
            has_head = bool(head_paths) and not any(
                k == p or k.startswith(p + ".") for k in res.missing for p in head_paths
            )
            source_classes = classes
        head = model.get_classifier() if has_head else None
        model.reset_classifier(0)
        self.model = model
        self.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.set_source_head(head if isinstance(head, nn.Module) and _has_params(head) else None, source_classes)
        self.preprocessing = _preprocessing(model)

    def block_anchors(self) -> list[str]:
        return timm_anchors(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.flatten(1) if out.ndim > 2 else out

    def _spec(self) -> dict[str, Any]:
        return {"type": "timm", "name": self.name}


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def _timm_classes(model: nn.Module) -> list[str] | None:
    """Class names of the pretrained head when timm knows its label set (ImageNet-1k/22k), offline."""
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        return list(ImageNetInfo(subset).label_descriptions()) if subset else None
    except Exception:  # noqa: BLE001 - names are optional extras
        return None


def _preprocessing(model: nn.Module) -> Preprocessing:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    crop = float(cfg.get("crop_pct", 1.0) or 1.0)
    return Preprocessing(
        "image",
        image_size=size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        extra={
            "resize_size": int(round(size / crop)),
            "interpolation": str(cfg.get("interpolation", "bilinear")),
            "crop_pct": crop,
        },
    )
