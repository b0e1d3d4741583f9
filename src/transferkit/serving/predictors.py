"""What the server runs: a model folder behind one interface, :class:`Predictor` (inputs in, probabilities out).

Two engines, chosen by what the folder holds (:func:`load_predictor`):

* **PyTorch** (``model.json`` + ``model.safetensors``: a finished run folder or a folder written by ``save()``; or an
  ensemble folder written by ``transferkit ensemble``, ``ensemble.json`` + its members' folders):
  loaded with :meth:`transferkit.api.TransferClassifier.load` and run through its ``predict_proba``, so a served
  prediction is the one ``transferkit predict`` gives (a frozen backbone runs through the fast feature engine, a
  trained one as a plain torch model; an ensemble runs its members and combines them as it was built to).
* **ONNX Runtime** (``model.onnx`` + ``export.json``: an exported folder): see :mod:`transferkit.serving` for the
  layout. The inputs are prepared by the toolkit's own loader (:func:`transferkit.data.loaders.make_loader`) with the
  preprocessing saved in ``export.json``, so they are exactly the tensors the model saw in training.

Decoded inputs: images are uint8 ``(C, H, W)`` tensors from :func:`transferkit.data.loaders.open_image` (JPEGs decoded
at the model's size, as ``predict`` does for files), texts are strings, table rows are float32 vectors. A batch of
them becomes one :class:`~transferkit.data.base.Dataset` and one forward pass.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.base import Dataset
from ..data.loaders import make_loader, open_image
from ..data.preprocessing import Preprocessing
from ..ensemble.folder import ENSEMBLE_META, STACKER_FILE, is_ensemble_folder
from ..errors import DataError, RunError
from ..io import file_sha256
from ..model import MODEL_META, MODEL_WEIGHTS, model_sha256

EXPORT_MODEL = "model.onnx"
EXPORT_META = "export.json"
#: Largest decoded image accepted (pixels): a small compressed file can expand to gigabytes (a decompression bomb).
MAX_IMAGE_PIXELS = 40_000_000


class BadInput(Exception):
    """One input of a request cannot be used; the message is one sentence for the client (answered with a 4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Predictor:
    """A loaded model ready to serve: class names, how inputs are prepared, and a batched ``predict_proba``.

    Subclasses implement :meth:`predict_proba`; :meth:`decode_image`, :meth:`check_texts` and :meth:`check_rows`
    turn request payloads into inputs (raising :class:`BadInput` with a client-facing sentence).
    """

    source: Path
    classes: list[str]
    preprocessing: Preprocessing
    image_size: int | None
    sha256: str
    engine: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return self.preprocessing.modality

    def predict_proba(self, inputs: list[Any]) -> np.ndarray:  # pragma: no cover - abstract
        """Probabilities ``(len(inputs), C)`` from ONE forward pass over all ``inputs``."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """What ``GET /metadata`` reports about the model."""
        return {
            "source": str(self.source),
            "engine": self.engine,
            "modality": self.modality,
            "classes": list(self.classes),
            "image_size": self.image_size,
            "preprocessing": self.preprocessing.to_dict(),
            "model_sha256": self.sha256,
            **self.extra,
        }

    # --- request payloads -> inputs ---------------------------------------------------------------------------
    def decode_image(self, data: bytes, name: str) -> Any:
        """An uploaded file's bytes as the uint8 ``(C, H, W)`` tensor ``predict`` would decode from that file."""
        from PIL import Image, UnidentifiedImageError

        if not data:
            raise BadInput(f"The upload '{name}' is empty; send an image file (PNG, JPEG, ...).")
        try:
            with Image.open(io.BytesIO(data)) as im:  # reads the header only: the size before any decoding
                width, height = im.size
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise BadInput(f"The upload '{name}' is not an image that can be read; send a PNG, JPEG or other "
                           "image file.", 415) from None
        if width * height > MAX_IMAGE_PIXELS:
            raise BadInput(f"The image '{name}' has {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                           "accepted; send a smaller image.", 413)
        try:
            return open_image(io.BytesIO(data), draft_size=self.image_size)
        except DataError:
            raise BadInput(f"The upload '{name}' is a damaged or truncated image; send an intact image file.",
                           415) from None

    def check_texts(self, texts: Any) -> list[str]:
        """The JSON ``texts`` as a non-empty list of strings."""
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadInput('"texts" must be a non-empty list of strings, e.g. {"texts": ["a review", "another"]}.',
                           422)
        return texts

    def check_rows(self, rows: Any) -> list[np.ndarray]:
        """The JSON ``rows`` as float32 vectors of the model's width."""
        width = self.extra.get("n_features")
        try:
            arr = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            arr = np.zeros((0,))
        if arr.ndim != 2 or len(arr) == 0 or not np.all(np.isfinite(arr)) or (width and arr.shape[1] != width):
            want = f"{width} numbers each" if width else "the same number of numbers each"
            raise BadInput(f'"rows" must be a non-empty list of rows of {want}, e.g. {{"rows": [[0.1, 2.0]]}}.',
                           422)
        return list(arr)

    def _dataset(self, inputs: list[Any]) -> Dataset:
        if self.modality == "tabular":
            return Dataset("tabular", np.stack(inputs).astype(np.float32), None, list(self.classes), "request")
        return Dataset(self.modality, list(inputs), None, list(self.classes), "request")  # type: ignore[arg-type]


class TorchPredictor(Predictor):
    """A saved transferkit model through the public API (``TransferClassifier.load(...).predict_proba``)."""

    def __init__(self, folder: Path, *, trust_code: bool = False) -> None:
        from ..api import TransferClassifier

        est = TransferClassifier.load(folder, trust_code=trust_code)
        model = est.model_
        members = getattr(est, "members_", None)  # an ensemble folder: its first member says what inputs it takes
        if members is None:
            meta = json.loads((folder / MODEL_META).read_text(encoding="utf-8"))
            extra: dict[str, Any] = {"inference": dict(model.inference), "method": _method_name(meta.get("method"))}
            sha256, image_size = model_sha256(folder), model.image_size
        else:
            extra = {"ensemble": {"how": est.how, "members": list(est.names_)}}
            sha256 = _ensemble_sha256(folder)
            # decode JPEGs at the largest size a member needs (each member then resizes to its own)
            image_size = max((m.model_.image_size or 0 for m in members), default=0) or model.image_size
        if model.preprocessing.modality == "tabular":
            extra["n_features"] = _tabular_width(model)
        super().__init__(source=folder, classes=list(est.classes_), preprocessing=model.preprocessing,
                         image_size=image_size if model.preprocessing.modality == "image" else None,
                         sha256=sha256, engine="torch", extra=extra)
        self.estimator = est
        self._lock = threading.Lock()  # one forward at a time: a torch module is not meant for concurrent calls

    def predict_proba(self, inputs: list[Any]) -> np.ndarray:
        with self._lock:
            return self.estimator.predict_proba(self._dataset(inputs), batch_size=max(1, len(inputs)))


class OnnxPredictor(Predictor):
    """An exported folder (``model.onnx`` + ``export.json``) in ONNX Runtime on the CPU."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        meta = _read_export_meta(folder / EXPORT_META)
        pre = Preprocessing.from_dict(meta["preprocessing"])
        image_size = meta.get("image_size") or pre.image_size
        if pre.modality == "image" and not image_size:
            raise RunError(f"'{folder / EXPORT_META}' gives no image size for an image model; export it again.")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(folder / EXPORT_MODEL), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - any refusal by ONNX Runtime is a broken or foreign file
            raise RunError(f"ONNX Runtime cannot load '{folder / EXPORT_MODEL}' ({type(e).__name__}); export the "
                           "model again.") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        extra: dict[str, Any] = {"output": meta.get("output", "logits")}
        if pre.modality == "tabular":
            shape = self.session.get_inputs()[0].shape
            extra["n_features"] = shape[-1] if isinstance(shape[-1], int) else None
        super().__init__(source=folder, classes=list(meta["classes"]), preprocessing=pre,
                         image_size=int(image_size) if pre.modality == "image" else None,
                         sha256=file_sha256(folder / EXPORT_MODEL), engine="onnxruntime", extra=extra)

    def predict_proba(self, inputs: list[Any]) -> np.ndarray:
        from ..train.inference import softmax

        ds = self._dataset(inputs)
        loader = make_loader(ds, self.preprocessing, image_size=self.image_size, train=False,
                             batch_size=max(1, len(inputs)))
        (x, _), = list(loader)  # one batch: the whole request group
        if isinstance(x, dict):
            feeds = {n: x[n].numpy() for n in self.input_names}
        else:
            feeds = {self.input_names[0]: x.numpy()}
        out = np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)
        if self.extra["output"] == "probabilities":
            return out.astype(np.float64)
        return softmax(out)


def load_predictor(path: str | Path, *, trust_code: bool = False) -> Predictor:
    """The predictor for a run / saved-model folder (PyTorch) or an exported folder (ONNX Runtime).

    Raises:
        RunError: the path is neither.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise RunError(f"'{path}' is not a folder; give a run folder, a saved model folder or an exported folder.")
    if (folder / EXPORT_MODEL).is_file() and (folder / EXPORT_META).is_file():
        return OnnxPredictor(folder)
    if (folder / MODEL_META).is_file() or is_ensemble_folder(folder):
        return TorchPredictor(folder, trust_code=trust_code)
    raise RunError(
        f"'{path}' holds no model: it needs {MODEL_META} and {MODEL_WEIGHTS} (a run or save() folder), "
        f"{ENSEMBLE_META} (an ensemble folder) or {EXPORT_MODEL} and {EXPORT_META} (an exported folder)."
    )


def _ensemble_sha256(folder: Path) -> str:
    """One SHA-256 for an ensemble folder: of the files its predictions come from (``ensemble.json``, the stacker,
    each member's ``model.json`` and ``model.safetensors``: relative paths and contents' SHA-256s, sorted), so it
    changes when any member or the combination changes."""
    import hashlib

    names = {ENSEMBLE_META, STACKER_FILE, MODEL_META, MODEL_WEIGHTS}
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name in names)
    for p in files:
        h.update(f"{p.relative_to(folder).as_posix()}\t{file_sha256(p)}\n".encode())
    return h.hexdigest()


def _read_export_meta(path: Path) -> dict[str, Any]:
    def damaged(why: str) -> RunError:
        return RunError(f"'{path}' is damaged ({why}); export the model again.")

    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise damaged("it is not valid UTF-8 JSON") from None
    if not isinstance(meta, dict):
        raise damaged("it is not a JSON object")
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise damaged("'classes' must be a list of two or more names")
    pre = meta.get("preprocessing")
    if not isinstance(pre, dict) or pre.get("modality") not in ("image", "text", "tabular"):
        raise damaged("'preprocessing' must be an object with modality image, text or tabular")
    if meta.get("output", "logits") not in ("logits", "probabilities"):
        raise damaged("'output' must be logits or probabilities")
    try:
        Preprocessing.from_dict(pre)
    except TypeError as e:
        raise damaged(f"'preprocessing' has an unknown entry: {e}") from None
    return meta


def _method_name(method: Any) -> str | None:
    if isinstance(method, dict):
        return method.get("name")
    return method if isinstance(method, str) else None


def _tabular_width(model: Any) -> int | None:
    """The number of input features of a tabular model (its first linear layer's width), when it has one."""
    from torch import nn

    for m in model.modules():  # the backbone's layers first, then the head's
        if isinstance(m, nn.Linear):
            return int(m.in_features)
    return None
