"""Class labels as the user gives them (ints, strings, pandas values) turned into class indices.

Shared by the text tables, in-memory arrays and the estimator's coercion, with one-sentence errors: missing labels
are named by row, regression-like targets are refused, and string labels are matched to given class names. Free
of torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError


def missing_labels(values: Any) -> np.ndarray:
    """A boolean mask of missing labels: NaN, None, pandas NA, or a string that is empty or only spaces."""
    import pandas as pd

    s = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
    miss = np.array(s.isna(), dtype=bool)
    if not pd.api.types.is_numeric_dtype(s):
        miss |= np.fromiter((isinstance(v, str) and not v.strip() for v in s.tolist()), dtype=bool, count=len(s))
    return miss


def list_rows(rows: np.ndarray, what: str = "row", start: int = 0) -> str:
    """``"rows 3, 7 and 12"`` / ``"rows 3, 7, 12, 20, 31 and 9 more"`` for error messages (``start`` is added)."""
    nums = [str(int(r) + start) for r in rows[:5]]
    if len(rows) == 1:
        return f"{what} {nums[0]}"
    if len(rows) > 5:
        return f"{what}s {', '.join(nums)} and {len(rows) - 5} more"
    return f"{what}s {', '.join(nums[:-1])} and {nums[-1]}"


def _refuse_missing(s: Any, what: str) -> None:
    """A DataError naming the rows whose label is missing (NaN, None or empty), if any."""
    miss = missing_labels(s)
    if miss.any():
        raise DataError(
            f"The {what} are missing (NaN, None or empty) at {list_rows(np.flatnonzero(miss))} (counting from 0); "
            "drop those rows or fill in the labels."
        )


def encode_labels(values: Any, what: str) -> tuple[np.ndarray, list[str], list[Any]]:
    """Map label values to indices into a sorted class list: (indices, class names, original values).

    Raises:
        DataError: a label is missing (NaN, None, empty), or the labels look like regression targets (see
            :func:`_check_not_regression`).
    """
    import pandas as pd

    s = pd.Series(values)
    _refuse_missing(s, what)
    _check_not_regression(s, what)
    if pd.api.types.is_float_dtype(s) and len(s) and np.all(np.mod(s.to_numpy(), 1) == 0):
        s = s.astype(np.int64)
    uniq = pd.unique(s)
    try:
        ordered = sorted(uniq.tolist())
    except TypeError:  # mixed types: sort by their text
        ordered = sorted(uniq.tolist(), key=str)
    names = [str(v) for v in ordered]
    if len(set(names)) != len(names):
        raise DataError(f"The {what} have values that look the same as text ({names}); use one spelling per class.")
    if len(s) >= _ALL_UNIQUE_MIN_ROWS and len(names) == len(s):
        warnings.warn(
            f"Every one of the {len(s)} {what} is different, so each class has a single example; check that they "
            "are class labels, not IDs or measurements.",
            UserWarning,
            stacklevel=3,
        )
    index = {v: i for i, v in enumerate(ordered)}
    codes = np.fromiter((index[v] for v in s.tolist()), dtype=np.int64, count=len(s))
    return codes, names, [v.item() if isinstance(v, np.generic) else v for v in ordered]


#: Labels all different from this many rows on get a warning (one example per class is rarely meant).
_ALL_UNIQUE_MIN_ROWS = 10


def _check_not_regression(s: Any, what: str) -> None:
    """Refuse numeric labels that have a fractional part and mostly distinct values: regression targets.

    The rule: some label is a non-integer number, and there are more distinct values than half the rows (so
    most "classes" would have a single example). Non-integer numbers that repeat (half-star ratings 0.5, 1.0, 1.5,
    ...) stay classes named by their text.
    """
    import pandas as pd

    if pd.api.types.is_bool_dtype(s):
        return
    if pd.api.types.is_float_dtype(s):
        vals = s.to_numpy(dtype=np.float64)
    elif s.dtype == object and len(s) and all(isinstance(v, float | np.floating) for v in s.tolist()):
        vals = np.asarray(s.tolist(), dtype=np.float64)
    else:
        return
    frac = np.isfinite(vals) & (np.mod(vals, 1) != 0)
    distinct = len(np.unique(vals))
    if frac.any() and 2 * distinct > len(vals):
        raise DataError(
            f"The {what} are non-integer numbers with {distinct} distinct values in {len(vals)} rows (e.g. "
            f"{vals[frac][0]:g}), which look like regression targets; transferkit trains classifiers, so give class "
            "labels (integers or names, e.g. bins of the values)."
        )


def labels_by_name(y: Any, classes: Sequence[str], name: str) -> np.ndarray:
    """Indices of ``y`` in ``classes``, matching each label by its text (``3``, ``3.0`` and ``"3"`` are class "3").

    What ``predict``/``evaluate`` use for labels given next to a fitted model, whose classes are names.

    Raises:
        DataError: a missing label (rows named), or labels that are not among ``classes`` (listed).
    """
    import pandas as pd

    arr = np.asarray(getattr(y, "to_numpy", lambda: y)(), dtype=object)
    if arr.ndim != 1:
        raise DataError(f"Labels of '{name}' must be 1-D (one label per row), not of shape {arr.shape}.")
    _refuse_missing(pd.Series(arr), f"labels of '{name}'")
    index = {c: i for i, c in enumerate(classes)}
    text = [_label_text(v, index) for v in arr]
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise DataError(
            f"Labels {', '.join(repr(u) for u in unknown[:5])} of '{name}' are not among the model's classes "
            f"({', '.join(list(classes)[:10])}); check the labels."
        )
    return np.array([index[t] for t in text], dtype=np.int64)


def _label_text(v: Any, index: dict[str, int]) -> str:
    """The class name a label value means: its text, or for an integral float not found so (``3.0``) ``"3"``."""
    text = str(v)
    if text not in index and isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return text
