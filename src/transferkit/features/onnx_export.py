"""Export a frozen backbone to ONNX once, and keep the file in the cache root for every later extraction.

Exporter: torch 2.14's default, ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` tracing, translated by
``onnxscript``, which is a dependency for this reason). Where it fails (a model ``torch.export`` cannot trace) the
legacy TorchScript exporter (``dynamo=False``, deprecated but still shipped) is tried. Whichever produced the file is
recorded in its ``meta.json``; the numeric parity check in :mod:`.engines` decides whether it is trusted.

Graph inputs: images and tables are one tensor ``x`` with a dynamic batch axis (image height and width are fixed: the
image size is part of the model key); text is ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the
tokenizer gives them) with dynamic batch and sequence axes. The output is ``features``, ``(N, D)`` float32.

Files: ``<root>/onnx/<key>/model.onnx`` (+ external weight files for models over 2 GB) and ``meta.json``, keyed by
:func:`.keys.model_key` (backbone spec, weights hash, image size, inputs, torch version) and written through the
cache's atomic staging directory under the key's lock, so concurrent extractions export once and nobody reads a
half-written model. An export that failed leaves ``<key>.failed`` (a JSON reason), so later runs do not retry it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones.base import Backbone
from ..backbones.taps import eval_mode
from .cache import META_FILE, FeatureCache, now_iso
from .keys import model_key

MODEL_FILE = "model.onnx"
IMAGE_INPUT = "x"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 18


class ExportError(Exception):
    """The backbone could not be exported (the message says why); callers turn it into a fallback or a user error."""


def input_names(batch: Any) -> list[str]:
    """The graph input names for a loader batch: ``["x"]`` for a tensor, the tokenizer keys present for text."""
    if torch.is_tensor(batch):
        return [IMAGE_INPUT]
    if isinstance(batch, Mapping):
        names = [k for k in TEXT_INPUTS if torch.is_tensor(batch.get(k))]
        if names:
            return names
    raise ExportError(f"a batch of type {type(batch).__name__} has no tensor inputs to export")


def graph_inputs(batch: Any, names: list[str]) -> list[torch.Tensor]:
    """The batch as the list of tensors the graph takes, in ``names`` order."""
    return [batch] if names == [IMAGE_INPUT] else [batch[n] for n in names]


class _Graph(nn.Module):
    """Positional tensors -> the backbone's own input (a tensor, or the tokenizer's dict) -> features."""

    def __init__(self, backbone: Backbone | nn.Module, names: list[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.names == [IMAGE_INPUT]:
            return self.backbone(inputs[0])
        return self.backbone(dict(zip(self.names, inputs)))


def _example(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Two rows of the real batch (a batch axis of size 1 would be specialised away by ``torch.export``)."""
    out = []
    for t in tensors:
        t = t.detach().to("cpu")[:2]
        out.append(t if len(t) == 2 else torch.cat([t, t]))
    return tuple(out)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' progress lines, warnings and log records off the user's console."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export",
                                               "onnxscript", "torch.fx")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(e: BaseException) -> str:
    """A short reason: the exception's first line, or ``torch.export``'s "Exception summary" line when it has one."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"
    for ln in lines:
        m = re.match(r"<class '([\w.]+)'>: (.*)", ln)
        if m:
            text = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}"
    return text if len(text) <= 160 else text[:157] + "..."


def export_onnx(backbone: Backbone | nn.Module, batch: Any, dest: Path, *, output: str = "features") -> str:
    """Write ``backbone`` (frozen, eval mode) as ``dest/model.onnx``; returns the exporter used.

    Any module that takes the batch's tensor (or the tokenizer's dict) works: :mod:`transferkit.compress` exports a
    whole model this way, with ``output="logits"`` as the graph output's name.

    Raises:
        ExportError: neither exporter could export it (the message holds both reasons).
    """
    names = input_names(batch)
    module = backbone
    if any(p.device.type != "cpu" for p in backbone.parameters()):
        module = copy.deepcopy(backbone).to("cpu")
    graph = _Graph(module, names)
    with eval_mode(graph):
        return _export(graph, _example(graph_inputs(batch, names)), names, dest / MODEL_FILE, output)


def _export(graph: _Graph, args: tuple[torch.Tensor, ...], names: list[str], path: Path,
            output: str = "features") -> str:
    text = names != [IMAGE_INPUT]
    reasons = []
    try:
        dyn = torch.export.Dim.DYNAMIC
        shapes = tuple({0: dyn, 1: dyn} if text else {0: dyn} for _ in names)
        with _quiet():
            program = torch.onnx.export(graph, args, None, dynamo=True, input_names=names, output_names=[output],
                                        dynamic_shapes=(shapes,), opset_version=OPSET, verbose=False)
            program.save(str(path))
        return "dynamo"
    except Exception as e:  # noqa: BLE001 - any exporter failure means "try the other one"
        reasons.append(f"dynamo: {_first_line(e)}")
    axes = {n: ({0: "batch", 1: "tokens"} if text else {0: "batch"}) for n in names}
    axes[output] = {0: "batch"}
    try:
        with _quiet():
            torch.onnx.export(graph, args, str(path), dynamo=False, input_names=names, output_names=[output],
                              dynamic_axes=axes, opset_version=17, do_constant_folding=True)
        return "torchscript"
    except Exception as e:  # noqa: BLE001
        reasons.append(f"torchscript: {_first_line(e)}")
    raise ExportError("; ".join(reasons))


def _failed_marker(cache: FeatureCache, key: str) -> Path:
    return cache.models_dir / f"{key}.failed"


def mark_failed(cache: FeatureCache, key: str, reason: str) -> None:
    """Remember that the model of ``key`` cannot be used (export or parity failed), so later runs skip it."""
    from ..io import write_json

    write_json(_failed_marker(cache, key), {"reason": reason, "created": now_iso()})


def failed_reason(cache: FeatureCache, key: str) -> str | None:
    """Why the model of ``key`` was given up on before, or ``None``."""
    try:
        return str(json.loads(_failed_marker(cache, key).read_text()).get("reason", "unknown"))
    except (OSError, json.JSONDecodeError):
        return None


def exported_model(cache: FeatureCache, backbone: Backbone, batch: Any, image_size: int | None) -> tuple[Path, str]:
    """The exported model of ``backbone`` (exporting it now if it is not cached): ``(path, key)``.

    Raises:
        ExportError: the export failed now or in an earlier run (recorded next to the models).
    """
    names = input_names(batch)
    parts = model_key(backbone, image_size, names)
    key = cache.key(parts)
    folder = cache.models_dir / key
    if (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE, key
    reason = failed_reason(cache, key)
    if reason is not None:
        raise ExportError(reason)
    with cache.lock(key):
        if (folder / MODEL_FILE).is_file():
            return folder / MODEL_FILE, key
        try:
            with cache.staging(cache.models_dir, key) as tmp:
                exporter = export_onnx(backbone, batch, tmp)
                meta = {"key": key, "key_parts": parts, "exporter": exporter, "inputs": names, "created": now_iso()}
                (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        except ExportError as e:
            mark_failed(cache, key, str(e))
            raise
    return folder / MODEL_FILE, key
