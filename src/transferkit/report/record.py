"""What a run records at fit time for its report, so that the report is rebuilt from files, never by predicting again.

* ``predictions_<split>.npz`` (numpy, no pickle): per example of the evaluated split its row ``index``, true
  ``label``, the ``top_k`` most likely classes (``top_index``) with their probabilities (``top_proba``) and the
  probability of the true class (``true_proba``): enough for the most confidently wrong examples and for
  calibration (ECE), and small at any number of classes (k <= 5 columns, not C).
* ``wrong_examples.json``: the most confidently wrong examples of that split, each with a preview of its input: a
  thumbnail (PNG, base64; at most :data:`THUMB` pixels a side) for images, the first characters for text, the first
  values for tabular rows. A report is a file a person sends around, so only these few inputs are kept.
* ``environment.json``: package versions, Python, platform, CPU model, torch threads and the device.
"""

from __future__ import annotations

import base64
import io
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_bytes, write_json

__all__ = ["record_predictions", "record_environment", "environment", "preview", "THUMB", "N_EXAMPLES",
           "PREDICTIONS", "WRONG_EXAMPLES", "ENVIRONMENT"]

#: largest side of a thumbnail, in pixels
THUMB = 96
#: how many confidently wrong examples are kept
N_EXAMPLES = 12
#: characters of a text example kept
SNIPPET = 280
PREDICTIONS = "predictions_{split}.npz"
WRONG_EXAMPLES = "wrong_examples.json"
ENVIRONMENT = "environment.json"

#: the packages whose versions a report shows (those that change numbers or speed)
PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "onnxruntime", "timm", "transformers", "accelerate",
            "peft", "matplotlib", "pillow")


def record_predictions(folder: str | os.PathLike[str], split: str, dataset: Any, proba: np.ndarray,
                       classes: Sequence[str], *, n_examples: int = N_EXAMPLES, top_k: int = 5) -> None:
    """Write ``predictions_<split>.npz`` and ``wrong_examples.json`` into ``folder`` (atomically).

    ``dataset`` is the labelled :class:`~transferkit.data.base.Dataset` that ``proba`` ``(N, C)`` was predicted on.
    """
    p = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    k = min(top_k, p.shape[1])
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]  # ties: the lower class index first, as argmax
    top_proba = np.take_along_axis(p, order, axis=1)
    true_proba = p[np.arange(len(labels)), labels]
    buf = io.BytesIO()
    np.savez_compressed(buf, index=np.arange(len(labels), dtype=np.int64), label=labels,
                        top_index=order.astype(np.int32), top_proba=top_proba.astype(np.float32),
                        true_proba=true_proba.astype(np.float32))
    folder = Path(folder)
    write_bytes(folder / PREDICTIONS.format(split=split), buf.getvalue())

    predicted = order[:, 0]
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-top_proba[wrong, 0], kind="stable")][:n_examples]
    examples = []
    for i in worst:
        ex = {"index": int(i), "true": str(classes[labels[i]]), "predicted": str(classes[predicted[i]]),
              "confidence": float(top_proba[i, 0]), "true_probability": float(true_proba[i])}
        ex.update(preview(dataset, int(i)))
        examples.append(ex)
    write_json(folder / WRONG_EXAMPLES, {"split": split, "n": int(len(labels)), "n_wrong": int(len(wrong)),
                                         "modality": dataset.modality, "examples": examples})


def preview(dataset: Any, i: int) -> dict[str, Any]:
    """A small preview of example ``i``: ``{"thumbnail": base64 PNG}``, ``{"text": ...}`` or ``{"values": [...]}``;
    ``{"unavailable": reason}`` when the input cannot be read (a file removed since)."""
    x = dataset.inputs[i]
    if dataset.modality == "text":
        text = str(x)
        return {"text": text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "\u2026"}
    if dataset.modality == "tabular":
        values = np.asarray(x, dtype=np.float64).ravel()
        return {"values": [round(float(v), 4) for v in values[:8]], "n_values": int(values.size)}
    try:
        return {"thumbnail": _thumbnail(x), "source": Path(x).name if isinstance(x, str | os.PathLike) else None}
    except (OSError, ValueError) as e:
        return {"unavailable": f"{type(e).__name__}: {e}"}


def _thumbnail(x: Any) -> str:
    """A PNG thumbnail (base64) of an image given as a file path or an array (grey or RGB, uint8 or float in [0, 1],
    channels last or first)."""
    from PIL import Image

    if isinstance(x, str | os.PathLike):
        with Image.open(x) as im:
            img = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    else:
        a = np.asarray(x)
        if a.dtype.kind == "f":
            a = np.clip(a * 255.0 if a.max(initial=0) <= 1.0 else a, 0, 255)
        a = a.astype(np.uint8)
        if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
            a = np.moveaxis(a, 0, -1)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        img = Image.fromarray(a)
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def environment(device: str = "auto") -> dict[str, Any]:
    """Where a run ran: versions, Python, platform, CPU, torch threads and the device (``auto`` resolved)."""
    from importlib import metadata

    from ..version import __version__

    packages = {}
    for pkg in PACKAGES:
        try:
            packages[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    env: dict[str, Any] = {"transferkit": __version__, "python": sys.version.split()[0],
                           "platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
                           "packages": packages, "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
    torch = sys.modules.get("torch")  # a fit has imported it; never import torch just to describe the machine
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        cuda = device != "cpu" and torch.cuda.is_available()
        env["device"] = f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu"
    else:
        env["device"] = device
    return env


def record_environment(folder: str | os.PathLike[str], device: str = "auto") -> None:
    """Write ``environment.json`` (see :func:`environment`) into ``folder``."""
    write_json(Path(folder) / ENVIRONMENT, environment(device))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
