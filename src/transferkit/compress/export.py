"""The export folder: ``model.onnx`` and ``export.json``, everything a server needs to run the model without
transferkit's training code.

``export.json``::

    {"format": "transferkit-export/1", "classes": [...], "preprocessing": Preprocessing.to_dict(),
     "image_size": 96, "inputs": [{"name": "x", "shape": ["batch", 3, 96, 96], "dtype": "float32"}],
     "output": "logits", "int8": true, "quantization": {...} | null, "exporter": "dynamo",
     "source": {"model_sha256": "...", "folder": "..."}, "parity": {...}}

The input is the preprocessed batch (images resized to ``image_size``, scaled to [0, 1] and normalised by the
preprocessing's mean and std, channels first). The ``parity`` entry holds the check of
:func:`transferkit.compress.onnx_model.parity` on held-out data; an fp32 export that fails it is never written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..io import write_json
from ..version import __version__
from .onnx_model import export_fp32, parity, quantize_int8

EXPORT_META = "export.json"
EXPORT_FORMAT = "transferkit-export/1"


def write_export(model: Any, work: Path, *, example: Any, parity_batches: list[Any],
                 calibration_batches: list[Any] | None = None, int8: bool = False, calibration: str = "minmax",
                 per_channel: bool = True, source: dict[str, Any] | None = None, float_ends: bool = True
                 ) -> dict[str, Any]:
    """Export ``model`` into the folder ``work`` (``model.onnx`` + ``export.json``); returns the ``export.json`` dict.

    The fp32 graph is checked against the PyTorch model first (always: an int8 model is only as good as the graph it
    was quantised from); with ``int8`` it is then quantised on ``calibration_batches`` and the int8 graph replaces
    it, its parity reported.

    Raises:
        RunError: the export fails or its fp32 parity check fails (nothing is left in ``work`` but what the caller
            discards).
    """
    from ..features.onnx_export import MODEL_FILE

    work.mkdir(parents=True, exist_ok=True)
    fp32_dir = work / ".fp32"
    path, names, exporter = export_fp32(model, example, fp32_dir)
    checks = {"fp32": parity(model, path, names, parity_batches, int8=False)}
    quant = None
    if int8:
        quant = quantize_int8(path, work / MODEL_FILE, names, calibration_batches or [], calibration=calibration,
                              per_channel=per_channel, float_ends=float_ends)
        checks["int8"] = parity(model, work / MODEL_FILE, names, parity_batches, int8=True)
    else:
        (fp32_dir / MODEL_FILE).replace(work / MODEL_FILE)
    for p in sorted(fp32_dir.glob("*")):
        p.unlink()
    fp32_dir.rmdir()
    x = example if torch.is_tensor(example) else None
    shape = ["batch", *list(x.shape[1:])] if x is not None else ["batch", "tokens"]
    inputs = [{"name": n, "shape": shape, "dtype": "float32" if x is not None else "int64"} for n in names]
    meta = {
        "format": EXPORT_FORMAT, "transferkit_version": __version__, "classes": list(model.classes),
        "preprocessing": model.preprocessing.to_dict(), "image_size": model.image_size, "inputs": inputs,
        "output": "logits", "int8": bool(int8), "quantization": quant, "exporter": exporter,
        "source": source or {}, "parity": checks,
    }
    write_json(work / EXPORT_META, meta)
    return meta
