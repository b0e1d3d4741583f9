"""Feature sources for frozen transfer: intermediate blocks of one backbone, and several backbones side by side.

:class:`TapBackbone` reads the outputs of chosen blocks (``backbone.blocks()``, input to output) with forward hooks,
as torchdistill does, so no model surgery is needed and any backbone works. Each tapped output is pooled to
``(N, C)``:

* image maps ``(N, C, H, W)``: global average (``avg``) or max (``max``) pooling over ``H, W``;
* token sequences ``(N, T, C)`` (text, or vision transformers): the mean over the tokens that the attention mask
  keeps, ``f = sum_t m_t h_t / sum_t m_t`` (``avg``; all tokens when there is no mask), the masked maximum
  (``max``), or the first token (``cls``);
* vectors ``(N, C)`` are used as they are.

Several layers are concatenated in the order given. The forward pass stops as soon as every tapped block has run
(an exception raised from the last hook and caught by :meth:`TapBackbone.forward`), so an early layer costs only
the blocks up to it. While ``torch.export`` traces it for ONNX the pass runs to the end instead (the exception would
break its module tracking) and the exporter drops the unused blocks from the graph.

:class:`FusedBackbone` concatenates the features of several backbones that read the same inputs (same modality and
preprocessing), the "feature fusion" of the design notes. Both have a JSON :meth:`spec` that
:func:`transferkit.backbones.build_from_spec` rebuilds, so a model over them saves and loads like any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..backbones.base import Backbone, Preprocessing
from ..errors import BackboneError

POOLINGS = ("avg", "max", "cls")
_ALIASES = {"mean": "avg"}  # the name text users know for mask-mean pooling
_ABSENT = object()


class _AllTapped(Exception):
    """Raised by the last hook that fires: the rest of the network is not needed."""


def _check_pooling(pooling: str) -> str:
    pooling = _ALIASES.get(str(pooling), str(pooling))
    if pooling not in POOLINGS:
        raise BackboneError(f"Pooling '{pooling}' is unknown; use one of {', '.join(POOLINGS)} (or mean for avg).")
    return pooling


def _tap_module(block: nn.Module, index: int) -> nn.Module:
    """The module whose output is ``block``'s output: its ``tap`` (adapters' blocks), else the block itself.

    A stem block of an adapter has no ``tap``; its last member module (e.g. ``bn1`` of a ResNet stem) stands in.
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


def _first_tensor(out: Any) -> torch.Tensor:
    """The hidden states of a block output: a tensor, or the first element of a tuple or model output."""
    while not torch.is_tensor(out):
        if isinstance(out, Mapping):
            out = next(iter(out.values()))
        elif isinstance(out, Sequence) and len(out) > 0:
            out = out[0]
        else:
            raise BackboneError(f"A tapped block returned {type(out).__name__}, which holds no tensor to pool.")
    return out


def pool(h: torch.Tensor, pooling: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pool one block output to ``(N, C)`` (see the module docstring for the rules)."""
    if h.ndim == 2:
        return h
    if h.ndim == 4:
        if pooling == "avg":
            return h.mean(dim=(2, 3))
        if pooling == "max":
            return h.amax(dim=(2, 3))
        raise BackboneError("Pooling 'cls' needs token outputs, but this block gives image maps; use avg or max.")
    if h.ndim == 3:
        if pooling == "cls":
            return h[:, 0]
        if mask is None or mask.shape[:2] != h.shape[:2]:
            return h.mean(dim=1) if pooling == "avg" else h.amax(dim=1)
        m = mask.unsqueeze(-1).to(h.dtype)
        if pooling == "avg":
            return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return h.masked_fill(m == 0, torch.finfo(h.dtype).min).amax(dim=1)
    return h.flatten(1)


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


def dummy_input(backbone: Backbone) -> Any:
    """A one-example input of the kind ``backbone`` reads (to measure output sizes with one forward pass)."""
    pre = backbone.preprocessing
    ref = next(iter(backbone.parameters()), None)
    if ref is None:
        ref = next(iter(backbone.buffers()), torch.zeros(()))
    device = ref.device
    if pre.modality == "image":
        size = pre.image_size or 224
        return torch.zeros(1, 3, size, size, device=device)
    if pre.modality == "text":
        ids = torch.zeros(1, 4, dtype=torch.long, device=device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    width = pre.extra.get("num_features")
    if not width:
        raise BackboneError(
            "Layers of a tabular backbone can be tapped only when its preprocessing names num_features; "
            "set preprocessing.extra['num_features'] or use its final features (layers: null)."
        )
    return torch.zeros(1, int(width), device=device)


def _never_ran(backbone: Backbone, x: Any, missing: list[int]) -> BackboneError:
    """The error for tapped blocks that did not run, listing the module paths that did (candidates for ``blocks=``).

    Runs ``backbone`` once more with a hook on every module that holds parameters (only on this error path).
    """
    root = getattr(backbone, "model", None)
    root = root if isinstance(root, nn.Module) else backbone  # adapters' block paths are relative to .model
    names = {id(m): n for n, m in root.named_modules() if n and any(True for _ in m.parameters())}
    ran: list[str] = []

    def hook(module: nn.Module, _args: Any, _output: Any) -> None:
        if names[id(module)] not in ran:
            ran.append(names[id(module)])

    handles = [m.register_forward_hook(hook) for m in root.modules() if id(m) in names]
    try:
        with torch.no_grad():
            backbone(x)
    except Exception:  # noqa: BLE001, S110 - only collecting which modules ran before any failure
        pass
    finally:
        for h in handles:
            h.remove()
    shallow = sorted(ran, key=lambda n: n.count("."))  # stable: outer modules first, in the order they finished
    shown = ", ".join(f"'{n}'" for n in shallow[:8]) + (f" and {len(shallow) - 8} more" if len(shallow) > 8 else "")
    return BackboneError(
        f"Block(s) {missing} never ran in the forward pass, so they cannot be tapped; for your own network pass "
        f"blocks= to ModuleBackbone naming modules that do run (these did: {shown or 'none with parameters'})."
    )


class TapBackbone(Backbone):
    """Features from chosen blocks of ``backbone``, each globally pooled, concatenated in the given order.

    Args:
        backbone: the backbone to read; it runs whole (up to the deepest tapped block) and is not modified.
        layers: indices into ``backbone.blocks()`` (negative from the end). ``None``: the backbone's own final
            features (``pooling`` is then unused).
        pooling: ``avg`` (mask-mean for text; ``mean`` is accepted as a synonym), ``max``, or ``cls`` (first token).

    Raises:
        BackboneError: an index outside the blocks, an unknown pooling, or an empty ``layers`` list.
    """

    def __init__(self, backbone: Backbone, layers: Sequence[int] | int | None = None, pooling: str = "avg") -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise BackboneError(f"TapBackbone needs a transferkit Backbone, not a {type(backbone).__name__}.")
        self.backbone = backbone
        self.training = backbone.training
        self.pooling = _check_pooling(pooling)
        if isinstance(layers, int) and not isinstance(layers, bool):
            layers = [layers]
        self.layers: list[int] | None = None if layers is None else [self._check_layer(v) for v in layers]
        if self.layers is not None and not self.layers:
            raise BackboneError("The list of layers to tap is empty; give block indices such as [-1] or null.")
        self.__dict__["_taps"] = self._resolve_taps()
        self.tap_dims: list[int] = [] if self.layers is None else self._measure_dims()  # one per tapped layer
        self.feature_dim = backbone.feature_dim if self.layers is None else int(sum(self.tap_dims))

    # -- construction ------------------------------------------------------------------------------------------
    def _check_layer(self, value: Any) -> int:
        n = len(self.backbone.blocks())
        if isinstance(value, bool) or not isinstance(value, int) or not -n <= value < n:
            raise BackboneError(
                f"Layer {value!r} does not exist: this backbone has {n} blocks, so a layer is an integer from 0 to "
                f"{n - 1} (or -{n} to -1 counting from the end)."
            )
        return int(value)

    def _resolve_taps(self) -> list[nn.Module]:
        if self.layers is None:
            return []
        blocks = self.backbone.blocks()
        return [_tap_module(blocks[i], i) for i in self.layers]

    @torch.no_grad()
    def _measure_dims(self) -> list[int]:
        """Each tapped block's pooled channel count, from one forward pass on a dummy input."""
        with eval_mode(self):
            _, pooled = self._run_taps(dummy_input(self.backbone), stop_early=True)
        return [int(p.shape[1]) for p in pooled]

    def _run_taps(self, x: Any, *, stop_early: bool) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Run the backbone with hooks on the tapped blocks: (its final features, or None when the pass stopped
        after the deepest tapped block; the pooled output of each tapped layer, in order)."""
        taps: list[nn.Module] = self.__dict__["_taps"]
        unique = list({id(m): m for m in taps}.values())
        captured: dict[int, torch.Tensor] = {}

        def hook(module: nn.Module, _args: Any, output: Any) -> None:
            if id(module) not in captured:
                captured[id(module)] = _first_tensor(output)
            if stop_early and len(captured) == len(unique) and not torch.compiler.is_exporting():
                raise _AllTapped

        handles = [m.register_forward_hook(hook) for m in unique]
        final = None
        try:
            final = self.backbone(x)
        except _AllTapped:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [i for i, m in zip(self.layers or [], taps) if id(m) not in captured]
        if missing:
            raise _never_ran(self.backbone, x, missing)
        mask = x.get("attention_mask") if isinstance(x, Mapping) else None
        return final, [pool(captured[id(m)], self.pooling, mask) for m in taps]

    # -- the Backbone contract -----------------------------------------------------------------------------------
    @property
    def preprocessing(self) -> Preprocessing:  # type: ignore[override]
        return self.backbone.preprocessing

    @preprocessing.setter
    def preprocessing(self, value: Preprocessing) -> None:
        self.backbone.preprocessing = value

    def forward(self, x: Any) -> torch.Tensor:
        if self.layers is None:
            return self.backbone(x)
        return torch.cat(self._run_taps(x, stop_early=True)[1], dim=1)

    def blocks(self) -> list[nn.Module]:
        return self.backbone.blocks()

    def spec(self) -> dict[str, Any]:
        return {"type": "tap", "backbone": self.backbone.spec(), "layers": self.layers, "pooling": self.pooling}

    def source_head(self) -> nn.Module | None:
        return self.backbone.source_head() if self.layers is None else None

    def source_classes(self) -> list[str] | None:
        return self.backbone.source_classes() if self.layers is None else None

    def extra_repr(self) -> str:
        return f"layers={self.layers}, pooling={self.pooling!r}"


class SharedPass(TapBackbone):
    """The final features of ``backbone`` and the pooled outputs of some of its blocks, from ONE forward pass.

    The output is ``[backbone(x), pool(block_l1(x)), pool(block_l2(x)), ...]``: column for column what
    ``FusedBackbone([backbone, TapBackbone(backbone, [l1]), TapBackbone(backbone, [l2]), ...])`` computes, and
    :meth:`spec` is that fused spec, so cached features are described alike; but the network runs once instead of
    once per part, which is what ranking one network at several depths needs. ``dims`` are the column widths.
    """

    def __init__(self, backbone: Backbone, layers: Sequence[int], pooling: str = "avg") -> None:
        super().__init__(backbone, list(layers), pooling)
        self.dims = [int(backbone.feature_dim), *self.tap_dims]
        self.feature_dim = int(sum(self.dims))

    def forward(self, x: Any) -> torch.Tensor:
        final, pooled = self._run_taps(x, stop_early=False)
        return torch.cat([final, *pooled], dim=1)

    def spec(self) -> dict[str, Any]:
        base = self.backbone.spec()
        taps = [{"type": "tap", "backbone": base, "layers": [v], "pooling": self.pooling} for v in self.layers or []]
        return {"type": "fused", "parts": [base, *taps]}

    def source_head(self) -> nn.Module | None:
        return None  # the head belongs to the first part's columns only; read it from self.backbone

    def source_classes(self) -> list[str] | None:
        return None


def _same_preprocessing(a: Preprocessing, b: Preprocessing) -> str | None:
    """``None`` when two backbones read identical tensors; otherwise the name of the first field that differs."""
    if a.modality != b.modality:
        return "modality"
    for name in ("image_size", "tokenizer", "max_length"):
        if getattr(a, name) != getattr(b, name):
            return name
    for name in ("mean", "std"):
        va, vb = getattr(a, name), getattr(b, name)
        if (va is None) != (vb is None) or (va is not None and (
                len(va) != len(vb) or any(abs(float(p) - float(q)) > 1e-6 for p, q in zip(va, vb)))):
            return name
    return None


class FusedBackbone(Backbone):
    """The concatenated features of several backbones over the same inputs: ``[f_1(x), ..., f_k(x)]``.

    Raises:
        BackboneError: no parts, a part given twice, or parts that read different inputs (modality, image size,
            normalisation, tokenizer).
    """

    def __init__(self, parts: Sequence[Backbone]) -> None:
        super().__init__()
        parts = list(parts)
        if not parts:
            raise BackboneError("FusedBackbone needs at least one backbone to fuse.")
        for p in parts:
            if not isinstance(p, Backbone):
                raise BackboneError(f"FusedBackbone parts must be transferkit Backbones, not {type(p).__name__}.")
        if len({id(p) for p in parts}) != len(parts):
            raise BackboneError(
                "The same backbone object is fused twice; build it twice, or tap two of its layers with TapBackbone."
            )
        first = parts[0].preprocessing
        for i, p in enumerate(parts[1:], start=1):
            diff = _same_preprocessing(first, p.preprocessing)
            if diff is not None:
                raise BackboneError(
                    f"Backbones 0 and {i} cannot be fused: they need different inputs ({diff} differs); fuse "
                    "backbones of the same modality, image size and normalisation (or the same tokenizer)."
                )
        self.parts = nn.ModuleList(parts)
        self.training = parts[0].training
        self.feature_dim = int(sum(p.feature_dim for p in parts))

    @property
    def preprocessing(self) -> Preprocessing:  # type: ignore[override]
        return self.parts[0].preprocessing

    @preprocessing.setter
    def preprocessing(self, value: Preprocessing) -> None:
        for p in self.parts:
            p.preprocessing = value

    def forward(self, x: Any) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=1)

    def blocks(self) -> list[nn.Module]:
        return [b for p in self.parts for b in p.blocks()]

    def spec(self) -> dict[str, Any]:
        return {"type": "fused", "parts": [p.spec() for p in self.parts]}


def _names(backbones: Sequence[str] | str) -> list[str]:
    items = [backbones] if isinstance(backbones, str) else list(backbones)
    names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    if not names:
        raise BackboneError("No backbone name was given; name one, or several separated by commas.")
    return names


def feature_backbone(
    backbones: Sequence[str] | str,
    *,
    layers: Sequence[int] | None = None,
    pooling: str = "avg",
    weights: str | None = None,
    pretrained: bool = True,
) -> Backbone:
    """The frozen feature source for names such as ``"mobilenet_v2.imagenet"`` or ``"a,b"`` (or ``["a", "b"]``).

    One name gives that backbone (tapped at ``layers`` when given); several give a :class:`FusedBackbone` of them,
    each tapped at the same ``layers``. ``weights`` (a local file) replaces the first backbone's weights.
    """
    from ..backbones import build_backbone

    parts: list[Backbone] = []
    for i, name in enumerate(_names(backbones)):
        bb = build_backbone(name, weights=weights if i == 0 else None, pretrained=pretrained)
        parts.append(TapBackbone(bb, layers, pooling) if layers is not None else bb)
    return parts[0] if len(parts) == 1 else FusedBackbone(parts)
