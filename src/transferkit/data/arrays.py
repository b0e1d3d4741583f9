"""In-memory arrays (numpy arrays, pandas DataFrames/Series, lists of texts or images) as a :class:`Dataset`.

:func:`from_arrays` checks shape, dtype, range and labels and stores images as uint8 ``(N, H, W[, 3])``
(:func:`as_image_array`), tables as float32 and texts as a list of str. Free of torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError
from .base import Dataset, Modality
from .labels import encode_labels, labels_by_name

#: What an image array may look like, for error messages.
IMAGE_ARRAY_FORMS = (
    "uint8 in 0..255 or float in [0, 1], of shape (N, H, W), (N, H, W, 1 or 3) or channels-first (N, 1 or 3, H, W)"
)


def from_arrays(
    X: Any,
    y: Any = None,
    classes: Sequence[str] | None = None,
    name: str = "arrays",
    modality: Modality | None = None,
) -> Dataset:
    """Wrap in-memory arrays as a :class:`Dataset` (one split; cut it with :func:`~transferkit.data.split_dataset`).

    Args:
        X: ``"tabular"``: a 2-D numeric numpy array or pandas DataFrame, stored as float32. ``"image"``: an array
            (or a list of equally sized arrays) of shape ``(N, H, W)`` (grey), ``(N, H, W, 1 or 3)`` or channels-first
            ``(N, 1 or 3, H, W)``, uint8 in 0..255 (other integer types in that range too) or float in [0, 1]; stored
            as uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` (see :func:`as_image_array`). ``"text"``: a sequence of str.
        y: labels per row (ints, strings, any sortable values; numpy array, list or pandas Series), or ``None`` for
            unlabelled data.
        classes: the class names in index order. With it, integer labels are indices into it and string labels
            must be among it; without it, classes are the sorted distinct values of ``y`` (their text is the name,
            and the original values are kept in ``meta["label_values"]``).
        name: used in reports.
        modality: ``"tabular"``, ``"image"`` or ``"text"``; ``None`` (default) infers it from ``X`` (see
            :func:`infer_modality`: strings are text, 3-D and 4-D arrays images, the rest tabular).

    Raises:
        DataError: wrong shape, dtype or value range, a length mismatch between X and y, NaN/inf in tabular
            features, missing labels (NaN, None, empty; the rows are named), non-integer labels that look like
            regression targets, labels outside ``classes``, or fewer than 2 classes.
    """
    modality = modality or infer_modality(X)
    inputs = check_inputs(X, modality, name)
    n = len(inputs)
    meta: dict[str, Any] = {"source": "arrays"}
    if y is None:
        if classes is None:
            raise DataError(f"Data set '{name}' has no labels and no class names; pass y or classes.")
        return Dataset(modality, inputs, None, [str(c) for c in classes], name, meta)
    y_arr = np.asarray(getattr(y, "to_numpy", lambda: y)())
    if y_arr.ndim != 1:
        raise DataError(f"Labels of '{name}' must be 1-D (one label per row), not of shape {y_arr.shape}.")
    if len(y_arr) != n:
        raise DataError(f"Data set '{name}' has {n} rows of X but {len(y_arr)} labels; give one label per row.")
    if classes is not None:
        cls = [str(c) for c in classes]
        if y_arr.dtype.kind in "iu":
            bad = y_arr[(y_arr < 0) | (y_arr >= len(cls))]
            if len(bad):
                raise DataError(
                    f"Label {bad[0]} of '{name}' is outside 0..{len(cls) - 1} for the {len(cls)} given classes; fix "
                    "the labels or the classes."
                )
            codes = y_arr.astype(np.int64)
        else:
            codes = labels_by_name(y_arr, cls, name)
    else:
        codes, cls, values = encode_labels(y_arr, f"labels of '{name}'")
        meta["label_values"] = values
    if len(cls) < 2:
        raise DataError(f"Data set '{name}' has only {len(cls)} class; a classifier needs at least 2.")
    return Dataset(modality, inputs, codes, cls, name, meta)


def infer_modality(X: Any) -> Modality:
    """The modality of in-memory inputs: a sequence of strings is text, a 3-D or 4-D array (or a list of 2-D/3-D
    arrays) images, anything else tabular (checked as such later)."""
    if hasattr(X, "select_dtypes") or hasattr(X, "to_numpy") and not hasattr(X, "ndim"):
        return "tabular"
    if isinstance(X, list | tuple) and X and all(isinstance(v, str) for v in X):
        return "text"
    if isinstance(X, np.ndarray) and X.dtype.kind == "U":
        return "text"
    if isinstance(X, list | tuple) and X and all(np.ndim(v) in (2, 3) for v in X[:1]) and _is_array_like(X[0]):
        return "image"
    ndim = getattr(X, "ndim", None)
    if ndim is None:
        try:
            ndim = np.ndim(X)
        except ValueError:  # ragged nested lists
            return "tabular"
    return "image" if ndim in (3, 4) else "tabular"


def _is_array_like(v: Any) -> bool:
    return hasattr(v, "__array_interface__") or hasattr(v, "__array__")


def as_image_array(X: Any, name: str = "arrays") -> np.ndarray:
    """In-memory images as the uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` array every consumer reads.

    Accepted (see :data:`IMAGE_ARRAY_FORMS`): channels last or first, with 1 or 3 channels (a 4-D array whose axis 1
    and last axis could both be channels, like ``(N, 3, H, 3)``, is refused as ambiguous); uint8, other integer
    types within 0..255, or floats in [0, 1] (scaled by 255 and rounded, the ``ToTensor`` convention). Floats
    beyond [0, 1] are refused rather than guessed at: a dark photo stored as floats in 0..255 can lie entirely in
    [0, 1], so one rule, stated in the error, is safer than a guess that silently makes images 255 times brighter.
    A list of arrays (or PIL images) must hold images of one size.

    Raises:
        DataError: any other shape, dtype or range, NaN/inf, or images of different sizes.
    """
    arr = _stack_images(X, name)
    shape = tuple(arr.shape)
    if arr.ndim == 4:
        first, last = shape[1], shape[-1]
        if first in (1, 3) and last in (1, 3):
            raise DataError(
                f"Image array '{name}' has shape {shape}, which could be channels-first or channels-last; give "
                "(N, H, W, C) with the channels last."
            )
        if first in (1, 3):
            arr = arr.transpose(0, 2, 3, 1)
        elif last not in (1, 3):
            raise DataError(f"Image array '{name}' has shape {shape}; image arrays must be {IMAGE_ARRAY_FORMS}.")
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    elif arr.ndim != 3:
        raise DataError(f"Image array '{name}' has shape {shape}; image arrays must be {IMAGE_ARRAY_FORMS}.")
    return np.ascontiguousarray(_as_uint8(arr, name))


def _stack_images(X: Any, name: str) -> np.ndarray:
    """``X`` as one numpy array; a list of images of different sizes is refused with the sizes named."""
    if isinstance(X, list | tuple) and X and _is_array_like(X[0]):
        items = [np.asarray(v) for v in X]
        shapes = sorted({v.shape for v in items}, key=str)
        if len(shapes) > 1:
            raise DataError(
                f"The images of '{name}' have different sizes ({', '.join(str(s) for s in shapes[:3])}); resize them "
                "to one size, or save them as files and give the folder."
            )
        return np.stack(items) if items else np.asarray(X)
    try:
        return np.asarray(X)
    except ValueError:
        raise DataError(
            f"The images of '{name}' have different sizes; resize them to one size, or save them as files and give "
            "the folder."
        ) from None


def _as_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    kind = arr.dtype.kind
    if kind not in "iuf" or arr.size == 0:
        if arr.size == 0 and kind in "iuf":
            return arr.astype(np.uint8)
        raise DataError(f"Image array '{name}' has dtype {arr.dtype}; image arrays must be {IMAGE_ARRAY_FORMS}.")
    if kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"Image array '{name}' contains NaN or infinite values; image arrays must be "
                        f"{IMAGE_ARRAY_FORMS}.")
    lo, hi = float(arr.min()), float(arr.max())
    if kind == "f" and lo >= 0.0 and hi <= 1.0:
        return np.rint(arr * 255.0).astype(np.uint8)
    if kind in "iu" and lo >= 0 and hi <= 255:
        return arr.astype(np.uint8)
    hint = " (for floats in 0..255 use X.astype(np.uint8))" if kind == "f" and lo >= 0 and hi <= 255 else ""
    raise DataError(
        f"Image array '{name}' holds {arr.dtype} values in [{lo:g}, {hi:g}]; image arrays must be "
        f"{IMAGE_ARRAY_FORMS}{hint}."
    )


def check_inputs(X: Any, modality: Modality, name: str) -> Any:
    if modality == "text":
        if isinstance(X, str) or not isinstance(X, Sequence | np.ndarray) and not hasattr(X, "tolist"):
            raise DataError(f"Text inputs of '{name}' must be a list of strings.")
        items = X.tolist() if hasattr(X, "tolist") else list(X)
        if not all(isinstance(s, str) for s in items):
            raise DataError(f"Text inputs of '{name}' must all be strings; convert them with str() first.")
        return items
    if modality == "image":
        return as_image_array(X, name)
    if modality != "tabular":
        raise DataError(f"Unknown modality '{modality}'; use 'tabular', 'image' or 'text'.")
    if hasattr(X, "select_dtypes"):  # pandas DataFrame
        non_numeric = [str(c) for c in X.columns if not _is_numeric_column(X[c])]
        if non_numeric:
            raise DataError(
                f"Columns {', '.join(non_numeric)} of '{name}' are not numeric; encode them (e.g. pandas.get_dummies) "
                "or drop them."
            )
        X = X.to_numpy()
    elif hasattr(X, "to_numpy"):  # a pandas Series: one feature
        X = X.to_numpy().reshape(-1, 1)
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"Features of '{name}' are not numeric; give a 2-D array of numbers.") from None
    if arr.ndim != 2:
        raise DataError(
            f"Features of '{name}' have shape {arr.shape}; tabular data must be 2-D (rows, features), and image "
            f"arrays must be {IMAGE_ARRAY_FORMS}."
        )
    if not np.isfinite(arr).all():
        bad_rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise DataError(
            f"Features of '{name}' contain NaN or infinite values in {len(bad_rows)} row(s) (first: row "
            f"{bad_rows[0]}); impute or drop them first."
        )
    return np.ascontiguousarray(arr)


def _is_numeric_column(col: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col))
