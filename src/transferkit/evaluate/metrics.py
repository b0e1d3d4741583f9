"""Classification metrics computed from predicted class probabilities.

One function, :func:`classification_metrics`, turns ``(y_true, proba)`` into a plain dict of Python numbers that the
training loop logs every epoch, the report prints and ``metrics.json`` stores. Every number is scikit-learn's
(``accuracy_score``, ``f1_score(average="macro")``, ``top_k_accuracy_score``, ``precision_recall_fscore_support``
and ``confusion_matrix``, ``zero_division=0``), so the values mean exactly what their sklearn documentation says;
they are computed here with numpy by the same arithmetic, in the same order (``tests/test_evaluate.py`` checks them
bit for bit against sklearn), because importing ``sklearn.metrics`` costs about a second (scipy.stats and sparse),
which was most of the start-up of a command that only scores predictions. The inputs are validated here, at the
boundary, so that a shape mix-up fails with a sentence instead of a silently wrong score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "validate_predictions", "expected_calibration_error", "EPS"]

#: Probabilities are clipped to ``[EPS, 1]`` before the log, so one confident mistake gives a large but finite loss.
EPS = 1e-15


def validate_predictions(y_true: Any, proba: Any, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert labels and probabilities; return ``(y_true int64 (N,), proba float64 (N, C))``.

    Raises ``ValueError`` with a sentence naming the problem: empty input, a shape that does not match ``classes``,
    labels that are not integers in ``[0, C)``, duplicate class names, or non-finite / negative probabilities.
    """
    classes = list(classes)
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes to compute classification metrics, got {n_classes}")
    if len(set(classes)) != n_classes:
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        raise ValueError(f"class names must be unique; duplicated: {dupes}")

    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must be a 2-D array (N, C), got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError("cannot compute metrics on 0 examples; the evaluation split is empty")
    if p.shape[1] != n_classes:
        raise ValueError(f"proba has {p.shape[1]} columns but there are {n_classes} classes")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    if np.any(p < 0):
        raise ValueError("proba contains negative values; pass probabilities (e.g. softmax of logits), not logits")

    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be a 1-D array of class indices, got shape {y.shape}")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} labels but proba has {p.shape[0]} rows")
    if y.dtype.kind == "b" or y.dtype.kind not in "iuf":
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("y_true must hold integer class indices, got non-integer values")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if np.any(bad):
        raise ValueError(
            f"y_true holds label {int(y[bad][0])}, outside the valid range [0, {n_classes - 1}] for "
            f"{n_classes} classes"
        )
    return y, p


def classification_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
    *,
    top_k: tuple[int, ...] = (1, 5),
) -> dict[str, Any]:
    """Score predicted probabilities against true labels.

    Args:
        y_true: ``(N,)`` integer class indices into ``classes``.
        proba: ``(N, C)`` class probabilities (rows are expected to sum to 1; they are not renormalised).
        classes: the ``C`` class names, in index order.
        top_k: which top-k accuracies to add, as ``top{k}_accuracy``. Only ``k < C`` is reported (with ``k >= C``
            the value is trivially 1). ``top1_accuracy`` equals ``accuracy``.

    Returns:
        A JSON-able dict:

        - ``accuracy``: share of rows whose arg-max class is the true class.
        - ``macro_f1``: unweighted mean F1 over the classes that occur in ``y_true`` or in the predictions
          (scikit-learn's default), so a class absent from a small split does not count as a zero.
        - ``top{k}_accuracy`` for each requested ``k < C``.
        - ``loss``: mean cross-entropy ``-log p(true class)``, with ``p`` clipped to ``[1e-15, 1]``.
        - ``n``: number of examples.
        - ``per_class``: ``{class_name: {"precision", "recall", "f1", "support"}}`` for every class, in order.
        - ``confusion_matrix``: ``C x C`` list of lists of counts; row ``i`` is the true class ``i``, column ``j``
          the predicted class ``j``.

    Raises:
        ValueError: on empty input, mismatched shapes, labels out of range or invalid ``top_k``.
    """
    y, p = validate_predictions(y_true, proba, classes)
    n, n_classes = p.shape
    ks = tuple(top_k)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"top_k values must be positive integers, got {k!r}")

    y_pred = p.argmax(axis=1)
    cm = np.bincount(y * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    out: dict[str, Any] = {"accuracy": float(np.average(y == y_pred))}
    prec, rec, f1, support = _prf(cm)
    present = (support > 0) | (cm.sum(axis=0) > 0)  # f1_score's labels: those in y_true or the predictions
    out["macro_f1"] = float(np.sum(f1[present]) / np.sum(present.astype(np.float64)))
    for k in sorted(set(int(k) for k in ks)):
        if k >= n_classes:
            continue
        if k == 1:
            # sklearn's top-k breaks ties differently from argmax; keep top-1 identical to `accuracy`.
            out["top1_accuracy"] = out["accuracy"]
        else:
            out[f"top{k}_accuracy"] = _top_k_accuracy(y, p, k)

    p_true = np.clip(p[np.arange(n), y], EPS, 1.0)
    out["loss"] = float(-np.mean(np.log(p_true)))
    out["n"] = int(n)

    out["per_class"] = {
        str(name): {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    out["confusion_matrix"] = [[int(v) for v in row] for row in cm]
    return out


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` in float64, 0 where the denominator is 0 (sklearn's ``zero_division=0``)."""
    mask = denominator == 0
    den = np.asarray(denominator, dtype=np.float64).copy()
    den[mask] = 1
    result = np.asarray(numerator, dtype=np.float64) / den
    result[mask] = 0.0
    return result


def _prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from the confusion matrix, as ``precision_recall_fscore_support``.

    F1 is ``2 tp / (2 tp + fn + fp)`` written as sklearn writes it (``(1 + b2) tp / (b2 true + pred)``, b2 = 1).
    """
    tp = np.diag(cm).astype(np.int64)
    pred, true = cm.sum(axis=0), cm.sum(axis=1)
    precision, recall = _divide(tp, pred), _divide(tp, true)
    f1 = _divide((1 + 1.0) * tp.astype(np.float64), 1.0 * true.astype(np.float64) + pred.astype(np.float64))
    return precision, recall, f1, true


def _top_k_accuracy(y: np.ndarray, p: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the ``k`` highest scores, ties broken as ``top_k_accuracy_score``."""
    sorted_pred = np.argsort(p, axis=1, kind="mergesort")[:, ::-1]
    hits = (y == sorted_pred[:, :k].T).any(axis=0)
    return float(np.average(hits))


def expected_calibration_error(y_true: Any, proba: Any, *, n_bins: int = 15) -> float:
    """Expected calibration error of the top-1 prediction (Guo et al. 2017), with ``n_bins`` equal-width bins.

    ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` where ``B_b`` holds the rows whose top probability (the
    confidence) falls in ``((b-1)/n_bins, b/n_bins]`` (a confidence of 0 goes to the first bin), ``acc`` is the
    share of those rows predicted right and ``conf`` their mean confidence. 0 is perfectly calibrated; a model
    that is always 100 % sure and right half the time has 0.5. Written here (a few lines of numpy) because
    scikit-learn has no multi-class ECE (``calibration_curve`` is binary and returns no ECE).
    """
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true).astype(np.int64)
    if p.ndim != 2 or p.shape[0] == 0 or y.shape != (p.shape[0],):
        raise ValueError(f"need proba (N, C) and y_true (N,) with N > 0, got {p.shape} and {y.shape}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return calibration_error(p.max(axis=1), p.argmax(axis=1) == y, n_bins=n_bins)


def calibration_error(confidence: Any, correct: Any, *, n_bins: int = 15) -> float:
    """The ECE of :func:`expected_calibration_error` from each row's top-1 ``confidence`` and whether it was
    ``correct`` (for callers that kept only those, e.g. the report's top-k predictions file)."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.ndim != 1 or conf.shape != ok.shape or conf.size == 0:
        raise ValueError(f"need confidence and correct of one equal, non-zero length, got {conf.shape} and {ok.shape}")
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() / conf.size * abs(ok[mask].mean() - conf[mask].mean())
    return float(total)
