"""A packaged catalog backbone used as a frozen feature source, built only when something needs its modules.

Why: a cached ``probe`` re-run needs the backbone's *description* (spec, preprocessing, feature width and a hash of
its weights, which key the feature cache) but never runs it: its features are on disk. Building MobileNetV2 imports
torchvision, which imports ``torch._dynamo`` (about 1 s of a 3.5 s re-run), and MiniLM imports transformers. So the
first time a packaged backbone is built as a feature source, its description is kept in a small JSON *card* beside
the feature cache; later fits read the card and hold a :class:`DeferredBackbone`, which answers the description
itself and turns into the real backbone (the same object, by adopting the real one's state and class) the moment
anything needs modules: a forward pass, its blocks, its source head, loading a state into it.

A card is keyed by the catalog name, the SHA-256 of the packaged files the weights come from, and the transferkit,
torch and torchvision versions, so a reinstall with other weights or another architecture definition gets a new
card; when a deferred backbone is built its weights are hashed again and a card that disagrees is refused (a
damaged or forged card can never silently key features). A deferred backbone holds untouched pretrained weights,
so a model around it is saved *by reference* (:func:`weights_reference`): ``model.safetensors`` holds the head
only and ``model.json`` the catalog name with the weights hash, which :func:`transferkit.model.load_model` checks
against the installed package (a probe's folder is then kilobytes, not the whole backbone).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from ..io import file_sha256, write_json
from ..version import __version__
from .base import Backbone, Preprocessing

CARD_FORMAT = "transferkit-backbone-card/1"
#: the module attribute that marks a backbone built from a card, holding the card
_REFERENCE_ATTR = "_weights_card"
#: the nn.Module entries of a deferred backbone kept when it adopts the real one (hooks registered on it meanwhile)
_KEEP = ("training",)


def state_sha256(module: nn.Module) -> str:
    """SHA-256 of every tensor in ``module.state_dict()`` (names, dtypes, shapes and bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach()
        h.update(f"{name}\x00{t.dtype}\x00{tuple(t.shape)}\x00".encode())
        flat = t.to("cpu").contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
    return h.hexdigest()


def state_bytes(module: nn.Module) -> int:
    """Bytes of every tensor in ``module.state_dict()`` (what saving it whole would write, less the file header)."""
    return int(sum(t.numel() * t.element_size() for t in module.state_dict().values()))


def card_key(name: str, files: list[Path]) -> str:
    """What a card depends on: the catalog name, the packaged files' contents and the library versions."""
    import importlib.metadata as md

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "-"

    parts = {"format": CARD_FORMAT, "name": name, "transferkit": __version__, "torch": torch.__version__,
             "torchvision": version("torchvision"), "transformers": version("transformers"),
             "files": [[f.name, file_sha256(f)] for f in files]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _read_card(path: Path, name: str) -> dict[str, Any] | None:
    """The card at ``path`` when it is whole and for ``name``; ``None`` otherwise (it is then rebuilt)."""
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = (isinstance(card, dict) and card.get("format") == CARD_FORMAT and card.get("name") == name
          and isinstance(card.get("spec"), dict) and isinstance(card.get("preprocessing"), dict)
          and isinstance(card.get("feature_dim"), int) and isinstance(card.get("weights_sha256"), str)
          and isinstance(card.get("num_parameters"), int) and isinstance(card.get("num_bytes"), int))
    return card if ok else None


def _card_of(backbone: Backbone, name: str, key: str) -> dict[str, Any]:
    return {"format": CARD_FORMAT, "name": name, "key": key, "spec": backbone.spec(),
            "preprocessing": backbone.preprocessing.to_dict(), "feature_dim": int(backbone.feature_dim),
            "weights_sha256": state_sha256(backbone), "num_bytes": state_bytes(backbone),
            "num_parameters": int(sum(p.numel() for p in backbone.parameters()))}


class DeferredBackbone(Backbone):
    """A packaged backbone known from its card; it becomes the real backbone when its modules are needed."""

    def __init__(self, name: str, card: dict[str, Any], build: Callable[[], Backbone]) -> None:
        super().__init__()
        self.__dict__["_deferred"] = (name, build, [])  # name, builder, the _apply functions to replay
        self.__dict__[_REFERENCE_ATTR] = card
        self.feature_dim = int(card["feature_dim"])
        self.preprocessing = Preprocessing.from_dict(card["preprocessing"])
        self.catalog_name = name

    # -- answered from the card -----------------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.__dict__[_REFERENCE_ATTR]["spec"]))

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> DeferredBackbone:
        # .to() / .cuda() / .half() before the modules exist: replayed on them when they are built
        self.__dict__["_deferred"][2].append((fn, args, kwargs))
        return self

    def extra_repr(self) -> str:
        return f"{self.__dict__['_deferred'][0]}, deferred"

    # -- everything else builds it ----------------------------------------------------------------------------------
    def materialise(self) -> Backbone:
        """Build the real backbone, check its weights against the card, and become it (same object)."""
        name, build, pending = self.__dict__["_deferred"]
        card = self.__dict__[_REFERENCE_ATTR]
        real = build()
        if state_sha256(real) != card["weights_sha256"]:
            raise BackboneError(
                f"The cached description of backbone '{name}' does not match its installed weights; run "
                "`transferkit cache clear` and try again."
            )
        keep = {k: v for k, v in self.__dict__.items() if k in _KEEP or "hook" in k}
        self.__dict__.clear()
        self.__dict__.update(real.__dict__)
        self.__dict__.update(keep)
        self.__dict__[_REFERENCE_ATTR] = card
        self.__class__ = type(real)  # type: ignore[assignment]
        for fn, args, kwargs in pending:
            self._apply(fn, *args, **kwargs)
        self.train(self.training)
        self.requires_grad_(False)  # a frozen feature source
        return self

    def forward(self, x: Any) -> torch.Tensor:
        self.materialise()
        return self.forward(x)

    def blocks(self) -> list[nn.Module]:
        self.materialise()
        return self.blocks()

    def source_head(self) -> nn.Module | None:
        self.materialise()
        return self.source_head()

    def source_classes(self) -> list[str] | None:
        self.materialise()
        return self.source_classes()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        if any(k.startswith(prefix) for k in state_dict):
            self.materialise()
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
        self.materialise()
        return getattr(self, name)


def is_deferred(module: nn.Module) -> bool:
    """Whether ``module`` is a packaged backbone not built yet (it holds no parameters so far)."""
    return isinstance(module, DeferredBackbone)


def declared_weights_sha256(module: nn.Module) -> str | None:
    """The weights hash a deferred backbone's card declares (``None`` for any module that has its weights)."""
    return module.__dict__[_REFERENCE_ATTR]["weights_sha256"] if is_deferred(module) else None


def declared_parameter_count(module: nn.Module) -> int:
    """Parameters of ``module``, counting those of deferred backbones inside it that are not built yet."""
    own = sum(p.numel() for p in module.parameters())
    return own + sum(m.__dict__[_REFERENCE_ATTR]["num_parameters"] for m in module.modules() if is_deferred(m))


def weights_reference(backbone: nn.Module) -> dict[str, Any] | None:
    """``{"catalog", "weights_sha256", "bytes"}`` when ``backbone`` holds its package's untouched weights, else
    ``None`` (``bytes``: what its tensors would take in the model file, so sizes of models saved by reference stay
    comparable).

    A deferred backbone does by construction; one built from a card does while its weights still hash to the card's
    (a frozen feature source never changes them; anything that trained it is saved whole).
    """
    card = backbone.__dict__.get(_REFERENCE_ATTR)
    if card is None:
        return None
    if not is_deferred(backbone) and state_sha256(backbone) != card["weights_sha256"]:
        return None
    num_bytes = card.get("num_bytes")
    return {"catalog": card["name"], "weights_sha256": card["weights_sha256"],
            "bytes": int(num_bytes) if isinstance(num_bytes, int) else state_bytes(backbone)}


def mark_packaged(backbone: nn.Module, name: str, weights_sha256: str) -> None:
    """Record that ``backbone`` was built with catalog ``name``'s packaged weights (hash ``weights_sha256``), so
    :func:`weights_reference` saves it by reference while they stay untouched."""
    backbone.__dict__[_REFERENCE_ATTR] = {"name": name, "weights_sha256": weights_sha256,
                                          "num_bytes": state_bytes(backbone)}


def packaged_feature_backbone(name: str, files: list[Path], build: Callable[[], Backbone],
                              cards: str | os.PathLike[str]) -> Backbone:
    """Catalog backbone ``name`` (pretrained, from the packaged ``files``) as a frozen feature source.

    With a card for it under ``cards``, a :class:`DeferredBackbone`; otherwise the real backbone, built now, whose
    card is written for the next time.
    """
    key = card_key(name, files)
    path = Path(cards) / f"{key}.json"
    card = _read_card(path, name)
    if card is not None:
        return DeferredBackbone(name, card, build)
    real = build()
    card = _card_of(real, name, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, card)
    except OSError:  # a read-only cache still fits, it only builds the backbone every time
        pass
    real.__dict__[_REFERENCE_ATTR] = card
    real.requires_grad_(False)
    return real


__all__ = ["DeferredBackbone", "declared_parameter_count", "declared_weights_sha256", "is_deferred",
           "mark_packaged", "packaged_feature_backbone", "state_bytes", "state_sha256", "weights_reference"]
