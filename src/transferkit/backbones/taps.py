"""THE one way to read intermediate outputs of a network: layers named by block index or module path, forward hooks.

Everything that taps a layer goes through this module: frozen features of inner blocks
(:class:`~transferkit.backbones.tapped.TapBackbone`), the regularisers that compare or shrink features (DELTA's
feature maps, BSS and LwF's backbone features) and feature distillation (hints on named layers of a student and a
teacher). As in torchdistill, nothing in the network is changed: forward hooks are registered on the chosen modules
for one ``with`` block (:class:`Taps`) and removed when it ends, exception or not, so a model never keeps a hook that
refers to its reader.

A *layer* is named in one of two ways (:func:`resolve_layers`):

* a **block index** into ``backbone.blocks()`` (an ``int``, or text such as ``"3"`` / ``"-1"``; negative counts from
  the end). The module read for block ``k`` is :func:`block_output`: the block's ``tap`` (the stage module of an
  adapter's block), else the block itself; a block whose ``tap`` is ``None`` (an adapter's *stem*, e.g. a ResNet's
  ``conv1``/``bn1``) uses its last member module;
* a **module path** (any other text, e.g. ``"features.7"``, ``"layer3.1"``, ``"encoder.layer.3"``), dotted as in
  ``named_modules()``, relative to the wrapped network (``backbone.model``) for the adapters and ``module:``
  backbones, relative to the backbone itself otherwise. A path that does not exist gets the closest existing ones.

What a module's output *is* is defined once, by :func:`first_tensor`: a tensor as it is, else the first element of a
tuple or list, else the first value of a mapping (a transformers ``ModelOutput``: ``last_hidden_state``).

Each resolved layer is a module path *inside the backbone* (:attr:`TapPoint.path`), so the same layer can be found
again in a copy of the backbone (a frozen source model) with ``get_submodule``.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError, ConfigError, TransferkitError

_ABSENT = object()
_INDEX = re.compile(r"^-?\d+$")


class _AllTapped(Exception):
    """Raised by the last hook that fires when a :class:`Taps` stops early: the rest of the network is not needed."""


@dataclass(frozen=True)
class TapPoint:
    """One resolved layer: the name the user gave (``label``) and the module path inside the backbone (``path``)."""

    label: int | str
    path: str


# --- the rules -------------------------------------------------------------------------------------------------
def first_tensor(out: Any) -> torch.Tensor:
    """The tensor a module's output stands for: itself, the first element of a sequence, the first value of a map.

    Raises:
        BackboneError: the output holds no tensor (nothing to read).
    """
    while not torch.is_tensor(out):
        if isinstance(out, Mapping) and len(out) > 0:
            out = next(iter(out.values()))
        elif isinstance(out, Sequence) and not isinstance(out, str) and len(out) > 0:
            out = out[0]
        elif hasattr(out, "last_hidden_state"):
            out = out.last_hidden_state
        else:
            raise BackboneError(f"A tapped block returned {type(out).__name__}, which holds no tensor to pool.")
    return out


def is_stem(block: nn.Module) -> bool:
    """Whether ``block`` is an adapter's stem: a block without a stage module of its own (``tap is None``)."""
    return getattr(block, "tap", _ABSENT) is None


def block_output(block: nn.Module, index: int) -> nn.Module:
    """The module whose output is ``block``'s output: its ``tap`` (adapters' blocks), else the block itself.

    A stem block of an adapter has no ``tap``; its last member module (e.g. ``bn1`` of a ResNet stem) stands in.

    Raises:
        BackboneError: a block that holds only loose parameters (no module whose output could be read).
    """
    tap = getattr(block, "tap", _ABSENT)
    if tap is _ABSENT:
        return block
    if isinstance(tap, nn.Module):
        return tap
    members = list(block.children())
    if not members:
        raise BackboneError(f"Block {index} holds only loose parameters and has no output to tap; choose another.")
    return members[-1]


def network_of(backbone: nn.Module) -> tuple[nn.Module, str]:
    """The module that user module paths are relative to, and its own path inside ``backbone`` (``""`` or ``model``).

    Adapters and ``module:`` backbones wrap the user's network as ``backbone.model``; paths name modules of that
    network (what its own ``named_modules()`` shows, and what ``ModuleBackbone(blocks=...)`` takes).
    """
    inner = getattr(backbone, "model", None)
    if isinstance(inner, nn.Module) and any(m is inner for _, m in backbone.named_children()):
        return inner, "model"
    return backbone, ""


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix and path else prefix or path


# --- naming layers ---------------------------------------------------------------------------------------------
def _error(setting: str | None, text: str) -> TransferkitError:
    """A layer named in a config setting is a ConfigError naming the setting; one given in code a BackboneError."""
    return ConfigError(text) if setting else BackboneError(text)


def _resolve_index(backbone: nn.Module, value: int, setting: str | None) -> TapPoint:
    blocks = list(backbone.blocks())
    n = len(blocks)
    if not -n <= value < n:
        where = f" in '{setting}'" if setting else ""
        raise _error(setting, f"Layer {value!r}{where} does not exist: this backbone has {n} blocks, so a layer is "
                              f"one of the block indices from 0 to {n - 1} (or -{n} to -1 counting from the end) or "
                              "a module path.")
    module = block_output(blocks[value], value % n)
    for name, m in backbone.named_modules():
        if m is module:
            return TapPoint(value, name)
    raise _error(setting, f"Block {value % n} of the backbone is not one of its modules, so it has no output to tap; "
                          "choose another block or a module path.")


def _resolve_path(backbone: nn.Module, path: str, setting: str | None) -> TapPoint:
    root, prefix = network_of(backbone)
    names = [n for n, _ in root.named_modules() if n]
    if path in names:
        return TapPoint(path, _join(prefix, path))
    close = difflib.get_close_matches(path, names, n=4, cutoff=0.5)
    if not close:  # nothing similar: show where the tree starts
        close = sorted(names, key=lambda n: n.count("."))[:4]
    shown = ", ".join(f"'{c}'" for c in close) or "none"
    where = f" in '{setting}'" if setting else ""
    raise _error(setting, f"Layer '{path}'{where} does not exist: no module has that path, and the closest module "
                          f"paths are {shown} (block indices work too).")


def resolve_layer(backbone: nn.Module, layer: Any, *, setting: str | None = None) -> TapPoint:
    """Resolve one user name for a layer of ``backbone`` (a block index or a module path, see the module docstring).

    Args:
        backbone: a transferkit Backbone (anything with ``blocks()`` and modules).
        layer: an int (block index), text of one (``"-1"``), or a dotted module path.
        setting: the config key the name came from; errors are then ConfigErrors that name it.

    Raises:
        BackboneError (ConfigError with ``setting``): an index out of range, a path that does not exist (with the
            closest paths), or a value that is neither.
    """
    if isinstance(layer, str) and _INDEX.match(layer.strip()):
        layer = int(layer.strip())
    if isinstance(layer, int) and not isinstance(layer, bool):
        return _resolve_index(backbone, layer, setting)
    if isinstance(layer, str) and layer.strip():
        return _resolve_path(backbone, layer.strip(), setting)
    n = len(list(backbone.blocks()))
    where = f" in '{setting}'" if setting else ""
    raise _error(setting, f"Layer {layer!r}{where} does not exist: this backbone has {n} blocks, so a layer is one of "
                          f"the block indices from 0 to {n - 1} (or -{n} to -1 counting from the end) or a module "
                          "path.")


def resolve_layers(backbone: nn.Module, layers: Sequence[Any], *, setting: str | None = None) -> list[TapPoint]:
    """:func:`resolve_layer` for each name, in the order given (duplicates kept)."""
    return [resolve_layer(backbone, v, setting=setting) for v in layers]


def in_module_order(root: nn.Module, paths: Sequence[str]) -> list[str]:
    """``paths`` without duplicates, ordered as their modules appear in ``root.named_modules()`` (input to output)."""
    order = {name: i for i, (name, _) in enumerate(root.named_modules())}
    return sorted(dict.fromkeys(paths), key=lambda p: order.get(p, len(order)))


# --- reading them ----------------------------------------------------------------------------------------------
class Taps:
    """Forward hooks on the modules at ``paths`` inside ``root`` for the duration of a ``with`` block.

    ``outputs[path]`` is :func:`first_tensor` of the module's output at its first call inside the block. The hooks
    are removed when the block ends, whatever happens in it.

    Args:
        root: the module the paths are relative to (a backbone, or a copy of it).
        paths: module paths inside ``root`` (``""`` is ``root`` itself), e.g. :attr:`TapPoint.path` values.
        labels: what to call each path in errors (the user's names; default the paths).
        grad: make each captured output part of the autograd graph even when nothing before it requires a gradient
            (a frozen model), so gradients with respect to the feature maps can be taken.
        stop_early: end the forward pass as soon as every tapped module has run (an exception raised from the last
            hook and swallowed when the ``with`` block ends), so an early layer costs only the modules before it.
            While ``torch.export`` traces the model the pass runs to the end instead (the exception would break its
            module tracking).

    Example::

        with Taps(backbone, ["features.7"]) as taps:
            backbone(x)
        h = taps.in_order()[0]
    """

    def __init__(self, root: nn.Module, paths: Sequence[str], *, labels: Sequence[int | str] | None = None,
                 grad: bool = False, stop_early: bool = False) -> None:
        self.root = root
        self.paths = list(paths)
        self.labels = list(labels) if labels is not None else list(self.paths)
        self.grad = grad
        self.stop_early = stop_early
        self.outputs: dict[str, torch.Tensor] = {}
        self._input: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._handles: list[Any] = []

    def __enter__(self) -> Taps:
        self.outputs.clear()
        try:
            modules = {p: self.root.get_submodule(p) for p in dict.fromkeys(self.paths)}
            self._handles.append(self.root.register_forward_pre_hook(self._remember, with_kwargs=True))
            for path, module in modules.items():
                self._handles.append(module.register_forward_hook(self._hook(path, len(modules))))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._remove()
        return exc_type is _AllTapped  # the early stop is how the pass ends, not an error

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _remember(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._input is None:
            self._input = (args, kwargs)  # only for the error of a tap that never ran

    def _hook(self, path: str, count: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            if path not in self.outputs:
                t = first_tensor(output)
                if self.grad and not t.requires_grad:
                    t.requires_grad_(True)
                self.outputs[path] = t
            if self.stop_early and len(self.outputs) == count and not torch.compiler.is_exporting():
                raise _AllTapped

        return hook

    @property
    def missing(self) -> list[int | str]:
        """The labels of the tapped modules that did not run (in the order given)."""
        return [label for path, label in zip(self.paths, self.labels) if path not in self.outputs]

    def in_order(self) -> list[torch.Tensor]:
        """The captured outputs, one per path in the order given.

        Raises:
            BackboneError: a tapped module never ran; the sentence lists module paths that did (see :func:`never_ran`).
        """
        if self.missing:
            args, kwargs = self._input if self._input is not None else ((), {})
            raise never_ran(self.root, self.missing, args, kwargs)
        return [self.outputs[p] for p in self.paths]


def never_ran(backbone: nn.Module, missing: Sequence[int | str], args: tuple[Any, ...] = (),
              kwargs: dict[str, Any] | None = None) -> BackboneError:
    """The error for tapped layers that did not run, listing the module paths that did (candidates for ``blocks=``).

    Runs ``backbone(*args, **kwargs)`` once more with a hook on every module that holds parameters (only on this
    error path; nothing is run when no input is known).
    """
    root, _ = network_of(backbone)  # paths as the user writes them: relative to the wrapped network
    names = {id(m): n for n, m in root.named_modules() if n and any(True for _ in m.parameters())}
    ran: list[str] = []

    def hook(module: nn.Module, _args: Any, _output: Any) -> None:
        if names[id(module)] not in ran:
            ran.append(names[id(module)])

    handles = [m.register_forward_hook(hook) for m in root.modules() if id(m) in names]
    try:
        if args or kwargs:
            with torch.no_grad():
                backbone(*args, **(kwargs or {}))
    except Exception:  # noqa: BLE001, S110 - only collecting which modules ran before any failure
        pass
    finally:
        for h in handles:
            h.remove()
    shallow = sorted(ran, key=lambda n: n.count("."))  # stable: outer modules first, in the order they finished
    shown = ", ".join(f"'{n}'" for n in shallow[:8]) + (f" and {len(shallow) - 8} more" if len(shallow) > 8 else "")
    what = "Block(s)" if all(isinstance(v, int) for v in missing) else "Layer(s)"
    return BackboneError(
        f"{what} {list(missing)} never ran in the forward pass, so they cannot be tapped; for your own network pass "
        f"blocks= to ModuleBackbone naming modules that do run (these did: {shown or 'none with parameters'})."
    )


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module.eval()`` for the block, then every submodule's own train/eval flag back as it was.

    (``module.train(old)`` would not do: a linear probe keeps its batch-norm layers in eval mode inside a model in
    train mode, and that mix must survive.)
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
