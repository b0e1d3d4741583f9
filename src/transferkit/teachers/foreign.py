"""Teachers that are not torch: ONNX files, Keras 3 files, scikit-learn estimators and plain callables.

They run in the cached mode only (``module`` is ``None``): their outputs on every training example are computed once
(:func:`transferkit.teachers.teacher_outputs`). Each gives logit-like scores; a probability output (a softmax layer,
``predict_proba``, an ONNX ``probabilities`` tensor) becomes ``log(p + 1e-8)``.

**How raw examples become a file teacher's inputs** (ONNX, Keras). A file holds a network, not how its inputs were
prepared, so that comes from a small JSON object: the sidecar file ``<model file>.json`` next to the model (written by
whoever exported it, so the preprocessing travels with the model), overridden key by key by
``method_params.teacher_preprocessing`` (or ``load_teacher(..., preprocessing=...)``). Keys, all optional:

* ``modality``: ``image``, ``tabular`` or ``text`` (default: from the model's input rank: 4 -> image, 2 -> tabular,
  a string input -> text);
* ``classes``: the output order (checked against the student's classes; otherwise only the count is checked);
* images: ``image_size`` (default: the model's static input size), ``mean`` / ``std`` (per channel on the [0, 1]
  scale; default 0 and 1, i.e. pixels / 255), ``layout`` ``NCHW`` / ``NHWC`` (default: from the input shape; Keras:
  ``NHWC``), ``channels`` 1 or 3 (default: from the input shape);
* ``output``: ``auto`` (default: probabilities when the output is named like one or every row is a distribution),
  ``logits`` or ``probabilities``; ``output_name``: which ONNX output to read (default: the first 2-D float output).

Images are decoded, resized and normalised by the toolkit's own loader (:func:`transferkit.data.loaders.make_loader`),
then laid out as asked. The fingerprint of a file teacher is the SHA-256 of the file's bytes plus this JSON, so a
changed file or a changed preprocessing never reuses cached outputs.

**Keras**: ``keras`` is imported only when a ``.keras`` file is used, with ``KERAS_BACKEND=torch`` set first when
unset (no TensorFlow needed), and loaded with ``safe_mode=True``: a model holding Python code (a ``Lambda`` layer) is
refused, never run.

**scikit-learn**: ``predict_proba`` on the raw rows (tabular: the float array; text: the strings, for a pipeline
that vectorises them; images: the raw pixels flattened to ``(N, H*W*C)`` floats in 0..255). Classes are the
estimator's ``classes_`` when they are names; integer ``classes_`` are taken as label indices (only the count is
checked). Its fingerprint is ``joblib.hash`` of the fitted estimator (no file is ever unpickled).

**Callables**: ``fn(batch) -> scores`` on raw batches (tabular float32 ``(B, F)``, a list of strings, uint8 images
``(B, H, W[, 3])`` or a list of image paths). A callable cannot be fingerprinted by what it computes, so its outputs
are cached only when a ``fingerprint`` is given (``CallableTeacher(fn, fingerprint="my-model-v3")``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..data.base import Dataset
from ..data.preprocessing import Preprocessing
from ..errors import ConfigError
from ..io import file_sha256
from .base import Teacher, log_probabilities, looks_like_probabilities, sha256_text

FILE_KEYS = ("modality", "classes", "image_size", "mean", "std", "layout", "channels", "output", "output_name")


def read_preprocessing(path: Path, override: dict[str, Any] | None) -> dict[str, Any]:
    """The sidecar ``<path>.json`` (when present) updated with ``override``; unknown keys are refused."""
    spec: dict[str, Any] = {}
    sidecar = Path(str(path) + ".json")
    if sidecar.is_file():
        try:
            spec = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ConfigError(f"The preprocessing file '{sidecar}' is not valid JSON; fix or remove it.") from None
        if not isinstance(spec, dict):
            raise ConfigError(f"The preprocessing file '{sidecar}' must hold a JSON object; fix or remove it.")
    spec.update(override or {})
    unknown = sorted(set(spec) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(f"Unknown teacher preprocessing key '{unknown[0]}'; the keys are {', '.join(FILE_KEYS)}.")
    if spec.get("output", "auto") not in ("auto", "logits", "probabilities"):
        raise ConfigError("The teacher preprocessing 'output' must be auto, logits or probabilities.")
    if spec.get("layout", "NCHW") not in ("NCHW", "NHWC"):
        raise ConfigError("The teacher preprocessing 'layout' must be NCHW or NHWC.")
    return spec


def _per_channel(v: Any, default: float) -> tuple[float, float, float]:
    if v is None:
        return (default,) * 3
    vals = [float(v)] * 3 if isinstance(v, int | float) else [float(a) for a in v]
    return (vals[0],) * 3 if len(vals) == 1 else tuple(vals[:3])  # type: ignore[return-value]


def image_batches(ds: Dataset, spec: dict[str, Any], batch_size: int) -> Iterator[np.ndarray]:
    """float32 batches of ``ds``'s images as a file teacher expects them (see the module docstring)."""
    from ..data.loaders import make_loader

    size = spec.get("image_size")
    if not size:
        raise ConfigError("The image teacher's input size is unknown; set image_size in its preprocessing.")
    pre = Preprocessing("image", image_size=int(size), mean=_per_channel(spec.get("mean"), 0.0),
                        std=_per_channel(spec.get("std"), 1.0))
    for x, _ in make_loader(ds, pre, image_size=int(size), train=False, batch_size=batch_size):
        if int(spec.get("channels", 3)) == 1:
            x = x[:, :1]
        if spec.get("layout", "NCHW") == "NHWC":
            x = x.permute(0, 2, 3, 1)
        yield np.ascontiguousarray(x.numpy(), dtype=np.float32)


def raw_batches(ds: Dataset, batch_size: int) -> Iterator[Any]:
    """The raw examples of ``ds`` in order, ``batch_size`` at a time (float32 rows, strings, images as stored)."""
    for i in range(0, len(ds), batch_size):
        chunk = ds.inputs[i : i + batch_size]
        if ds.modality == "tabular":
            chunk = np.asarray(chunk, dtype=np.float32)
        elif ds.modality == "text":
            chunk = [str(s) for s in chunk]
        yield chunk


def as_scores(out: np.ndarray, output: str, named_probabilities: bool = False) -> np.ndarray:
    """Logit-like float32 scores from a teacher's raw output (``output``: auto, logits or probabilities)."""
    out = np.asarray(out, dtype=np.float32)
    if output == "probabilities" or (output == "auto" and (named_probabilities or looks_like_probabilities(out))):
        return log_probabilities(out)
    return out


def _progress(it: Iterator[Any], total: int, progress: bool, what: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    return iter(tqdm(it, total=total, desc=what, leave=False, disable=not progress, mininterval=1.0))


class _FileTeacher(Teacher):
    """What ONNX and Keras teachers share: the file, its preprocessing JSON, the fingerprint."""

    def __init__(self, path: Path, classes: list[str] | None, preprocessing: dict[str, Any] | None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"The teacher file '{path}' does not exist; check the path.")
        self.name = self.path.name
        self.spec = read_preprocessing(self.path, preprocessing)
        if classes is not None:
            self.spec["classes"] = list(classes)
        self.classes = [str(c) for c in self.spec["classes"]] if self.spec.get("classes") else None
        self._sha = file_sha256(self.path)

    def fingerprint(self) -> str:
        return sha256_text(f"{self.kind}-teacher/1", self._sha, json.dumps(self.spec, sort_keys=True))

    def _inputs(self, ds: Dataset, batch_size: int) -> Iterator[Any]:
        if self.modality is not None and ds.modality != self.modality:
            raise ConfigError(f"The teacher '{self.name}' takes {self.modality} inputs but the data is {ds.modality}; "
                              "give a teacher for the same kind of data.")
        if ds.modality == "image":
            return image_batches(ds, self.spec, batch_size)
        return raw_batches(ds, batch_size)


class OnnxTeacher(_FileTeacher):
    """An ONNX file run by ONNX Runtime on the CPU (see the module docstring for its preprocessing)."""

    kind = "onnx"

    def __init__(self, path: str | Path, *, classes: list[str] | None = None,
                 preprocessing: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort

        super().__init__(Path(path), classes, preprocessing)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - any failure to load is the file's fault
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ConfigError(f"The teacher file '{path}' cannot be read as an ONNX model ({first}); export it "
                              "again.") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(f"The ONNX teacher '{self.name}' has {len(inputs)} inputs; transferkit feeds one "
                              "(the examples), so export a model with a single input.")
        self.input = inputs[0]
        shape = list(self.input.shape)
        if "string" in self.input.type:
            guess = "text"
        elif len(shape) == 4:
            guess = "image"
            nchw = shape[1] in (1, 3)
            self.spec.setdefault("layout", "NCHW" if nchw else "NHWC")
            ch = shape[1] if nchw else shape[3]
            if isinstance(ch, int):
                self.spec.setdefault("channels", ch)
            side = shape[2] if nchw else shape[1]
            if isinstance(side, int):
                self.spec.setdefault("image_size", side)
        else:
            guess = "tabular"
        self.modality = self.spec.get("modality", guess)

    def outputs(self, ds: Dataset, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        rows: list[np.ndarray] = []
        named = False
        total = -(-len(ds) // batch_size)
        for x in _progress(self._inputs(ds, batch_size), total, progress, f"teacher {self.name}"):
            if ds.modality == "text":
                x = np.asarray(x, dtype=object).reshape(-1, 1) if len(self.input.shape) == 2 else np.asarray(
                    x, dtype=object)
            out, named = self._pick(self.session.run(None, {self.input.name: x}))
            rows.append(out)
        if not rows:
            return np.zeros((0, len(self.classes or []) or 2), dtype=np.float32)
        return as_scores(np.concatenate(rows), self.spec.get("output", "auto"), named)

    def _pick(self, results: list[Any]) -> tuple[np.ndarray, bool]:
        """The score output: ``output_name`` if set, else the first 2-D float output (or a ZipMap of scores)."""
        metas = self.session.get_outputs()
        wanted = self.spec.get("output_name")
        for meta, value in zip(metas, results, strict=True):
            if wanted is not None and meta.name != wanted:
                continue
            if isinstance(value, list) and value and isinstance(value[0], dict):  # skl2onnx's ZipMap
                keys = list(value[0])
                return np.array([[row[k] for k in keys] for row in value], dtype=np.float32), True
            arr = np.asarray(value)
            if arr.ndim == 2 and np.issubdtype(arr.dtype, np.floating):
                return arr.astype(np.float32), "prob" in meta.name.lower()
        names = ", ".join(m.name for m in metas)
        raise ConfigError(f"The ONNX teacher '{self.name}' has no 2-D float score output among {names}; set "
                          "output_name in its preprocessing.")


def _import_keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


class KerasTeacher(_FileTeacher):
    """A Keras 3 ``.keras`` file, loaded with ``safe_mode=True`` on the torch backend (see the module docstring)."""

    kind = "keras"

    def __init__(self, path: str | Path, *, classes: list[str] | None = None,
                 preprocessing: dict[str, Any] | None = None) -> None:
        super().__init__(Path(path), classes, preprocessing)
        keras = _import_keras()
        try:
            self.model = keras.saving.load_model(str(self.path), compile=False, safe_mode=True)
        except Exception as e:  # noqa: BLE001 - any failure to load is the file's fault
            text = str(e)
            if "safe_mode" in text or "Lambda" in text or "lambda" in text:
                raise ConfigError(f"The Keras model '{self.name}' holds Python code (a Lambda layer) that would need "
                                  "unsafe deserialisation, which transferkit refuses; rebuild it without Lambda "
                                  "layers or export it to ONNX.") from None
            first = text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__
            raise ConfigError(f"The teacher file '{path}' cannot be read as a Keras 3 model ({first}); save it "
                              "again with model.save('model.keras').") from None
        shape = list(self.model.input_shape) if not isinstance(self.model.input_shape, list) else []
        if len(shape) == 4:
            guess = "image"
            self.spec.setdefault("layout", "NHWC")
            nhwc = self.spec["layout"] == "NHWC"
            ch, side = (shape[3], shape[1]) if nhwc else (shape[1], shape[2])
            if isinstance(ch, int):
                self.spec.setdefault("channels", ch)
            if isinstance(side, int):
                self.spec.setdefault("image_size", side)
        elif len(shape) == 2:
            guess = "tabular"
        else:
            guess = None
        self.modality = self.spec.get("modality", guess)

    def outputs(self, ds: Dataset, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        rows = []
        total = -(-len(ds) // batch_size)
        for x in _progress(self._inputs(ds, batch_size), total, progress, f"teacher {self.name}"):
            out = self.model.predict(x if ds.modality != "text" else np.asarray(x, dtype=object), verbose=0,
                                     batch_size=batch_size)
            rows.append(np.asarray(out, dtype=np.float32))
        return as_scores(np.concatenate(rows), self.spec.get("output", "auto"))


class SklearnTeacher(Teacher):
    """A fitted estimator with ``predict_proba`` (see the module docstring)."""

    kind = "sklearn"

    def __init__(self, estimator: Any, *, classes: list[str] | None = None, modality: str | None = None) -> None:
        self.estimator = estimator
        self.name = type(estimator).__name__
        self.modality = modality
        known = getattr(estimator, "classes_", None)
        if known is None and hasattr(estimator, "steps"):
            known = getattr(estimator.steps[-1][1], "classes_", None)
        if known is None:
            raise ConfigError(f"The {self.name} teacher is not fitted (it has no classes_); fit it before it teaches.")
        known = list(known)
        self.num_outputs = len(known)
        if classes is not None:
            self.classes = list(classes)
        elif all(isinstance(c, str) for c in known):
            self.classes = [str(c) for c in known]
        elif [int(c) for c in known] != list(range(len(known))):
            raise ConfigError(f"The {self.name} teacher's classes_ are {known[:5]}, not label indices 0..K-1; fit it "
                              "on the label indices or give the class names.")

    def fingerprint(self) -> str:
        import joblib

        return sha256_text("sklearn-teacher/1", joblib.hash(self.estimator), self.classes, self.modality)

    def outputs(self, ds: Dataset, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if self.modality is not None and ds.modality != self.modality:
            raise ConfigError(f"The teacher '{self.name}' takes {self.modality} inputs but the data is {ds.modality}; "
                              "give a teacher for the same kind of data.")
        rows = []
        size = max(batch_size, 1024)  # predict_proba is vectorised: large batches
        for x in raw_batches(ds, size):
            if ds.modality == "image":
                x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
            rows.append(np.asarray(self.estimator.predict_proba(x), dtype=np.float32))
        return log_probabilities(np.concatenate(rows))


class CallableTeacher(Teacher):
    """Any ``fn(raw batch) -> scores`` (see the module docstring)."""

    kind = "callable"

    def __init__(self, fn: Callable[[Any], Any], *, classes: list[str] | None = None, modality: str | None = None,
                 output: str = "auto", fingerprint: str | None = None) -> None:
        if output not in ("auto", "logits", "probabilities"):
            raise ConfigError("A callable teacher's output must be auto, logits or probabilities.")
        self.fn = fn
        self.name = getattr(fn, "__qualname__", type(fn).__name__)
        self.classes = list(classes) if classes is not None else None
        self.modality = modality
        self.output = output
        self._fingerprint = fingerprint
        self.cacheable = fingerprint is not None

    def fingerprint(self) -> str:
        return sha256_text("callable-teacher/1", self._fingerprint or f"uncached-{id(self)}", self.output,
                           self.classes)

    def outputs(self, ds: Dataset, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        rows = []
        for x in raw_batches(ds, batch_size):
            out = self.fn(x)
            if hasattr(out, "detach"):
                out = out.detach().cpu().numpy()
            rows.append(np.asarray(out, dtype=np.float32))
        return as_scores(np.concatenate(rows), self.output)
