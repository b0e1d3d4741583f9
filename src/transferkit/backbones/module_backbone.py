"""Backbones around a plain ``nn.Module``, and the block machinery every adapter shares.

:class:`WrappedBackbone` is the common base of the adapters (torchvision, timm, transformers, user modules). It owns
the wrapped network as ``self.model`` (so state dict keys read ``model.<path>``), keeps the pretrained classifier
*outside* the module tree (so it is neither trained, nor saved, nor counted in :meth:`blocks`, but it still follows
``.to(device)``), and derives :meth:`blocks` from a list of *anchor* module paths with :func:`partition_blocks`.

Blocks are recomputed on every call, so they stay complete after module surgery such as LoRA injection.

:class:`ModuleBackbone` turns any user ``nn.Module`` (plus an optional weights file) into a backbone, and the
``module:<module>:<function>`` backbone names run a user's function that returns one (:func:`run_factory`). A user
network is checked where it is built, so that a mistake is one sentence there rather than a traceback in training:
its feature size is measured with one dummy forward pass, its default blocks split a container that holds most of
the network (:func:`discover_anchors`), a weights file may be a stock checkpoint with a classifier
(:func:`load_user_weights`), ``pretrained: false`` re-initialises it (:func:`randomise`), and batch-norm layers with
TensorFlow's momentum are reported (:func:`warn_unusual_bn_momentum`).
"""

from __future__ import annotations

import abc
import contextlib
import difflib
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError, TransferkitError
from .base import Backbone, Preprocessing
from .weights import LoadResult, align_prefix, load_into, load_state_dict


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


# --- default blocks of a network nobody described -----------------------------------------------------------------
DOMINANT_SHARE = 0.75  # a default block with more than this share of the parameters is split into its children
_MAX_SPLITS = 16


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def discover_anchors(model: nn.Module) -> list[str]:
    """Default block ends of a user network: its parameter-holding children, split where one of them dominates.

    A network ported from another framework often keeps all its stages inside one container (``features``, ``body``,
    ``_blocks``), so its top-level children make one block with nearly every parameter: useless for freezing the first
    k blocks, per-block learning rates or layer taps. While the largest block holds more than :data:`DOMINANT_SHARE`
    of the parameters and its anchor is a container, the anchor is replaced by the anchors of its own children (the
    stages, as timm's ``feature_info`` and torchvision's ``features`` list them). A stage made only of plain layers
    (conv, norm, activation) is not split further, so blocks and taps stay at stage outputs.
    """
    anchors = param_children_anchors(model)
    total = _numel(model)
    for _ in range(_MAX_SPLITS):
        if not anchors or total == 0:
            break
        largest = max(partition_blocks(model, anchors, separate_stem=False), key=_numel)
        path = largest.block_name  # the anchor that ends the block
        if _numel(largest) <= DOMINANT_SHARE * total or path not in anchors:
            break
        inner = param_children_anchors(model.get_submodule(path), prefix=f"{path}.")
        nested = len(inner) == 1 and any(True for _ in model.get_submodule(inner[0]).children())
        if len(inner) < 2 and not nested:  # a leaf, or a run of plain layers: nothing sensible to split
            break
        k = anchors.index(path)
        anchors = [*anchors[:k], *inner, *anchors[k + 1 :]]
    return anchors


# --- checks on a user network --------------------------------------------------------------------------------------
BN_MOMENTUM_MIN = 0.05  # below this (or None) a batch-norm layer's running statistics barely follow new data


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0].rstrip(".") if text else type(e).__name__


def _positive_int(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        return False


def dummy_batch(backbone: Backbone) -> torch.Tensor | None:
    """Two all-zero inputs of the kind ``backbone`` reads, or ``None`` when their shape is unknown (text, tabular
    without ``preprocessing.extra['num_features']``)."""
    pre = backbone.preprocessing
    ref = next(iter(backbone.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if pre.modality == "image":
        size = int(pre.image_size or 224)
        return torch.zeros(2, 3, size, size, device=device, dtype=dtype)
    width = pre.extra.get("num_features") if pre.modality == "tabular" else None
    return torch.zeros(2, int(width), device=device, dtype=dtype) if width else None


def measure_feature_dim(backbone: Backbone) -> int | None:
    """The feature size ``backbone`` really produces: one forward pass of :func:`dummy_batch` (eval mode, no grad).

    Every layer's train/eval flag is restored afterwards. ``None`` when no dummy input can be made. Raises
    :class:`BackboneError` when the network cannot run on the input its preprocessing promises, or does not return
    one feature vector per example.
    """
    x = dummy_batch(backbone)
    if x is None:
        return None
    modes = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(x)
    except TransferkitError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's forward can fail in any way
        raise BackboneError(
            f"The network fails on a dummy batch of shape {tuple(x.shape)} ({type(e).__name__}: {_first_line(e)}); "
            "make its forward take such inputs (or set the preprocessing image_size it needs) and return features "
            "of shape (N, D)."
        ) from e
    finally:
        for m, mode in modes:
            m.training = mode
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BackboneError(
            f"The network returns {shape} for a batch of {x.shape[0]} inputs; make it return one feature vector "
            "per input, shape (N, D)."
        )
    return int(out.shape[1])


def warn_unusual_bn_momentum(module: nn.Module, name: str) -> None:
    """Warn once when batch-norm layers of ``module`` have a momentum below :data:`BN_MOMENTUM_MIN` or ``None``.

    A network ported from TensorFlow often keeps Keras' ``momentum=0.99``, which is PyTorch's ``momentum=0.01``:
    the running statistics then hardly move while fine-tuning changes the features, so evaluation normalises with
    stale statistics (issue 12 reported 0.96 train / 0.56 test accuracy). ``None`` (a cumulative average) is as slow
    late in training.
    """
    norms = [
        (path, m) for path, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]  # fmt: skip
    odd = [(path, m.momentum) for path, m in norms if m.momentum is None or m.momentum < BN_MOMENTUM_MIN]
    if not odd:
        return
    values = ", ".join(sorted({"None" if v is None else f"{v:g}" for _, v in odd}))
    warnings.warn(
        f"{len(odd)} of the {len(norms)} batch-norm layers of {name} (first '{odd[0][0]}') have momentum {values} "
        "instead of PyTorch's 0.1 (0.01 is TensorFlow's 0.99 carried over as is), so their running statistics "
        "barely follow fine-tuning and evaluation would normalise with stale ones; set momentum=0.1 on every "
        "batch-norm layer in your backbone function.",
        UserWarning,
        stacklevel=3,
    )


def reinitialise(module: nn.Module) -> list[str]:
    """Draw every parameter afresh with its layer's own ``reset_parameters()`` (the PyTorch way to re-initialise).

    A module that has ``reset_parameters`` is taken to reset its whole subtree (batch-norm layers also forget their
    running statistics). Returns the names of the parameters that no such module covers: they keep their values.
    """
    covered: set[int] = set()
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
            covered |= {id(p) for p in m.parameters()}
    return [n for n, p in module.named_parameters() if id(p) not in covered]


def randomise(backbone: Backbone, name: str) -> None:
    """``pretrained: false`` / ``~random`` for a user backbone: re-initialise it and drop its source head.

    Warns, naming them, when some parameters have no ``reset_parameters()`` and so kept their values.
    """
    net = backbone
    if isinstance(backbone, WrappedBackbone):
        backbone.set_source_head(None)  # a pretrained classifier on random features means nothing
        net = backbone.model  # every parameter lives there; its names are the user's own
    kept = reinitialise(net)
    if kept:
        shown = ", ".join(f"'{n}'" for n in kept[:4]) + (f" and {len(kept) - 4} more" if len(kept) > 4 else "")
        warnings.warn(
            f"pretrained: false re-initialised backbone '{name}' with each layer's reset_parameters(), but "
            f"{len(kept)} parameters belong to no layer that has one and kept their values ({shown}); give their "
            "module a reset_parameters() method to re-initialise them too.",
            UserWarning,
            stacklevel=3,
        )


# --- weights files for user networks -------------------------------------------------------------------------------
def _describe_keys(keys: Sequence[str]) -> str:
    """``classifier.weight, classifier.bias, aux.0.weight`` -> ``'classifier', 'aux.0'`` (their layers)."""
    layers = list(dict.fromkeys(k.rpartition(".")[0] or k for k in keys))
    shown = ", ".join(f"'{n}'" for n in layers[:4])
    return shown + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")


def _fill_source_head(backbone: nn.Module, extra: Mapping[str, torch.Tensor]) -> set[str]:
    """Load the tensors of ``extra`` that form the backbone's source head (under any key prefix); their keys."""
    head = backbone.source_head() if isinstance(backbone, Backbone) else None
    if head is None or not extra:
        return set()
    want = head.state_dict()
    prefixes = {""} | {k[: i + 1] for k in extra for i, c in enumerate(k) if c == "."}
    for p in sorted(prefixes, key=len):
        part = {k[len(p) :]: v for k, v in extra.items() if k.startswith(p)}
        if set(part) == set(want) and all(tuple(part[k].shape) == tuple(want[k].shape) for k in want):
            head.load_state_dict(part)
            return {p + k for k in part}
    return set()


def _common_prefix(keys: Sequence[str]) -> str:
    """The dotted prefix shared by every key (``"0."`` for a network wrapped in a Sequential), never a whole key."""
    parts = [k.split(".")[:-1] for k in keys]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "".join(f"{c}." for c in common)


def _relocate(state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """When no key of the file matches, move the part of the file that holds the whole network onto its keys.

    So a checkpoint of a whole network (``features.*``, ``classifier.*``) loads into a backbone made of a part of it
    (``net.features``, perhaps wrapped: ``0.*``); the rest of the file stays, as extra tensors. Unchanged when some
    key already matches or no part of the file covers the network.
    """
    needed = [k for k in own if not k.endswith(".num_batches_tracked")]
    if not needed or set(state) & set(own):
        return state
    ours = _common_prefix(needed)
    tails = {k[len(ours) :] for k in needed}
    prefixes = {""} | {k[: i + 1] for k in state for i, c in enumerate(k) if c == "."}
    for p in sorted(prefixes, key=len):
        part = {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}
        if tails <= set(part):
            rest = {k: v for k, v in state.items() if not k.startswith(p)}
            return {**rest, **{ours + t: v for t, v in part.items()}}
    return state


def load_user_weights(backbone: nn.Module, path: str | os.PathLike[str], *, what: str) -> LoadResult:
    """Load a weights file into a user backbone, accepting a stock checkpoint of the whole source network.

    Every tensor of the network must be in the file with its shape (a wrong shape or a missing tensor is refused,
    naming the file; only batch-norm ``num_batches_tracked`` counters, which TensorFlow ports lack, may be missing).
    A file whose keys carry another prefix is matched by :func:`_relocate` (a whole network's file for a backbone
    made of its ``features``).
    Tensors the network does not have are the checkpoint's classifier and the like: those that fit the backbone's
    source head (under any key prefix, e.g. ``classifier.``) are loaded into it, the others are ignored with a
    warning that lists them. Files are read by :func:`~.weights.load_state_dict` (a pickle is refused, never run).
    """
    net = backbone.model if isinstance(backbone, WrappedBackbone) else backbone
    own = net.state_dict()
    state = _relocate(align_prefix(load_state_dict(path), own, ()), own)
    for k, v in own.items():
        if k.endswith(".num_batches_tracked") and k not in state:
            state[k] = v
    extra = {k: v for k, v in state.items() if k not in own}
    into_head = _fill_source_head(backbone, extra)
    fitting = {k: v for k, v in state.items() if k not in into_head}
    result = load_into(net, fitting, strict=True, what=what, source=path, ignore_unexpected=True)
    if result.unexpected:
        warnings.warn(
            f"Weights file '{path}' has {len(result.unexpected)} tensors that {what} does not have (of the layers "
            f"{_describe_keys(result.unexpected)}, e.g. the source network's classifier); they were ignored and all "
            f"{len(own)} tensors of {what} were loaded.",
            UserWarning,
            stacklevel=3,
        )
    return result


# --- backbone functions named as module:<module>:<function> --------------------------------------------------------
@contextlib.contextmanager
def cwd_on_path() -> Iterator[str]:
    """Put the current folder first on ``sys.path`` for the duration, as ``python -m`` has it; yields the folder.

    The ``transferkit`` console script, unlike ``python -m transferkit``, does not have the current folder on the
    import path, so ``module:my_net:build`` with ``my_net.py`` next to the user would not import. The folder is
    removed again afterwards (modules imported meanwhile stay imported).
    """
    cwd = os.getcwd()
    here = os.path.realpath(cwd)
    present = any(os.path.realpath(p or os.curdir) == here for p in sys.path if isinstance(p, str))
    if not present:
        sys.path.insert(0, cwd)
    try:
        yield cwd
    finally:
        if not present:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def import_user_module(mod_name: str, target: str) -> ModuleType:
    """Import the module of a ``module:`` backbone from the current folder or the Python path.

    Raises :class:`BackboneError` saying either that no such module exists (naming the folder searched) or, when the
    module exists but its own code fails (an import of a missing package, a syntax error), that error's message.
    """
    with cwd_on_path() as cwd:
        try:
            return importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name and (mod_name == e.name or mod_name.startswith(e.name + ".")):
                raise BackboneError(
                    f"Cannot import the backbone function '{target}': there is no module '{mod_name}' in the current "
                    f"folder ({cwd}) or on the Python path; run transferkit from the folder that holds "
                    f"{mod_name.replace('.', '/')}.py, or install its package."
                ) from None
            raise BackboneError(
                f"module '{mod_name}' failed to import: {_first_line(e)}; install what it imports or fix the module "
                f"(it is imported to build the backbone '{target}')."
            ) from e
        except Exception as e:  # noqa: BLE001 - the user's module code can fail in any way
            raise BackboneError(
                f"module '{mod_name}' failed to import: {type(e).__name__}: {_first_line(e)}; fix the module (it is "
                f"imported to build the backbone '{target}')."
            ) from e


def resolve_factory(target: str) -> Callable[..., Any]:
    """The function named by ``target`` (``package.module:function``), imported as :func:`import_user_module` does."""
    mod_name, sep, attr = target.partition(":")
    parts = [*mod_name.split("."), *attr.split(".")]
    if not sep or not all(p.isidentifier() for p in parts):
        raise BackboneError(
            f"Backbone 'module:{target}' is not of the form module:<module>:<function>; write e.g. module:my_net:build "
            "for a function build() in my_net.py in the current folder."
        )
    module = import_user_module(mod_name, target)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = getattr(module, "__file__", None) or mod_name
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BackboneError(
                f"Module '{mod_name}' ({where}) has no function '{attr}'; name a function defined in it as "
                f"module:{mod_name}:<function>{hint}."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise BackboneError(
            f"'{target}' is a {type(obj).__name__}, not a function; name a function that returns a transferkit "
            "Backbone (e.g. a ModuleBackbone)."
        )
    return obj


def run_factory(target: str) -> Backbone:
    """Import and call the backbone function ``target``; its failures become one :class:`BackboneError` sentence."""
    fn = resolve_factory(target)
    with cwd_on_path():
        try:
            backbone = fn()
        except TransferkitError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's function can fail in any way
            raise BackboneError(
                f"The backbone function '{target}' failed ({type(e).__name__}: {_first_line(e)}); call it in Python "
                "to see where."
            ) from e
    if not isinstance(backbone, Backbone):
        raise BackboneError(
            f"'{target}' returned a {type(backbone).__name__}, not a Backbone; wrap your nn.Module in "
            "transferkit.backbones.ModuleBackbone(module, feature_dim, preprocessing)."
        )
    return backbone


class ModuleBackbone(WrappedBackbone):
    """Any user ``nn.Module`` whose output (flattened after dim 1) is the feature vector.

    Args:
        module: the network; ``module(x)`` must return ``(N, feature_dim)`` (or a map that flattens to it).
        feature_dim: the size of the features, or ``None`` to measure it. It is always checked with one forward pass
            of a dummy batch (two zero images at the preprocessing image size, in eval mode) when the input shape is
            known, so a wrong size fails here with both numbers instead of deep inside training.
        preprocessing: how raw inputs become the tensors ``module`` expects.
        blocks: the modules (or their dotted paths) that end each block, input to output; parameters between two of
            them join the later one. Default: :func:`discover_anchors` (the parameter-holding children, with a
            container that holds most of the network split into its stages).
        weights: a local weights file (``.safetensors`` or a torch state dict) loaded into ``module`` by
            :func:`load_user_weights` (tensors for the source head go there, other extra tensors are ignored).
        factory: ``"package.module:callable"`` that rebuilds ``module`` for :meth:`spec`; default: the module's class.
        factory_kwargs: JSON-able keyword arguments for ``factory``.
        source_head: the source network's classifier on these features (kept frozen, outside the parameters), for
            LEEP ranking and LwF; ``source_classes`` names its classes.

    Building warns when batch-norm layers have an unusual momentum (:func:`warn_unusual_bn_momentum`).
    """

    def __init__(
        self,
        module: nn.Module,
        feature_dim: int | None,
        preprocessing: Preprocessing,
        blocks: Sequence[nn.Module | str] | None = None,
        weights: str | os.PathLike[str] | None = None,
        *,
        factory: str | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        source_head: nn.Module | None = None,
        source_classes: list[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise BackboneError(f"ModuleBackbone wraps a torch nn.Module, not a {type(module).__name__}.")
        self.model = module
        self.preprocessing = preprocessing
        self._anchors = self._resolve_anchors(blocks)
        cls = type(module)
        self.factory = factory or f"{cls.__module__}:{cls.__qualname__}"
        self.factory_kwargs = dict(factory_kwargs or {})
        self.feature_dim = self._checked_feature_dim(feature_dim)
        self.set_source_head(source_head, source_classes)
        if weights is not None:
            self.load_weights(weights)
        warn_unusual_bn_momentum(module, cls.__name__)

    def _checked_feature_dim(self, declared: int | None) -> int:
        """``declared`` after comparing it with :func:`measure_feature_dim`, or the measured size when not given."""
        name = type(self.model).__name__
        if declared is not None and not _positive_int(declared):
            raise BackboneError(f"feature_dim must be a positive whole number, not {declared!r}; or None to measure.")
        measured = measure_feature_dim(self)
        if declared is None:
            if measured is None:
                raise BackboneError(
                    f"ModuleBackbone cannot measure the feature size of {name} on {self.preprocessing.modality} "
                    "inputs; pass feature_dim (the size of its output)."
                )
            return measured
        if measured is not None and measured != int(declared):
            raise BackboneError(
                f"ModuleBackbone was given feature_dim={int(declared)} but {name} returns {measured} features for a "
                f"dummy batch; pass feature_dim={measured} (or None to measure it), or if {measured} is the number of "
                "classes of its classifier, replace that classifier with nn.Identity() so that it returns features."
            )
        return int(declared)

    def load_weights(self, path: str | os.PathLike[str]) -> LoadResult:
        """Load a weights file into the network (see :func:`load_user_weights`)."""
        return load_user_weights(self, path, what=f"the module {type(self.model).__name__}")

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
        return list(self._anchors) if self._anchors is not None else discover_anchors(self.model)

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
            with cwd_on_path():
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
