"""Any torchvision classification model as a backbone (``torchvision:resnet18``, ``tv:mobilenet_v3_small``).

The model is built by name with :func:`torchvision.models.get_model`; weights come from torchvision's weights enums
(``pretrained=True``: downloaded once into the torch hub cache, a cached file works offline) or from a local file
(``weights=``), which is loaded into the *complete* model so that a file with the classifier keeps it as the source
head. The final ``nn.Linear`` of the classifier is then replaced by ``nn.Identity``: the features are the penultimate
pooled features (1280-d for MobileNetV2, 512-d for ResNet-18) and the old Linear is kept as :meth:`source_head`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from .base import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .module_backbone import WrappedBackbone, param_children_anchors
from .weights import is_network_error, load_into, load_state_dict, offline_error, offline_reason

TORCHVISION_HOST = "download.pytorch.org"
_CLASSIFIER_ATTRS = ("fc", "classifier", "heads", "head")
# MobileNetV2's own stages (rows of its inverted-residual table): stem+t1, 24, 32, 64, 96, 160, 320+1x1 conv
_MOBILENET_V2_ANCHORS = [f"features.{i}" for i in (1, 3, 6, 10, 13, 16, 18)]


def _split_name(name: str) -> tuple[str, str | None]:
    """``resnet50.IMAGENET1K_V1`` -> ``("resnet50", "IMAGENET1K_V1")``; torchvision model names hold no dots."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _weights_enum(arch: str, tag: str | None) -> Any:
    """The torchvision weights entry for ``arch`` (``tag`` or DEFAULT), or ``None`` if it has none."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError):
        return None
    if tag is None:
        return enum.DEFAULT
    try:
        return enum[tag]
    except KeyError:
        valid = ", ".join(w.name for w in enum)
        raise BackboneError(f"torchvision '{arch}' has no weights '{tag}'; valid ones are: {valid}.") from None


def _find_classifier(model: nn.Module) -> str | None:
    """Dotted path of the last ``nn.Linear`` in the model's classifier attribute (fc / classifier / heads / head)."""
    for attr in _CLASSIFIER_ATTRS:
        sub = getattr(model, attr, None)
        if isinstance(sub, nn.Linear):
            return attr
        if isinstance(sub, nn.Module):
            linears = [n for n, m in sub.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                return f"{attr}.{linears[-1]}"
    return None


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, new)


def _drop_aux(model: nn.Module) -> None:
    """Inception v3 / GoogLeNet: drop the auxiliary classifiers (unused for features, they would never get grads)."""
    for attr in ("AuxLogits", "aux1", "aux2"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    if hasattr(model, "aux_logits"):
        model.aux_logits = False


def _downsamples(module: nn.Module) -> bool:
    for m in module.modules():
        stride = getattr(m, "stride", None)
        if stride is None:
            continue
        s = stride if isinstance(stride, tuple | list) else (stride,)
        if any(int(v) > 1 for v in s):
            return True
    return False


def _sequence_anchors(seq: nn.Module, prefix: str) -> list[str]:
    """Blocks over a ``features``-like Sequential: each stage, or stride-delimited groups for long flat sequences."""
    children = [(n, c) for n, c in seq.named_children()]
    if len(children) <= 12:
        return param_children_anchors(seq, prefix)
    anchors: list[str] = []
    last_param: str | None = None
    for name, child in children:
        if _downsamples(child) and last_param is not None and (not anchors or anchors[-1] != last_param):
            anchors.append(last_param)
        if any(True for _ in child.parameters()):
            last_param = f"{prefix}{name}"
    if last_param is not None and (not anchors or anchors[-1] != last_param):
        anchors.append(last_param)
    return anchors


def torchvision_anchors(model: nn.Module, arch: str) -> tuple[list[str], bool]:
    """Natural block ends for torchvision families, and whether the stem is its own block.

    See :func:`~.module_backbone.partition_blocks`: MobileNetV2 gets its 7 inverted-residual stages, ResNets a stem
    and ``layer1..4``, ViT a stem and one block per encoder layer, RegNet a stem and its 4 stages, ``features``
    sequences (MobileNetV3, EfficientNet, ConvNeXt, Swin, VGG, DenseNet) one block per stage (or per stride group
    when flat), anything else one block per top-level child.
    """
    if arch == "mobilenet_v2":
        return list(_MOBILENET_V2_ANCHORS), False
    children = dict(model.named_children())
    if all(f"layer{i}" in children for i in range(1, 5)):  # resnet, resnext, wide_resnet
        return [f"layer{i}" for i in range(1, 5)], True
    encoder = children.get("encoder")
    if encoder is not None and isinstance(getattr(encoder, "layers", None), nn.Module):  # vit
        return [f"encoder.layers.{n}" for n, _ in encoder.layers.named_children()], True
    if "trunk_output" in children:  # regnet
        return [f"trunk_output.{n}" for n, _ in model.trunk_output.named_children()], True
    for attr in ("features", "layers"):  # mobilenet_v3, efficientnet, convnext, swin, vgg, densenet / mnasnet
        seq = children.get(attr)
        if isinstance(seq, nn.Sequential):
            return _sequence_anchors(seq, f"{attr}."), False
    total = sum(p.numel() for p in model.parameters())
    anchors = []
    for path in param_children_anchors(model):  # expand a container that holds most of the network (maxvit)
        sub = model.get_submodule(path)
        big = sum(p.numel() for p in sub.parameters()) > total / 2
        if big and isinstance(sub, nn.Sequential | nn.ModuleList) and len(sub) > 1:
            anchors += param_children_anchors(sub, f"{path}.")
        else:
            anchors.append(path)
    return anchors, False


def _hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


class TorchvisionBackbone(WrappedBackbone):
    """A torchvision classification model without its last Linear: ``forward(x) -> (N, D)`` pooled features.

    Args:
        name: the torchvision model name (``resnet18``), optionally with a weights tag (``resnet50.IMAGENET1K_V1``).
        pretrained: load torchvision's weights for it (downloads once; refused at once when offline and not cached).
        weights: a local weights file for the whole model (classifier optional); overrides ``pretrained``.
        classes: names of the source classes when ``weights`` is a file with an ImageNet-style classifier.
    """

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
        import torchvision.models as tvm

        self.name = name
        self.arch, tag = _split_name(name)
        if self.arch not in tvm.list_models(module=tvm):
            import difflib

            close = difflib.get_close_matches(self.arch, tvm.list_models(module=tvm), n=1, cutoff=0.5)
            hint = f"; did you mean 'torchvision:{close[0]}'?" if close else "; see torchvision.models.list_models()."
            raise BackboneError(f"torchvision has no classification model '{self.arch}'{hint}")
        what = f"torchvision {self.arch}"
        wenum = _weights_enum(self.arch, tag)
        use_hub = pretrained and weights is None
        if use_hub:
            if wenum is None:
                raise BackboneError(f"torchvision '{self.arch}' has no pretrained weights; use pretrained: false.")
            model = _download(tvm, self.arch, wenum, display_name or f"torchvision:{name}")
        else:
            model = tvm.get_model(self.arch, weights=None)
        head_path = _find_classifier(model)
        if head_path is None:
            raise BackboneError(
                f"torchvision '{self.arch}' has no Linear classifier to cut off; wrap it yourself with ModuleBackbone."
            )
        has_head = use_hub
        source_classes = None
        if use_hub:
            source_classes = list(wenum.meta.get("categories") or []) or None
        if weights is not None:
            res = load_into(model, load_state_dict(weights), what=what, source=weights, optional=[head_path])
            has_head = not any(k.startswith(head_path + ".") for k in res.missing)
            source_classes = classes
        head = model.get_submodule(head_path)
        self.feature_dim = int(head.in_features)
        _set_submodule(model, head_path, nn.Identity())
        _drop_aux(model)
        self.model = model
        self.head_path = head_path
        self.set_source_head(head if has_head else None, source_classes)
        self.preprocessing = _preprocessing(wenum)

    def block_anchors(self) -> list[str]:
        anchors, self.separate_stem = torchvision_anchors(self.model, self.arch)
        return anchors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, tuple):  # InceptionOutputs / GoogLeNetOutputs
            out = out[0]
        return out.flatten(1) if out.ndim > 2 else out

    def _spec(self) -> dict[str, Any]:
        return {"type": "torchvision", "name": self.name}


def _download(tvm: Any, arch: str, wenum: Any, shown: str) -> nn.Module:
    """Build ``arch`` with torchvision weights: from the torch hub cache if there, else download (fail fast offline)."""
    if not _hub_file(wenum.url).is_file():
        reason = offline_reason(TORCHVISION_HOST)
        if reason is not None:
            raise offline_error(shown, reason)
    try:
        return tvm.get_model(arch, weights=wenum)
    except Exception as e:
        if is_network_error(e):
            raise offline_error(shown, f"{type(e).__name__}: {e}") from None
        raise


def _preprocessing(wenum: Any) -> Preprocessing:
    """Image size and normalisation from the weights' eval transform (224 px, ImageNet statistics otherwise)."""
    size, resize, mean, std, interp = 224, 256, IMAGENET_MEAN, IMAGENET_STD, "bilinear"
    if wenum is not None:
        try:
            t = wenum.transforms()
            size = int(t.crop_size[0])
            resize = int(t.resize_size[0]) if getattr(t, "resize_size", None) else size
            mean, std = tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
            interp = str(t.interpolation.value)
        except (AttributeError, TypeError, IndexError):
            pass
    return Preprocessing(
        "image", image_size=size, mean=mean, std=std, extra={"resize_size": resize, "interpolation": interp}
    )
