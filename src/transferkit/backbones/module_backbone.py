"""Backbones around a plain ``nn.Module``, and the block machinery every adapter shares.

:class:`WrappedBackbone` is the common base of the adapters (torchvision, timm, transformers, user modules). It owns
the wrapped network as ``self.model`` (so state dict keys read ``model.<path>``), keeps the pretrained classifier
*outside* the module tree (so it is neither trained, nor saved, nor counted in :meth:`blocks`, but it still follows
``.to(device)``), and derives :meth:`blocks` from a list of *anchor* module paths with :func:`partition_blocks`.

Blocks are recomputed on every call, so they stay complete after module surgery such as LoRA injection.

:class:`ModuleBackbone` turns any user ``nn.Module`` (plus an optional weights file) into a backbone.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from .base import Backbone, Preprocessing
from .weights import load_into, load_state_dict


class Block(nn.Module):
    """One backbone block: the real submodules (and any loose parameters) that form one stage of the network.

    The members are registered here so that ``block.parameters()`` and ``block.eval()`` reach them; the block itself
    is never called (the wrapped network runs as a whole). ``tap`` is the module whose output is the stage output,
    for methods that hook intermediate features.
    """

    def __init__(self, name: str, members: Sequence[tuple[str, nn.Module | nn.Parameter]], tap: nn.Module | None):
        super().__init__()
        self.block_name = name
        self.member_paths = [path for path, _ in members]
        for path, obj in members:
            key = path.replace(".", "_") or "root"
            if isinstance(obj, nn.Parameter):
                self.register_parameter(key, obj)
            else:
                self.add_module(key, obj)
        self.__dict__["tap"] = tap  # not a registered child: it is already inside one of the members

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - blocks are containers only
        raise RuntimeError("a backbone Block is a parameter container; call the backbone itself")

    def extra_repr(self) -> str:
        return f"name={self.block_name!r}"


def _subtree_end(names: list[str], start: int) -> int:
    """Index of the last module inside the subtree whose root sits at ``start`` in ``named_modules`` order."""
    root = names[start]
    end = start
    for j in range(start + 1, len(names)):
        if root == "" or names[j].startswith(root + "."):
            end = j
        else:
            break
    return end


def partition_blocks(model: nn.Module, anchors: Sequence[str], *, separate_stem: bool = True) -> list[Block]:
    """Split every parameter of ``model`` into ordered blocks that end at the ``anchors`` (module paths).

    Walking the modules in registration order (input to output for the networks we wrap), block ``k`` holds the
    subtree of ``anchors[k]`` plus whatever parameters sit between the previous anchor and this one. Parameters before
    the first anchor form a separate ``stem`` block when ``separate_stem`` (a ViT's patch and position embeddings, a
    ResNet's conv1/bn1 before ``layer1``) and the first anchor has parameters of its own; otherwise they join the
    first block. Parameters after the last anchor (a final norm) join the last block. Empty blocks are dropped, so
    every parameter lands in exactly one block.
    """
    mods = list(model.named_modules())
    mod_names = [n for n, _ in mods]
    index = {n: i for i, n in enumerate(mod_names)}
    spans: list[tuple[int, int]] = []
    for a in anchors:
        if a not in index:
            raise ValueError(f"anchor module '{a}' not found in {type(model).__name__}")
        spans.append((index[a], _subtree_end(mod_names, index[a])))
    if not spans:
        spans = [(0, len(mods) - 1)]
        anchors = [""]
    # owner position of each parameter (by identity: tied weights are counted once, under their first owner)
    seen: set[int] = set()
    groups: list[list[nn.Parameter]] = [[] for _ in range(len(spans) + 1)]  # slot 0: stem
    for pos, (_, mod) in enumerate(mods):
        for p in mod.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if pos < spans[0][0]:
                slot = 0
            else:
                slot = len(spans)  # trailing params join the last block
                for k, (_, end) in enumerate(spans):
                    if pos <= end:
                        slot = k + 1
                        break
            groups[slot].append(p)
    if groups[0] and (not groups[1] or not separate_stem):
        groups[1], groups[0] = groups[0] + groups[1], []
    labels = ["stem", *[a or "all" for a in anchors]]
    taps: list[nn.Module | None] = [None, *[mods[s][1] for s, _ in spans]]
    blocks = []
    for slot, params in enumerate(groups):
        if params:
            blocks.append(Block(labels[slot], _members(model, mods, params), taps[slot]))
    return blocks


def _members(
    model: nn.Module, mods: list[tuple[str, nn.Module]], params: list[nn.Parameter]
) -> list[tuple[str, nn.Module | nn.Parameter]]:
    """The top-most submodules whose parameters all lie in ``params``, then the remaining loose parameters."""
    wanted = {id(p) for p in params}
    members: list[tuple[str, nn.Module | nn.Parameter]] = []
    used: set[int] = set()
    covered: list[str] = []
    if {id(p) for p in model.parameters()} <= wanted:
        return [("", model)]
    for name, mod in mods:
        if name == "" or any(name.startswith(c + ".") for c in covered):
            continue
        ids = {id(p) for p in mod.parameters()}
        if ids and ids <= wanted:
            members.append((name, mod))
            covered.append(name)
            used |= ids
    named = {id(p): n for n, p in model.named_parameters()}
    for p in params:
        if id(p) not in used:
            members.append((named.get(id(p), f"param{len(members)}"), p))
            used.add(id(p))
    return members


def check_blocks(module: nn.Module, blocks: Sequence[nn.Module]) -> None:
    """Raise ``ValueError`` unless ``blocks`` hold every parameter of ``module`` exactly once."""
    own = {id(p) for p in module.parameters()}
    counts: dict[int, int] = {}
    for b in blocks:
        for p in b.parameters():
            counts[id(p)] = counts.get(id(p), 0) + 1
    twice = [i for i, c in counts.items() if c > 1]
    missing = own - set(counts)
    extra = set(counts) - own
    if twice or missing or extra:
        raise ValueError(f"blocks: {len(missing)} parameters missing, {len(twice)} repeated, {len(extra)} foreign")


def param_children_anchors(module: nn.Module, prefix: str = "") -> list[str]:
    """Anchors at the parameter-holding children of ``module``; a run of leaf children (conv, norm) is one anchor.

    So a ResNet-like top level ``conv1, bn1, relu, maxpool, layer1..4`` gives ``bn1, layer1, ..., layer4``: one stem
    block and one block per stage.
    """
    anchors: list[str] = []
    run: str | None = None
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        has_params = any(True for _ in child.parameters())
        is_leaf = not any(True for _ in child.children())
        if is_leaf:
            if has_params:
                run = path
            continue
        if run is not None:
            anchors.append(run)
            run = None
        if has_params:
            anchors.append(path)
    if run is not None:
        anchors.append(run)
    return anchors


class WrappedBackbone(Backbone):
    """Shared base: wraps ``self.model``; keeps the source head off the module tree; blocks from anchors."""

    def __init__(self) -> None:
        super().__init__()
        self.__dict__["_source_head"] = None
        self.__dict__["_source_classes"] = None

    # -- source head -----------------------------------------------------------------------------------------
    def set_source_head(self, head: nn.Module | None, classes: list[str] | None = None) -> None:
        """Keep ``head`` (frozen, eval mode) as the pretrained classifier, outside parameters() and state_dict()."""
        if head is not None:
            head.requires_grad_(False)
            head.eval()
        self.__dict__["_source_head"] = head
        self.__dict__["_source_classes"] = list(classes) if classes is not None and head is not None else None

    def source_head(self) -> nn.Module | None:
        """The pretrained classifier (frozen, on the backbone's device), or ``None`` when there is none."""
        return self.__dict__["_source_head"]

    def source_classes(self) -> list[str] | None:
        """Names of the source head's classes, when known."""
        return self.__dict__["_source_classes"]

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> WrappedBackbone:
        # .to() / .cuda() / .half() also move the off-tree source head, so features and head stay together
        super()._apply(fn, *args, **kwargs)
        head = self.__dict__.get("_source_head")
        if head is not None:
            head._apply(fn, *args, **kwargs)
        return self

    # -- blocks ----------------------------------------------------------------------------------------------
    separate_stem: bool = False
    catalog_name: str | None = None  # set for catalog backbones: spec() then names the catalog entry

    def spec(self) -> dict[str, Any]:
        """JSON-able description of the architecture (see :meth:`_spec`), plus the catalog name if any."""
        d = self._spec()
        if self.catalog_name is not None:
            d["catalog"] = self.catalog_name
        return d

    @abc.abstractmethod
    def _spec(self) -> dict[str, Any]:
        """The architecture description of the concrete adapter (its ``type`` and what rebuilds it)."""

    def block_anchors(self) -> list[str]:
        """Module paths inside ``self.model`` at which the blocks end (input to output). Subclasses override."""
        return param_children_anchors(self.model)

    def blocks(self) -> list[nn.Module]:
        """Ordered blocks from input to output; together they hold every parameter exactly once."""
        return list(partition_blocks(self.model, self.block_anchors(), separate_stem=self.separate_stem))


class ModuleBackbone(WrappedBackbone):
    """Any user ``nn.Module`` whose output (flattened after dim 1) is the feature vector.

    Args:
        module: the network; ``module(x)`` must return ``(N, feature_dim)`` (or a map that flattens to it).
        feature_dim: the size of the features.
        preprocessing: how raw inputs become the tensors ``module`` expects.
        blocks: the modules (or their dotted paths) that end each block, input to output; parameters between two of
            them join the later one. Default: the module's top-level children that hold parameters.
        weights: a local weights file (``.safetensors`` or a torch state dict) loaded strictly into ``module``.
        factory: ``"package.module:callable"`` that rebuilds ``module`` for :meth:`spec`; default: the module's class.
        factory_kwargs: JSON-able keyword arguments for ``factory``.
    """

    def __init__(
        self,
        module: nn.Module,
        feature_dim: int,
        preprocessing: Preprocessing,
        blocks: Sequence[nn.Module | str] | None = None,
        weights: str | None = None,
        *,
        factory: str | None = None,
        factory_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = module
        self.feature_dim = int(feature_dim)
        self.preprocessing = preprocessing
        self._anchors = self._resolve_anchors(blocks)
        cls = type(module)
        self.factory = factory or f"{cls.__module__}:{cls.__qualname__}"
        self.factory_kwargs = dict(factory_kwargs or {})
        if weights is not None:
            load_into(module, load_state_dict(weights), strict=True, what=f"the module {cls.__name__}", source=weights)

    def _resolve_anchors(self, blocks: Sequence[nn.Module | str] | None) -> list[str] | None:
        if blocks is None:
            return None
        by_id = {id(m): n for n, m in self.model.named_modules()}
        names = dict(self.model.named_modules())
        out = []
        for b in blocks:
            path = b if isinstance(b, str) else by_id.get(id(b))
            if path is None or path not in names:
                raise BackboneError(
                    f"Block {b if isinstance(b, str) else type(b).__name__} is not a submodule of the given module; "
                    "pass submodules of it (or their dotted paths, e.g. 'layer1')."
                )
            out.append(path)
        return out

    def block_anchors(self) -> list[str]:
        return list(self._anchors) if self._anchors is not None else param_children_anchors(self.model)

    def forward(self, x: Any) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, tuple):
            out = out[0]
        return out.flatten(1) if out.ndim > 2 else out

    def _spec(self) -> dict[str, Any]:
        return {
            "type": "module",
            "factory": self.factory,
            "factory_kwargs": self.factory_kwargs,
            "feature_dim": self.feature_dim,
            "preprocessing": self.preprocessing.to_dict(),
            "blocks": self._anchors,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ModuleBackbone:
        """Rebuild by calling ``spec['factory'](**spec['factory_kwargs'])`` (weights come from the saved model)."""
        factory = spec["factory"]
        mod_name, _, attr = factory.partition(":")
        try:
            obj: Any = importlib.import_module(mod_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            module = obj(**spec.get("factory_kwargs", {}))
        except Exception as e:  # noqa: BLE001 - any failure here means "cannot rebuild the user's module"
            raise BackboneError(
                f"Cannot rebuild the user module '{factory}' ({type(e).__name__}: {e}); make it importable and pass "
                "factory='package.module:callable' (and factory_kwargs) to ModuleBackbone."
            ) from None
        return cls(
            module,
            spec["feature_dim"],
            Preprocessing.from_dict(spec["preprocessing"]),
            blocks=spec.get("blocks"),
            factory=factory,
            factory_kwargs=spec.get("factory_kwargs"),
        )
