"""A Keras 3 model file as a trainable backbone: ``keras:<file.keras>`` (optionally ``#<tensor>``).

Keras is imported only when a Keras source is used (about 7 s), with ``KERAS_BACKEND=torch`` set before the import so
that no TensorFlow is needed; if Keras is already imported with another backend, :func:`import_keras` refuses with
one sentence (the backend cannot change within a process). The file is read with
``keras.saving.load_model(path, safe_mode=True)``, so a ``Lambda`` layer or any other deserialised Python code is
refused, never run.

Measured and chosen: a Keras model on the torch backend *is* an ``nn.Module``, but it is not used directly as the
backbone. Its layers switch between training and inference by a ``training=`` call argument, not by
``module.train()``/``eval()``, so the toolkit's loop (which freezes batch-norm statistics and turns dropout off with
``eval()``) would not control it; its weights are Keras variables whose state-dict keys name Keras's object paths;
and a saved model would need Keras and the ``.keras`` file to rebuild. The model is instead exported with Keras's
own ``model.export(format="onnx")`` (which matches ONNX Runtime to about 1e-9) and goes through the same conversion
as ``onnx:`` (:class:`~.onnx_backbone.OnnxBackbone`), with one more parity check: Keras's ``predict`` against the
converted *whole* graph, on the same batch, besides ONNX Runtime against the cut graph. Both must agree within 1e-4.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackboneError
from .onnx_backbone import OnnxBackbone, read_onnx

__all__ = ["import_keras", "keras_backbone", "load_keras_model"]


def import_keras() -> Any:
    """``import keras`` on the torch backend (set before the import); refuses another backend already imported."""
    if "keras" in sys.modules:
        keras = sys.modules["keras"]
        backend = keras.backend.backend() if hasattr(keras, "backend") else "unknown"
        if backend != "torch":
            raise BackboneError(
                f"Keras is already imported with the '{backend}' backend in this process; start a new process (or set "
                "KERAS_BACKEND=torch before anything imports keras) to use a Keras model with transferkit."
            )
        return keras
    os.environ["KERAS_BACKEND"] = "torch"
    import keras

    return keras


def load_keras_model(path: str | os.PathLike[str], *, what: str | None = None) -> Any:
    """The Keras model in ``path`` (a ``.keras`` file), loaded in safe mode (unsafe layers refused, never run)."""
    p = Path(path)
    shown = what or f"keras:{p}"
    if not p.is_file():
        raise BackboneError(f"Keras file '{p}' does not exist; give the path of a .keras file ({shown}).")
    if p.suffix != ".keras":
        raise BackboneError(
            f"'{p}' is not a Keras 3 .keras file; save the model with model.save('model.keras') (legacy .h5 files and "
            "SavedModel folders are not read)."
        )
    keras = import_keras()
    try:
        return keras.saving.load_model(str(p), safe_mode=True, compile=False)
    except ValueError as e:
        if "safe_mode" in str(e) or "unsafe" in str(e).lower() or "lambda" in str(e).lower():
            raise BackboneError(
                f"'{p}' holds Python code (a Lambda or other unsafe layer) that loading would run, so it was refused; "
                "replace that layer by a built-in or registered Keras layer and save the model again."
            ) from None
        raise BackboneError(f"'{p}' cannot be loaded by Keras ({str(e).splitlines()[0][:200]}).") from None
    except Exception as e:  # noqa: BLE001 - a damaged zip, a missing custom object...
        raise BackboneError(
            f"'{p}' cannot be loaded by Keras ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
            "check that it is a complete .keras file that uses only built-in layers."
        ) from None


def _first(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else ""


def export_onnx(model: Any, *, what: str) -> Any:
    """The Keras model exported by ``model.export(format="onnx")``, loaded as an ``onnx.ModelProto``."""
    with tempfile.TemporaryDirectory(prefix="transferkit-keras-") as tmp:
        dest = Path(tmp) / "model.onnx"
        try:
            shape = tuple(model.inputs[0].shape)[1:]
            if None not in shape:  # a loaded model is exported only after it has been called once
                model.predict(np.zeros((1, *shape), dtype="float32"), verbose=0)
            model.export(str(dest), format="onnx", verbose=False)
        except Exception as e:  # noqa: BLE001 - export failures are layer-specific
            raise BackboneError(
                f"Keras cannot export {what} to ONNX ({type(e).__name__}: {_first(e)}); "
                "use built-in layers, or give an ONNX file of the model as onnx:<file>."
            ) from None
        return read_onnx(dest, what=what)


def keras_backbone(
    path: str | os.PathLike[str],
    *,
    feature: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    parity_batch: Any = None,
    parity_batch_name: str = "data",
    pretrained: bool = True,
    display_name: str | None = None,
) -> OnnxBackbone:
    """Build the backbone of ``keras:<path>``: load safely, export to ONNX, convert, check parity twice."""
    shown = display_name or f"keras:{path}"
    model = load_keras_model(path, what=shown)
    graph = export_onnx(model, what=shown)

    def keras_predict(x: np.ndarray) -> np.ndarray:
        out = model.predict(x, verbose=0, batch_size=max(1, len(x)))
        return np.asarray(out[0] if isinstance(out, list | tuple) else out)

    bb = OnnxBackbone(
        graph,
        feature=feature,
        mean=mean,
        std=std,
        parity_batch=parity_batch,
        parity_batch_name=parity_batch_name,
        references=[("keras", keras_predict, graph)],
        pretrained=pretrained,
        display_name=shown,
        origin="keras",
    )
    bb.source_name = Path(path).name
    return bb
