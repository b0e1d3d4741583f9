"""``load_teacher``: one entry point from a spec (a string from a config, or a Python object) to a :class:`Teacher`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..backbones.catalog import CATALOG
from ..errors import ConfigError
from ..model import TransferModel
from .base import Teacher
from .torch_kinds import TorchTeacher, from_catalog, from_folder


def load_teacher(spec: Any, *, trust_code: bool = False, classes: list[str] | None = None, head: str | None = None,
                 preprocessing: dict[str, Any] | None = None) -> Teacher:
    """The teacher described by ``spec``.

    Args:
        spec: a :class:`Teacher` (returned as is); a :class:`TransferModel` or a fitted ``TransferClassifier``; a
            transferkit run / saved-model folder; a catalog or prefixed backbone name (with ``head``); a path ending
            ``.onnx`` or ``.keras``; any callable (a batch of raw inputs -> scores) or an object with
            ``predict_proba`` (a scikit-learn estimator).
        trust_code: a saved model whose backbone is your own ``module:`` factory needs it (see ``load_model``).
        classes: the output order of a teacher that does not know it (ONNX, Keras, callables, a bare head file).
        head: for a backbone name, the head to put on it (see :mod:`.torch_kinds`).
        preprocessing: for ONNX / Keras files, how raw examples become their inputs (see :mod:`.foreign`);
            overrides the file's sidecar JSON.

    Raises:
        ConfigError: a missing file, an unknown kind, a Keras file that needs unsafe deserialisation.
    """
    if isinstance(spec, Teacher):
        return spec
    if isinstance(spec, TransferModel):
        return TorchTeacher(spec, kind="transferkit", name="model")
    fitted = getattr(spec, "model_", None)  # a fitted TransferClassifier (the api layer is above this one)
    if isinstance(fitted, TransferModel):
        return TorchTeacher(fitted, kind="transferkit", name=type(spec).__name__)
    if isinstance(spec, str | Path):
        return _from_string(str(spec), trust_code=trust_code, classes=classes, head=head, preprocessing=preprocessing)
    from . import foreign

    if hasattr(spec, "predict_proba"):
        return foreign.SklearnTeacher(spec, classes=classes)
    if callable(spec):
        return foreign.CallableTeacher(spec, classes=classes)
    raise ConfigError(f"A teacher cannot be made from a {type(spec).__name__}; give a model folder, a backbone name, "
                      "an .onnx or .keras file, a callable or an estimator with predict_proba.")


def _from_string(spec: str, *, trust_code: bool, classes: list[str] | None, head: str | None,
                 preprocessing: dict[str, Any] | None) -> Teacher:
    spec = spec.strip()
    if not spec:
        raise ConfigError("The teacher is empty; give a model folder, a backbone name, or an .onnx or .keras file.")
    path = Path(spec).expanduser()
    lower = spec.lower()
    if lower.endswith((".onnx", ".keras")):
        if not path.is_file():
            raise ConfigError(f"The teacher file '{spec}' does not exist; check the path.")
        from . import foreign

        cls = foreign.OnnxTeacher if lower.endswith(".onnx") else foreign.KerasTeacher
        return cls(path, classes=classes, preprocessing=preprocessing)
    if path.is_dir():
        return from_folder(path, trust_code=trust_code)
    if spec in CATALOG or (":" in spec and not path.exists() and "/" not in spec.split(":", 1)[0]):
        return from_catalog(spec, head=head, classes=classes, trust_code=trust_code)
    raise ConfigError(f"The teacher '{spec}' does not exist; give a saved model or run folder, a backbone name with "
                      "a head, or an .onnx or .keras file.")
