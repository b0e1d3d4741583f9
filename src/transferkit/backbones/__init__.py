"""Source models behind one contract (:class:`~transferkit.backbones.base.Backbone`), built by name.

Names:

- catalog names that work offline: ``mobilenet_v2.imagenet``, ``mobilenet_v2.random``, ``minilm-l6``, ``bow-hash``,
  ``digits-cnn`` (random init, for 28 px digits);
- ``mlp:<in>-<h1>-<h2>...``: a tabular MLP (random init), features = the last hidden layer; ``mlp:<in>`` is the
  identity (a linear head on it is logistic regression); see :mod:`transferkit.backbones.small_nets`;
- ``torchvision:<model>`` (or ``tv:``), e.g. ``tv:resnet18``, ``torchvision:resnet50.IMAGENET1K_V1``;
- ``timm:<model>``, e.g. ``timm:resnet18``, ``timm:resnet50.a1_in1k``;
- ``hf:<hub id or local folder>``, e.g. ``hf:bert-base-uncased``, ``hf:/models/my-encoder``;
- ``module:<package.module>:<function>``: your own model, a function returning a Backbone (e.g. a ModuleBackbone).

Hub names download once for online users (and then work from the cache). Offline, a name whose weights are not
cached fails at once with a :class:`~transferkit.errors.BackboneError` that says how to give a local file. A local
weights file (``weights=``) never needs the network. :func:`build_from_spec` rebuilds a saved model's architecture
without weights and without network.
"""

from __future__ import annotations

import difflib
from typing import Any

from ..errors import BackboneError
from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, Preprocessing
from .catalog import CATALOG, build_catalog, imagenet_classes
from .catalog import list_backbones as list_catalog
from .module_backbone import ModuleBackbone, check_blocks

__all__ = [
    "Backbone",
    "ModuleBackbone",
    "Preprocessing",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PREFIXES",
    "build",
    "build_backbone",
    "build_from_spec",
    "check_blocks",
    "imagenet_classes",
    "list_backbones",
]

PREFIXES = ("timm:", "torchvision:", "tv:", "hf:", "mlp:")

_PATTERNS = {
    "timm:<model>": "image, any timm model, e.g. timm:resnet18, timm:resnet50.a1_in1k (hub weights, cached offline)",
    "torchvision:<model>": "image, any torchvision classifier, e.g. torchvision:resnet18 or tv:mobilenet_v3_small",
    "hf:<id or folder>": "text, any transformers encoder, e.g. hf:bert-base-uncased or hf:/path/to/folder",
    "module:<pkg.mod>:<fn>": "your own nn.Module: fn() returns a ModuleBackbone; add model.weights for a file",
    "mlp:<in>-<h1>-<h2>...": "tabular MLP (Linear+ReLU per hidden layer), random init, e.g. mlp:2-64-64, mlp:2",
}


def list_backbones() -> dict[str, str]:
    """Catalog names (offline) and the hub prefixes, each with a one-line description (``transferkit backbones``)."""
    return {**list_catalog(), **_PATTERNS}


def _unknown(name: str) -> BackboneError:
    close = difflib.get_close_matches(name, list(CATALOG), n=1, cutoff=0.4)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return BackboneError(
        f"Unknown backbone '{name}'; {hint}valid names are {', '.join(CATALOG)}, or a hub model with one of the "
        f"prefixes {', '.join(PREFIXES)} (e.g. timm:resnet18)."
    )


def build_backbone(name: str, *, weights: str | None = None, pretrained: bool = True) -> Backbone:
    """Build the backbone called ``name`` (see the module docstring for the accepted names).

    Args:
        name: a catalog name or a prefixed hub name.
        weights: a local weights file (``.safetensors`` or a torch state dict, never arbitrary pickles) that replaces
            the pretrained weights; for ``hf:`` names it is loaded into the architecture from the config.
        pretrained: ``False`` builds the same architecture with random initialisation (and downloads nothing,
            except an ``hf:`` hub name's config).

    Raises:
        BackboneError: unknown name (with the closest valid one), or hub weights that cannot be had offline.
        WeightsError: the weights file is missing, unsafe, or for another architecture.
    """
    if not isinstance(name, str) or not name.strip():
        raise BackboneError("The backbone name is empty; give a catalog name such as mobilenet_v2.imagenet.")
    name = name.strip()
    weights = str(weights) if weights is not None else None
    if name in CATALOG:
        return build_catalog(name, weights=weights, pretrained=pretrained)
    prefix, sep, rest = name.partition(":")
    prefix = prefix.lower()
    if not sep or (not rest and prefix != "mlp"):  # a bare "mlp:" gets the MLP naming help below
        raise _unknown(name)
    if prefix in ("torchvision", "tv"):
        from .torchvision_backbone import TorchvisionBackbone

        return TorchvisionBackbone(rest, pretrained=pretrained, weights=weights, display_name=name)
    if prefix == "timm":
        from .timm_backbone import TimmBackbone

        return TimmBackbone(rest, pretrained=pretrained, weights=weights, display_name=name)
    if prefix == "hf":
        from .hf_backbone import HFBackbone

        return HFBackbone(rest, pretrained=pretrained, weights=weights, display_name=name)
    if prefix == "module":
        return _from_factory(rest, weights, pretrained=pretrained)
    if prefix == "mlp":
        from .small_nets import mlp

        bb = mlp(rest)
        if weights is not None:
            from .weights import load_into, load_state_dict

            load_into(bb.model, load_state_dict(weights), strict=True, what=f"backbone '{name}'", source=weights)
        return bb
    raise _unknown(name)


def _from_factory(target: str, weights: str | None, *, pretrained: bool = True) -> Backbone:
    """``module:package.module:function``: the user's own model, built by a function that returns a Backbone.

    The function typically wraps any ``nn.Module`` in :class:`ModuleBackbone` (feature size, preprocessing, blocks).
    The module is imported from the current folder or the Python path (:func:`~.module_backbone.run_factory`).
    ``weights`` then loads a local file into it (a stock checkpoint's classifier may be in the file, see
    :func:`~.module_backbone.load_user_weights`); without weights, ``pretrained=False`` re-initialises it. The spec
    records the target, so a saved model rebuilds by calling the same function again (the package must be importable
    where the model is loaded).
    """
    from .module_backbone import load_user_weights, randomise, run_factory

    bb = run_factory(target)
    if weights is not None:
        load_user_weights(bb, weights, what=f"backbone 'module:{target}'")
    elif not pretrained:
        randomise(bb, f"module:{target}")
    base_spec = bb.spec
    bb.spec = lambda: {"type": "factory", "target": target, "inner": base_spec()}  # type: ignore[method-assign]
    return bb


build = build_backbone  # the name base.py's docstring uses


def build_from_spec(spec: dict[str, Any]) -> Backbone:
    """Rebuild the architecture described by ``Backbone.spec()``: no pretrained weights, no network.

    A saved model carries its own weights, so only the architecture is needed: catalog backbones are rebuilt from
    the catalog with ``pretrained=False`` (MiniLM from the config in its package folder), ``hf`` backbones from the
    config stored in the spec, timm and torchvision ones by name with random initialisation.
    """
    if not isinstance(spec, dict) or "type" not in spec:
        raise BackboneError("The saved backbone description is not a spec dict with a 'type'; save the model again.")
    kind = spec["type"]
    catalog = spec.get("catalog")
    if catalog in CATALOG and not (kind == "hf" and _catalog_missing(catalog)):
        return build_catalog(catalog, pretrained=False)
    if kind == "torchvision":
        from .torchvision_backbone import TorchvisionBackbone

        return TorchvisionBackbone(spec["name"], pretrained=False)
    if kind == "timm":
        from .timm_backbone import TimmBackbone

        return TimmBackbone(spec["name"], pretrained=False)
    if kind == "hf":
        from .hf_backbone import HFBackbone

        bb = HFBackbone(
            spec["name"],
            pretrained=False,
            config=spec["config"],
            pooling=spec.get("pooling", "mean"),
            normalize=spec.get("normalize", False),
            max_length=spec.get("max_length", 128),
            tokenizer=spec.get("tokenizer"),
        )
        if catalog is not None:
            bb.catalog_name = catalog
        return bb
    if kind == "module":
        return ModuleBackbone.from_spec(spec)
    if kind == "bow":
        from .bow_backbone import BowBackbone

        return BowBackbone.from_spec(spec)
    if kind == "factory":
        return _from_factory(spec["target"], None)
    if kind == "tap":  # blocks of a backbone, pooled (transferkit.features)
        from ..features.taps import TapBackbone

        return TapBackbone(build_from_spec(spec["backbone"]), spec.get("layers"), spec.get("pooling", "avg"))
    if kind == "fused":  # several backbones concatenated (transferkit.features)
        from ..features.taps import FusedBackbone

        return FusedBackbone([build_from_spec(p) for p in spec["parts"]])
    raise BackboneError(f"Unknown backbone type '{kind}' in the saved spec; it was saved by a newer transferkit.")


def _catalog_missing(name: str) -> bool:
    """Whether a catalog text model's package is gone (then its stored config rebuilds it instead)."""
    from .catalog import minilm_folder

    try:
        minilm_folder()
    except BackboneError:
        return True
    return False
