"""Features from intermediate blocks of one backbone: :class:`TapBackbone`, and :class:`SharedPass` for several depths.

:class:`TapBackbone` reads the outputs of chosen layers (block indices into ``backbone.blocks()`` or module paths,
resolved and read by the one tap mechanism of :mod:`.taps`: forward hooks, as torchdistill does, so no model surgery
is needed and any backbone works). Each tapped output is pooled to ``(N, C)``:

* image maps ``(N, C, H, W)``: global average (``avg``) or max (``max``) pooling over ``H, W``;
* token sequences ``(N, T, C)`` (text, or vision transformers): the mean over the tokens that the attention mask
  keeps, ``f = sum_t m_t h_t / sum_t m_t`` (``avg``; all tokens when there is no mask), the masked maximum
  (``max``), or the first token (``cls``);
* vectors ``(N, C)`` are used as they are.

Several layers are concatenated in the order given. The forward pass stops as soon as every tapped layer has run
(:class:`~.taps.Taps` with ``stop_early``), so an early layer costs only the blocks up to it. While ``torch.export``
traces it for ONNX the pass runs to the end instead and the exporter drops the unused blocks from the graph.

The JSON :meth:`TapBackbone.spec` keeps the layers as given (block indices as integers, module paths as text), so
:func:`transferkit.backbones.build_from_spec` rebuilds it and a cached feature set keeps its key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from .base import Backbone, Preprocessing
from .taps import TapPoint, Taps, eval_mode, resolve_layers

POOLINGS = ("avg", "max", "cls")
_ALIASES = {"mean": "avg"}  # the name text users know for mask-mean pooling


def _check_pooling(pooling: str) -> str:
    pooling = _ALIASES.get(str(pooling), str(pooling))
    if pooling not in POOLINGS:
        raise BackboneError(f"Pooling '{pooling}' is unknown; use one of {', '.join(POOLINGS)} (or mean for avg).")
    return pooling


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


class TapBackbone(Backbone):
    """Features from chosen blocks of ``backbone``, each globally pooled, concatenated in the given order.

    Args:
        backbone: the backbone to read; it runs whole (up to the deepest tapped layer) and is not modified.
        layers: block indices into ``backbone.blocks()`` (negative from the end) or module paths such as
            ``"features.7"`` (see :mod:`.taps`), in any mix. ``None``: the backbone's own final features
            (``pooling`` is then unused).
        pooling: ``avg`` (mask-mean for text; ``mean`` is accepted as a synonym), ``max``, or ``cls`` (first token).

    Raises:
        BackboneError: an index outside the blocks, a path that does not exist (with the closest ones), an unknown
            pooling, or an empty ``layers`` list.
    """

    def __init__(self, backbone: Backbone, layers: Sequence[int | str] | int | str | None = None,
                 pooling: str = "avg") -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise BackboneError(f"TapBackbone needs a transferkit Backbone, not a {type(backbone).__name__}.")
        self.backbone = backbone
        self.training = backbone.training
        self.pooling = _check_pooling(pooling)
        if isinstance(layers, int | str) and not isinstance(layers, bool):
            layers = [layers]
        points = None if layers is None else resolve_layers(backbone, list(layers))
        if points is not None and not points:
            raise BackboneError("The list of layers to tap is empty; give block indices such as [-1] or null.")
        self.__dict__["_points"] = points or []  # not modules: the paths are looked up in self.backbone when read
        self.layers: list[int | str] | None = None if points is None else [p.label for p in points]
        self.tap_dims: list[int] = [] if self.layers is None else self._measure_dims()  # one per tapped layer
        self.feature_dim = backbone.feature_dim if self.layers is None else int(sum(self.tap_dims))

    # -- construction ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _measure_dims(self) -> list[int]:
        """Each tapped layer's pooled channel count, from one forward pass on a dummy input."""
        with eval_mode(self):
            _, pooled = self._run_taps(dummy_input(self.backbone), stop_early=True)
        return [int(p.shape[1]) for p in pooled]

    def _run_taps(self, x: Any, *, stop_early: bool) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Run the backbone with hooks on the tapped layers: (its final features, or None when the pass stopped
        after the deepest tapped layer; the pooled output of each tapped layer, in order)."""
        points: list[TapPoint] = self.__dict__["_points"]
        final = None
        with Taps(self.backbone, [p.path for p in points], labels=[p.label for p in points],
                  stop_early=stop_early) as taps:
            final = self.backbone(x)
        mask = x.get("attention_mask") if isinstance(x, Mapping) else None
        return final, [pool(h, self.pooling, mask) for h in taps.in_order()]

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

    def __init__(self, backbone: Backbone, layers: Sequence[int | str], pooling: str = "avg") -> None:
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


