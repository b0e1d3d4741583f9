"""Source models behind one contract (:class:`~transferkit.backbones.base.Backbone`), built by name.

Names:

- catalog names that work offline: ``mobilenet_v2.imagenet``, ``mobilenet_v2.random``, ``minilm-l6``, ``bow-hash``,
  ``digits-cnn`` (random init, for 28 px digits);
- ``mlp:<in>-<h1>-<h2>...``: a tabular MLP (random init), features = the last hidden layer; ``mlp:<in>`` is the
  identity (a linear head on it is logistic regression); see :mod:`transferkit.backbones.small_nets`;
- ``torchvision:<model>`` (or ``tv:``), e.g. ``tv:resnet18``, ``torchvision:resnet50.IMAGENET1K_V1``;
- ``timm:<model>``, e.g. ``timm:resnet18``, ``timm:resnet50.a1_in1k``;
- ``hf:<hub id or local folder>``, e.g. ``hf:bert-base-uncased``, ``hf:/models/my-encoder``;
- ``module:<package.module>:<function>``: your own model, a function returning a Backbone (e.g. a ModuleBackbone);
- ``onnx:<file>`` / ``keras:<file>`` (optionally ``#<tensor>``): a model of another framework converted to a trainable
  PyTorch module, cut before its classifier (or at the named tensor) and parity-checked against ONNX Runtime / Keras
  before use (:mod:`.onnx_backbone`, :mod:`.keras_backbone`, :mod:`.parity`).

Hub names download once for online users (and then work from the cache). Offline, a name whose weights are not
cached fails at once with a :class:`~transferkit.errors.BackboneError` that says how to give a local file. A local
weights file (``weights=``) never needs the network. :func:`build_from_spec` rebuilds a saved model's architecture
without weights and without network.

Feature sources built over other backbones live here too: :class:`TapBackbone` (chosen layers of one, pooled),
:class:`SharedPass` (final features and layers from one pass), :class:`FusedBackbone` (several side by side) and
:func:`feature_backbone` (either, from names). Every intermediate output in the toolkit is read through the one tap
mechanism of :mod:`.taps` (layers by block index or module path, forward hooks).

Trust: a saved spec is data. :func:`build_from_spec` imports and calls nothing that the spec names (a ``module:``
factory, a ``ModuleBackbone`` factory) unless the caller passes ``trust_code=True``; the toolkit's own module factories
(:data:`TRUSTED_FACTORIES`, an explicit list, not a package prefix) need no opt-in, and their JSON arguments are
checked before they are called. Every other spec type builds only by a catalogued name of its library.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import BackboneError, RunError
from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, Preprocessing
from .catalog import CATALOG, build_catalog, imagenet_classes
from .catalog import list_backbones as list_catalog
from .deferred import packaged_feature_backbone
from .fused import FusedBackbone
from .module_backbone import ModuleBackbone, check_blocks
from .tapped import SharedPass, TapBackbone

__all__ = [
    "Backbone",
    "FusedBackbone",
    "ModuleBackbone",
    "Preprocessing",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PREFIXES",
    "SharedPass",
    "TRUSTED_FACTORIES",
    "TapBackbone",
    "build",
    "build_backbone",
    "build_from_spec",
    "check_blocks",
    "code_references",
    "feature_backbone",
    "imagenet_classes",
    "list_backbones",
]

PREFIXES = ("timm:", "torchvision:", "tv:", "hf:", "mlp:", "onnx:", "keras:")

_PATTERNS = {
    "timm:<model>": "image, any timm model, e.g. timm:resnet18, timm:resnet50.a1_in1k (hub weights, cached offline)",
    "torchvision:<model>": "image, any torchvision classifier, e.g. torchvision:resnet18 or tv:mobilenet_v3_small",
    "hf:<id or folder>": "text, any transformers encoder, e.g. hf:bert-base-uncased or hf:/path/to/folder",
    "module:<pkg.mod>:<fn>": "your own nn.Module: fn() returns a ModuleBackbone; add model.weights for a file",
    "mlp:<in>-<h1>-<h2>...": "tabular MLP (Linear+ReLU per hidden layer), random init, e.g. mlp:2-64-64, mlp:2",
    "onnx:<file>[#<tensor>]": "an ONNX model converted to PyTorch (parity-checked), cut before its classifier",
    "keras:<file>[#<tensor>]": "a Keras 3 .keras model (safe mode), exported to ONNX and converted (parity-checked)",
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
    if prefix in ("onnx", "keras"):
        return _foreign(prefix, rest, weights, pretrained=pretrained, name=name)
    if prefix == "mlp":
        from .small_nets import mlp

        bb = mlp(rest)
        if weights is not None:
            from .weights import load_into, load_state_dict

            load_into(bb.model, load_state_dict(weights), strict=True, what=f"backbone '{name}'", source=weights)
        return bb
    raise _unknown(name)


def _foreign(prefix: str, rest: str, weights: str | None, *, pretrained: bool, name: str) -> Backbone:
    """``onnx:<file>[#<tensor>]`` and ``keras:<file>[#<tensor>]``: a model of another framework, converted to a
    trainable module and parity-checked against its own runtime (:mod:`.onnx_backbone`, :mod:`.keras_backbone`)."""
    from .onnx_backbone import OnnxBackbone, parse_onnx_name

    path, tensor = parse_onnx_name(rest)
    if prefix == "keras":
        from .keras_backbone import keras_backbone

        bb: Backbone = keras_backbone(path, feature=tensor, pretrained=pretrained, display_name=name)
    else:
        bb = OnnxBackbone(path, feature=tensor, pretrained=pretrained, display_name=name)
    if weights is not None:
        from .weights import load_into, load_state_dict

        load_into(bb.model, load_state_dict(weights), strict=True, what=f"backbone '{name}'", source=weights)
    return bb


def _names(backbones: Sequence[str] | str) -> list[str]:
    items = [backbones] if isinstance(backbones, str) else list(backbones)
    names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    if not names:
        raise BackboneError("No backbone name was given; name one, or several separated by commas.")
    return names


def feature_backbone(
    backbones: Sequence[str] | str,
    *,
    layers: Sequence[int | str] | None = None,
    pooling: str = "avg",
    weights: str | None = None,
    pretrained: bool = True,
    cards: str | os.PathLike[str] | None = None,
) -> Backbone:
    """The frozen feature source for names such as ``"mobilenet_v2.imagenet"`` or ``"a,b"`` (or ``["a", "b"]``).

    One name gives that backbone (a :class:`TapBackbone` of it at ``layers``, block indices or module paths, when
    given); several give a :class:`FusedBackbone` of them, each tapped at the same ``layers``. ``weights`` (a local
    file) replaces the first backbone's weights. With ``cards`` (a folder), a packaged pretrained catalog backbone
    used whole is described from its card there and built only when its modules are needed (:mod:`.deferred`).
    """
    names = _names(backbones)
    if cards is not None and len(names) == 1 and layers is None and weights is None and pretrained:
        entry = CATALOG.get(names[0])
        if entry is not None and entry.pretrained and entry.source_files is not None:
            name = names[0]
            return packaged_feature_backbone(name, entry.source_files(), lambda: build_catalog(name), cards)
    parts: list[Backbone] = []
    for i, name in enumerate(names):
        bb = build_backbone(name, weights=weights if i == 0 else None, pretrained=pretrained)
        parts.append(TapBackbone(bb, layers, pooling) if layers is not None else bb)
    return parts[0] if len(parts) == 1 else FusedBackbone(parts)

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


def _digits_cnn_kwargs(kwargs: dict[str, Any]) -> None:
    """``DigitsCNN(dropout=...)``: a dropout probability and nothing else."""
    dropout = kwargs.get("dropout", 0.1)
    if set(kwargs) - {"dropout"} or isinstance(dropout, bool) or not isinstance(dropout, int | float) or not (
        0.0 <= dropout < 1.0
    ):
        raise ValueError(f"DigitsCNN takes only dropout in [0, 1), not {kwargs}")


def _mlp_kwargs(kwargs: dict[str, Any]) -> None:
    """``MLPFeatures(dims=[...])``: what an ``mlp:`` name can give (positive whole numbers, the name's size limits)."""
    from .small_nets import parse_mlp_name

    dims = kwargs.get("dims")
    if set(kwargs) != {"dims"} or not isinstance(dims, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in dims
    ):
        raise ValueError(f"MLPFeatures takes only dims, a list of whole numbers, not {kwargs}")
    try:
        parse_mlp_name("-".join(str(d) for d in dims))
    except BackboneError as e:
        raise ValueError(str(e)) from None


#: The toolkit's own ``ModuleBackbone`` factories that a saved model may name without ``trust_code``, each with the
#: check of its keyword arguments (they come from the file too). An explicit list, never a package prefix: a folder
#: naming any other callable, even one inside transferkit (``transferkit.io:write_text``), needs the opt-in.
TRUSTED_FACTORIES: dict[str, Callable[[dict[str, Any]], None]] = {
    "transferkit.backbones.small_nets:DigitsCNN": _digits_cnn_kwargs,
    "transferkit.backbones.small_nets:MLPFeatures": _mlp_kwargs,
}

_STR, _INT, _BOOL, _DICT, _LIST = (str,), (int,), (bool,), (dict,), (list,)
# the fields of each spec type, with the JSON types they must have (None allowed where the builder defaults them)
_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "torchvision": {"name": (_STR, True)},
    "timm": {"name": (_STR, True)},
    "hf": {"name": (_STR, True), "config": (_DICT, True), "pooling": (_STR, False), "normalize": (_BOOL, False),
           "max_length": (_INT, False), "tokenizer": (_STR, False)},
    "module": {"factory": (_STR, True), "factory_kwargs": (_DICT, False), "feature_dim": (_INT, True),
               "preprocessing": (_DICT, True), "blocks": (_LIST, False)},
    "bow": {"tokenizer": (_STR, True), "dim": (_INT, True), "max_length": (_INT, True), "vocab_size": (_INT, True)},
    "factory": {"target": (_STR, True)},
    "tap": {"backbone": (_DICT, True), "layers": (_LIST, False), "pooling": (_STR, False)},
    "fused": {"parts": (_LIST, True)},
    "onnx": {"graph": (_STR, True), "stripped": (_LIST, False), "input_shape": (_LIST, True),
             "feature_dim": (_INT, True), "preprocessing": (_DICT, True), "origin": (_STR, False),
             "source": (_STR, False), "sha256": (_STR, False),
             "feature": (_STR, False), "parity": (_DICT, False)},
}


_PREPROCESSING_FIELDS = frozenset(f.name for f in dataclasses.fields(Preprocessing))


def _damaged(detail: str) -> BackboneError:
    return BackboneError(f"The saved backbone description is damaged ({detail}); save the model again.")


def _check_fields(spec: Any) -> str:
    """The spec's type, after checking that every field it needs is there with the JSON type the builder expects."""
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise BackboneError("The saved backbone description is not a spec dict with a 'type'; save the model again.")
    kind = spec["type"]
    if kind not in _FIELDS:
        raise BackboneError(f"Unknown backbone type '{kind}' in the saved spec; it was saved by a newer transferkit.")
    catalog = spec.get("catalog")
    if catalog is not None and not isinstance(catalog, str):
        raise _damaged("'catalog' is not a name")
    for key, (types, required) in _FIELDS[kind].items():
        value = spec.get(key)
        if value is None:
            if required:
                raise _damaged(f"a '{kind}' spec without '{key}'")
            continue
        if not isinstance(value, types) or (types == _INT and isinstance(value, bool)):
            raise _damaged(f"'{key}' in a '{kind}' spec has the wrong type, {type(value).__name__}")
    pre = spec.get("preprocessing")
    if isinstance(pre, dict) and (set(pre) - _PREPROCESSING_FIELDS or "modality" not in pre):
        raise _damaged(f"its preprocessing has the fields {sorted(pre)}")
    return kind


def code_references(spec: Any) -> list[str]:
    """The callables (``module:function``) that rebuilding ``spec`` would import and run, in spec order.

    The toolkit's own factories (:data:`TRUSTED_FACTORIES`) are not listed. The spec's shape is checked on the way
    (:class:`BackboneError` for a damaged one), so nothing is built from a spec that would fail half way.
    """
    kind = _check_fields(spec)
    if kind == "factory":
        return [spec["target"]]
    if kind == "module":
        return [] if spec["factory"] in TRUSTED_FACTORIES else [spec["factory"]]
    if kind == "tap":
        return code_references(spec["backbone"])
    if kind == "fused":
        return [name for part in spec["parts"] for name in code_references(part)]
    return []


def build_from_spec(spec: dict[str, Any], *, trust_code: bool = False, source: str | None = None) -> Backbone:
    """Rebuild the architecture described by ``Backbone.spec()``: no pretrained weights, no network, no foreign code.

    A saved model carries its own weights, so only the architecture is needed: catalog backbones are rebuilt from
    the catalog with ``pretrained=False`` (MiniLM from the config in its package folder), ``hf`` backbones from the
    config stored in the spec, timm and torchvision ones by name with random initialisation.

    Args:
        spec: the description, e.g. ``model.json``'s ``backbone`` entry.
        trust_code: allow importing and calling the user factories the spec names (``module:`` backbones, a
            ``ModuleBackbone`` around the user's own class). Without it such a spec is refused *before* anything is
            imported, because importing a module alone runs its code.
        source: what the spec came from, for the message (default "The saved model").

    Raises:
        RunError: the spec names a callable outside :data:`TRUSTED_FACTORIES` and ``trust_code`` is false.
        BackboneError: the spec is damaged, unknown, or its architecture cannot be built.
    """
    named = code_references(spec)
    if named and not trust_code:
        raise RunError(
            f"{source or 'The saved model'} names the Python callable '{named[0]}' to rebuild its backbone, and "
            "loading it would import and run that code; pass trust_code=True (command line: --trust-code) only if "
            "it comes from a source you trust."
        )
    return _build_checked(spec, trust_code)


def _build_checked(spec: dict[str, Any], trust_code: bool) -> Backbone:
    """:func:`build_from_spec` after the trust check (``code_references`` has validated the spec's fields)."""
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
        check = TRUSTED_FACTORIES.get(spec["factory"])
        if check is not None:
            try:
                check(spec.get("factory_kwargs") or {})
            except ValueError as e:
                raise _damaged(str(e).rstrip(".")) from None
        return ModuleBackbone.from_spec(spec)
    if kind == "bow":
        from .bow_backbone import BowBackbone

        return BowBackbone.from_spec(spec)
    if kind == "factory":
        return _from_factory(spec["target"], None)
    if kind == "onnx":  # a converted ONNX/Keras graph, embedded as data (.onnx_backbone)
        from .onnx_backbone import OnnxBackbone

        return OnnxBackbone.from_spec(spec)
    if kind == "tap":  # layers of a backbone, pooled (.tapped)
        return TapBackbone(_build_checked(spec["backbone"], trust_code), spec.get("layers"), spec.get("pooling", "avg"))
    # "fused": several backbones concatenated (.fused); _check_fields admits no other type
    return FusedBackbone([_build_checked(p, trust_code) for p in spec["parts"]])


def _catalog_missing(name: str) -> bool:
    """Whether a catalog text model's package is gone (then its stored config rebuilds it instead)."""
    from .catalog import minilm_folder

    try:
        minilm_folder()
    except BackboneError:
        return True
    return False
