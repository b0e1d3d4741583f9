"""The reverse direction: a network (or any teacher) distilled into a scikit-learn model for deployment.

``distil_to_sklearn(teacher, X, estimator)`` fits ``estimator`` on the teacher's outputs over ``X`` (no labels needed:
the teacher labels every row, so unlabelled rows teach too):

* a **regressor** learns the teacher's centred logits ``z - mean(z)`` (softmax is unchanged by the shift; a regressor
  that predicts one target is wrapped in ``sklearn.multioutput.MultiOutputRegressor``, one per class) and the result
  predicts ``softmax(z_hat)``: the soft-target regression of model compression (Bucila et al. 2006, Ba & Caruana 2014);
* a **classifier** learns the teacher's hard decisions ``argmax z`` (for estimators that cannot take soft targets).

The returned :class:`DistilledClassifier` has ``predict``, ``predict_proba`` and ``classes_`` like a scikit-learn
classifier, reads the same raw rows (tabular float rows; images as raw pixels flattened), and is saved however the
deployment saves scikit-learn models (transferkit never loads pickles a user gives).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.base import Dataset
from ..errors import ConfigError
from .cached import teacher_outputs
from .load import load_teacher


def _rows(ds: Dataset) -> np.ndarray:
    if ds.modality == "text":
        raise ConfigError("distil_to_sklearn reads numeric rows; for text, give a Dataset of features (tabular).")
    x = np.asarray(ds.inputs, dtype=np.float32)
    return x.reshape(len(x), -1)


class DistilledClassifier:
    """A scikit-learn estimator fitted on a teacher's outputs, predicting like a classifier (see the module)."""

    def __init__(self, estimator: Any, classes: list[str], soft: bool) -> None:
        self.estimator = estimator
        self.classes_ = np.asarray(classes)
        self.soft = soft

    def decision_function(self, X: Any) -> np.ndarray:
        """``(N, C)`` predicted teacher logits (regressor) or one-hot decisions (classifier)."""
        x = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
        if self.soft:
            return np.asarray(self.estimator.predict(x), dtype=np.float64).reshape(len(x), -1)
        return np.asarray(self.estimator.predict_proba(x), dtype=np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        z = self.decision_function(X)
        if not self.soft:
            return z
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Class indices (``classes_[i]`` names them), as the teacher's outputs are ordered."""
        return self.predict_proba(X).argmax(axis=1)


def distil_to_sklearn(teacher: Any, X: Any, estimator: Any, *, batch_size: int = 256, cache: bool = False,
                      classes: list[str] | None = None) -> DistilledClassifier:
    """Fit ``estimator`` (a scikit-learn regressor or classifier) on ``teacher``'s outputs over ``X``.

    Args:
        teacher: anything :func:`~transferkit.teachers.load_teacher` accepts (a fitted TransferClassifier, a model
            folder, an ONNX file...).
        X: a :class:`Dataset` or a float array ``(N, F)`` of rows the teacher reads (labels unused).
        cache: keep the teacher's outputs in the feature cache (see :func:`teacher_outputs`).
    """
    from sklearn.base import is_classifier, is_regressor
    from sklearn.multioutput import MultiOutputRegressor

    t = load_teacher(teacher, classes=classes)
    ds = X if isinstance(X, Dataset) else Dataset("tabular", np.asarray(X, dtype=np.float32), None,
                                                  list(t.classes or []), "rows")
    z = teacher_outputs(t, ds, cache=cache, batch_size=batch_size).astype(np.float64)
    names = list(t.classes) if t.classes is not None else [str(i) for i in range(z.shape[1])]
    x = _rows(ds)
    if is_regressor(estimator):
        target = z - z.mean(axis=1, keepdims=True)
        tags = getattr(estimator, "__sklearn_tags__", None)
        multi = bool(tags().target_tags.multi_output) if tags is not None else False
        model = estimator if multi else MultiOutputRegressor(estimator)
        model.fit(x, target)
        return DistilledClassifier(model, names, soft=True)
    if is_classifier(estimator):
        hard = z.argmax(axis=1)
        if len(np.unique(hard)) < z.shape[1]:
            raise ConfigError("The teacher never predicts some classes on these rows, so a classifier cannot learn "
                              "them; give more rows or a regressor (soft targets).")
        estimator.fit(x, hard)
        return DistilledClassifier(estimator, names, soft=False)
    raise ConfigError(f"A {type(estimator).__name__} is neither a scikit-learn regressor nor classifier; give one.")
