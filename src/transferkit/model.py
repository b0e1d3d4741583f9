"""The transfer model: a :class:`~transferkit.backbones.base.Backbone` plus a new head for the target label set.

Saved as two files: ``model.safetensors`` (every tensor) and ``model.json`` (label names, backbone spec, head shape,
preprocessing, and how the model predicts: ``inference``). :func:`load_model` rebuilds the architecture from the
JSON alone (no pretrained download, no training config) and loads the tensors strictly.

A structurally pruned model (:mod:`transferkit.compress`) also has ``model.json["pruned"]``: the channel counts of
every convolution, batch-norm and linear layer, as data (:func:`layer_shapes`). Loading builds the original
architecture from the spec and replaces each layer whose counts differ by a new one of the saved counts (the kernel
size, stride and the rest are the architecture's own), then loads the tensors strictly: no pickle of the pruned
module is ever written or read.

A model whose backbone is a packaged catalog backbone with its pretrained weights untouched (a frozen feature source,
:mod:`transferkit.backbones.deferred`) is saved *by reference*: ``model.safetensors`` holds every other tensor (the
head) and ``model.json["backbone_weights"]`` the catalog name and the SHA-256 of those weights; loading builds the
packaged backbone and refuses it if its weights hash differently (another version of the package).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backbones.base import Backbone, Preprocessing
from .backbones.deferred import mark_packaged, state_sha256, weights_reference
from .backbones.taps import Taps
from .errors import RunError, WeightsError
from .io import file_sha256, write_json, write_with
from .version import __version__

MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"
#: How a model predicts unless its fit said otherwise (a trained backbone, as a plain torch model).
DEFAULT_INFERENCE: dict[str, Any] = {"frozen_backbone": False, "engine": "torch"}
ENGINES = ("auto", "onnx", "torch")


def make_head(kind: str, in_dim: int, num_classes: int, hidden: int = 512, dropout: float = 0.0) -> nn.Module:
    """A new classification head: ``linear`` (dropout + Linear) or ``mlp`` (Linear-GELU-dropout-Linear)."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, num_classes))
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )
    raise ValueError(f"unknown head kind {kind!r}")


class TransferModel(nn.Module):
    """Backbone features followed by a new head: ``logits = head(backbone(x))``."""

    def __init__(
        self,
        backbone: Backbone,
        classes: list[str],
        *,
        head: str = "linear",
        head_hidden: int = 512,
        head_dropout: float = 0.0,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classes = list(classes)
        self.head_kind = head
        self.head_hidden = head_hidden
        self.head_dropout = head_dropout
        self.head = make_head(head, backbone.feature_dim, len(classes), head_hidden, head_dropout)
        pre = backbone.preprocessing
        self.image_size = image_size or pre.image_size
        #: How the model predicts, set by the fit pipeline from the method and saved in ``model.json``: a frozen
        #: backbone runs through the fast feature-extraction ``engine`` (auto | onnx | torch) and the head on its
        #: features; a trained one runs as a plain torch model.
        self.inference: dict[str, Any] = dict(DEFAULT_INFERENCE)
        #: The channel counts of a structurally pruned model (:func:`layer_shapes`), saved in ``model.json`` so
        #: that :func:`load_model` rebuilds the pruned architecture; ``None`` for an unpruned model.
        self.pruned: dict[str, Any] | None = None

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    def features(self, x: Any) -> torch.Tensor:
        """Backbone features ``(N, D)``."""
        return self.backbone(x)

    def forward(self, x: Any) -> torch.Tensor:
        return self.head(self.backbone(x))

    def metadata(self) -> dict[str, Any]:
        """Everything :func:`load_model` needs to rebuild this model, as JSON."""
        return {
            "format": "transferkit-model/1",
            "transferkit_version": __version__,
            "classes": self.classes,
            "backbone": self.backbone.spec(),
            "preprocessing": self.preprocessing.to_dict(),
            "image_size": self.image_size,
            "head": {"kind": self.head_kind, "hidden": self.head_hidden, "dropout": self.head_dropout},
            "inference": dict(self.inference),
            **({"pruned": self.pruned} if self.pruned is not None else {}),
        }


def unwrap(model: nn.Module) -> Any:
    """The TransferModel inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def forward_with_features(model: nn.Module, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, logits)`` from one forward pass of the (possibly wrapped) model: the backbone's output is tapped.

    Calling ``backbone`` and ``head`` separately would bypass a DistributedDataParallel wrapper's gradient sync.
    """
    with Taps(unwrap(model).backbone, [""]) as taps:
        logits = model(x)
    return taps.in_order()[0], logits


def freeze_norm_statistics(module: nn.Module) -> None:
    """Put every batch-norm layer of ``module`` in evaluation mode (running statistics stay as they are)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()

def save_model(model: TransferModel, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``folder`` (each atomically)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reference = weights_reference(model.backbone)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
             if reference is None or not k.startswith("backbone.")}
    state = _dedupe_shared(state)
    write_with(folder / MODEL_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    meta = model.metadata()
    if reference is not None:
        meta["backbone_weights"] = reference
    if extra:
        meta.update(extra)
    write_json(folder / MODEL_META, meta)


def load_model(folder: str | Path, *, trust_code: bool = False) -> TransferModel:
    """Rebuild a saved :class:`TransferModel` from its folder, with no network and no training config.

    A model folder is data: nothing it names is imported or run unless ``trust_code`` is true (a folder whose
    backbone is the user's own ``module:`` factory needs it; the built-in backbones do not), see
    :func:`transferkit.backbones.build_from_spec`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .backbones import build_from_spec

    folder = Path(folder)
    meta_path, weights_path = folder / MODEL_META, folder / MODEL_WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise RunError(
            f"'{folder}' is not a saved transferkit model (it needs {MODEL_META} and {MODEL_WEIGHTS}); "
            "point at a finished run folder or a folder written by save()."
        )
    meta = read_model_meta(meta_path)
    reference = meta.get("backbone_weights")
    if reference is not None:
        backbone = _referenced_backbone(reference, meta_path)
    else:
        backbone = build_from_spec(meta["backbone"], trust_code=trust_code, source=f"The model folder '{folder}'")
    pre = Preprocessing.from_dict(meta["preprocessing"])
    if pre.tokenizer and not Path(pre.tokenizer).exists() and backbone.preprocessing.tokenizer:
        pre.tokenizer = backbone.preprocessing.tokenizer  # the packaged tokenizer moved with a new venv
    backbone.preprocessing = pre
    head = meta["head"]
    model = TransferModel(
        backbone,
        meta["classes"],
        head=head["kind"],
        head_hidden=head["hidden"],
        head_dropout=head["dropout"],
        image_size=meta.get("image_size"),
    )
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"'{weights_path}' cannot be read as safetensors ({e}); save the model again.") from None
    model.inference = inference_of(meta)
    if reference is not None:  # the backbone's tensors are the package's, checked above
        state = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()}, **state}
    if meta.get("pruned") is not None:
        apply_layer_shapes(model, meta["pruned"], source=str(meta_path))
        model.pruned = meta["pruned"]  # kept, so that saving the loaded model again records the architecture too
    missing, unexpected = _load_strict(model, state)
    if missing or unexpected:
        raise WeightsError(
            f"'{weights_path}' does not match the model described in {MODEL_META} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); save the model again."
        )
    model.eval()
    return model


def model_file_bytes(folder: str | Path) -> int:
    """What a saved model takes: ``model.safetensors``, plus the packaged backbone tensors it names by reference."""
    folder = Path(folder)
    size = (folder / MODEL_WEIGHTS).stat().st_size
    try:
        reference = json.loads((folder / MODEL_META).read_text()).get("backbone_weights")
    except (OSError, ValueError, AttributeError):
        return size
    extra = reference.get("bytes") if isinstance(reference, dict) else None
    return size + (extra if isinstance(extra, int) and extra > 0 else 0)


def model_sha256(folder: str | Path) -> str:
    """One SHA-256 that says which model a saved folder holds (served as ``/metadata``'s ``model_sha256``, recorded as
    an export's source).

    It is the SHA-256 of ``model.safetensors``, except for a model saved by reference, whose file holds only the
    head: then the hash of the head file and the packaged backbone weights it names (``backbone_weights``), so two
    folders with the same head on different backbone weights do not share a hash.
    """
    import hashlib

    folder = Path(folder)
    weights = file_sha256(folder / MODEL_WEIGHTS)
    try:
        reference = json.loads((folder / MODEL_META).read_text(encoding="utf-8")).get("backbone_weights")
    except (OSError, ValueError, AttributeError):
        return weights
    if not isinstance(reference, dict):
        return weights
    text = f"transferkit-model/1\t{weights}\t{reference.get('catalog')}\t{reference.get('weights_sha256')}"
    return hashlib.sha256(text.encode()).hexdigest()


def _referenced_backbone(reference: Any, meta_path: Path) -> Backbone:
    """The packaged backbone a model saved by reference names, checked against the weights hash it recorded."""
    from .backbones import CATALOG, build_catalog

    name = reference.get("catalog") if isinstance(reference, dict) else None
    sha = reference.get("weights_sha256") if isinstance(reference, dict) else None
    entry = CATALOG.get(name) if isinstance(name, str) else None
    if entry is None or entry.source_files is None or not isinstance(sha, str):
        raise RunError(f"'{meta_path}' is damaged (its 'backbone_weights' must name a packaged catalog backbone and "
                       "its weights hash); save the model again or use an intact copy.")
    backbone = build_catalog(name)
    if state_sha256(backbone) != sha:
        raise WeightsError(
            f"'{meta_path.parent}' was saved with the packaged weights of '{name}' by reference, and the installed "
            "ones differ (another version of the package); install the version it was saved with, or fit again."
        )
    mark_packaged(backbone, name, sha)
    return backbone


#: the top-level entries of ``model.json`` that :func:`load_model` reads, with their JSON types
_META_FIELDS: dict[str, type | tuple[type, ...]] = {"backbone": dict, "preprocessing": dict, "classes": list,
                                                    "head": dict}
_HEAD_FIELDS: dict[str, type | tuple[type, ...]] = {"kind": str, "hidden": int, "dropout": (int, float)}


def read_model_meta(meta_path: Path) -> dict[str, Any]:
    """``model.json`` as a dict whose entries :func:`load_model` reads all exist with the right JSON types.

    A damaged or hand-edited file (not UTF-8, not JSON, an entry missing or of another type) is one sentence, never
    a ``KeyError`` deep in the rebuild.
    """
    def damaged(why: str) -> RunError:
        return RunError(f"'{meta_path}' is damaged ({why}); save the model again or use an intact copy.")

    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise damaged("it is not valid UTF-8 JSON") from None
    if not isinstance(meta, dict):
        raise damaged(f"it holds a {type(meta).__name__}, not an object")
    for where, fields, obj in (("", _META_FIELDS, meta), ("head.", _HEAD_FIELDS, meta.get("head"))):
        if not isinstance(obj, dict):
            break
        for key, kind in fields.items():
            if key not in obj:
                raise damaged(f"the entry '{where}{key}' is missing")
            if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
                raise damaged(f"the entry '{where}{key}' has the wrong type")
    head = meta["head"]
    if head["kind"] not in ("linear", "mlp") or head["hidden"] < 1 or not 0 <= head["dropout"] < 1:
        raise damaged("'head' must have kind linear or mlp, hidden >= 1 and dropout in [0, 1)")
    classes = meta["classes"]
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise damaged("'classes' must be two or more distinct names")
    inference = meta.get("inference")
    if inference is not None and not (isinstance(inference, dict) and isinstance(inference.get("frozen_backbone"), bool)
                                      and inference.get("engine") in ENGINES):
        raise damaged("'inference' must have frozen_backbone true or false and engine auto, onnx or torch")
    if meta.get("image_size") is not None and (not isinstance(meta["image_size"], int) or meta["image_size"] < 1):
        raise damaged("'image_size' must be a positive whole number")
    return meta


#: the layer kinds whose channel counts a pruned model records, with the constructor arguments that hold them
_SHAPE_FIELDS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv1d: ("in_channels", "out_channels", "groups"),
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.BatchNorm1d: ("num_features",),
    nn.BatchNorm2d: ("num_features",),
}
PRUNED_FORMAT = "layer-shapes/1"


def layer_shapes(model: nn.Module) -> dict[str, Any]:
    """The channel counts of ``model``'s layers as JSON data: ``{"format", "feature_dim", "layers": {name: {...}}}``.

    Every layer with parameters must be of a kind in :data:`_SHAPE_FIELDS` or keep its shape when pruned; a pruned
    model holding another kind of layer is caught by the rebuild check of :mod:`transferkit.compress`.
    """
    layers = {}
    for name, m in model.named_modules():
        fields = _SHAPE_FIELDS.get(type(m))
        if fields is not None:
            layers[name] = {"type": type(m).__name__, **{f: int(getattr(m, f)) for f in fields}}
    backbone = getattr(model, "backbone", None)
    return {"format": PRUNED_FORMAT, "feature_dim": int(getattr(backbone, "feature_dim", 0)), "layers": layers}


def apply_layer_shapes(model: nn.Module, shapes: dict[str, Any], *, source: str = "the model") -> None:
    """Give ``model`` (freshly built, unpruned) the channel counts of ``shapes`` (from :func:`layer_shapes`).

    Each recorded layer whose counts differ is replaced by a new layer of the same kind with those counts and every
    other constructor argument (kernel size, stride, padding, bias, eps...) taken from the layer it replaces. Its
    values are placeholders until the saved tensors are loaded.
    """
    def damaged(why: str) -> RunError:
        return RunError(f"'{source}' is damaged ({why}); save the model again or use an intact copy.")

    if not isinstance(shapes, dict) or shapes.get("format") != PRUNED_FORMAT or not isinstance(shapes.get("layers"),
                                                                                                 dict):
        raise damaged(f"'pruned' must be an object of format {PRUNED_FORMAT} with a 'layers' object")
    modules = dict(model.named_modules())
    kinds = {cls.__name__: cls for cls in _SHAPE_FIELDS}
    for name, rec in shapes["layers"].items():
        old = modules.get(name)
        if old is None or not isinstance(rec, dict) or kinds.get(rec.get("type")) is not type(old):
            raise damaged(f"the pruned layer '{name}' is not a {rec.get('type') if isinstance(rec, dict) else '?'} "
                          "of this architecture")
        fields = _SHAPE_FIELDS[type(old)]
        counts = {f: rec.get(f) for f in fields}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in counts.values()):
            raise damaged(f"the pruned layer '{name}' needs whole counts {', '.join(fields)}")
        if all(int(getattr(old, f)) == v for f, v in counts.items()):
            continue
        new = _resized(old, counts)
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent] if parent else model, attr, new)
    backbone = getattr(model, "backbone", None)
    if backbone is not None and isinstance(shapes.get("feature_dim"), int) and shapes["feature_dim"] > 0:
        backbone.feature_dim = shapes["feature_dim"]


def _resized(old: nn.Module, counts: dict[str, int]) -> nn.Module:
    """A new layer like ``old`` with the channel counts ``counts`` (see :func:`apply_layer_shapes`)."""
    if isinstance(old, nn.Conv1d | nn.Conv2d):
        return type(old)(counts["in_channels"], counts["out_channels"], old.kernel_size, stride=old.stride,
                         padding=old.padding, dilation=old.dilation, groups=counts["groups"],
                         bias=old.bias is not None, padding_mode=old.padding_mode)
    if isinstance(old, nn.Linear):
        return nn.Linear(counts["in_features"], counts["out_features"], bias=old.bias is not None)
    return type(old)(counts["num_features"], eps=old.eps, momentum=old.momentum, affine=old.affine,
                     track_running_stats=old.track_running_stats)


def inference_of(meta: dict[str, Any]) -> dict[str, Any]:
    """How the saved model predicts: its ``inference`` entry, or for a folder saved before that entry existed, the
    old top-level ``frozen_backbone`` flag and the feature method's ``method.params.engine``."""
    if isinstance(meta.get("inference"), dict):
        return dict(meta["inference"])
    frozen = meta.get("frozen_backbone") is True
    params = (meta.get("method") or {}).get("params") if isinstance(meta.get("method"), dict) else None
    engine = params.get("engine", "auto") if isinstance(params, dict) else "auto"
    return {"frozen_backbone": frozen, "engine": engine if frozen and engine in ENGINES else
            "auto" if frozen else "torch"}


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights); store a copy of each later alias."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out = {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)) if v.numel() else None
        if key is not None and key in seen:
            v = v.clone()
        elif key is not None:
            seen[key] = k
        out[k] = v
    return out


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    own = model.state_dict()
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise WeightsError(
                f"Tensor '{k}' has shape {tuple(v.shape)} in the file but {tuple(own[k].shape)} in the model; "
                "the weights were saved from a different model, save it again."
            )
    res = model.load_state_dict(state, strict=False)
    return list(res.missing_keys), list(res.unexpected_keys)
