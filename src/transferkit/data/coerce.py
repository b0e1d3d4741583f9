"""Turn what a user hands the Python API (``fit``, ``predict``, ``evaluate``) into :class:`Dataset` / :class:`Splits`.

One place decides what an input is, so every entry point accepts and refuses the same things with the same
sentences: a :class:`Dataset` or :class:`Splits` as is; a data set name or a path to a folder or table through
:func:`~transferkit.data.resolve_data_arg` and :func:`~transferkit.data.load_data`; a list of image files or
folders; a list of texts; numpy/pandas arrays through :func:`~transferkit.data.arrays.from_arrays`' checks (image
arrays channels-last or channels-first, uint8 or floats in [0, 1]; tabular 2-D). Labels given next to a fitted
model are matched to its classes by name; fresh labels become sorted classes, and missing or regression-like
labels are refused (see :func:`~transferkit.data.labels.encode_labels`). Free of torch, like the rest of reading.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .arrays import check_inputs, infer_modality
from .base import Dataset, Modality, Splits
from .image_folders import IMAGE_SUFFIXES, dir_key, files_under, skipped_message
from .labels import encode_labels, labels_by_name


def as_splits(data: Any, y: Any = None) -> Splits:
    """Coerce what a user passes to ``fit`` into :class:`Splits`.

    A str or path (without ``y``) is a data set name or a file/folder (see
    :func:`~transferkit.data.resolve_data_arg`); anything else is one training split (see :func:`as_dataset`).
    """
    if isinstance(data, Splits):
        return data
    if isinstance(data, str | Path) and y is None:
        from . import load_data, resolve_data_arg

        return load_data(resolve_data_arg(data))
    return Splits(train=as_dataset(data, y))


def as_dataset(
    data: Any, y: Any = None, *, modality: str | None = None, classes: list[str] | None = None
) -> Dataset:
    """Coerce a Dataset, a file/folder path, a list of paths or texts, or arrays into a :class:`Dataset`.

    Args:
        data: the inputs.
        y: labels per row, or ``None``.
        modality: what the model takes (``"image"``, ``"text"``, ``"tabular"``); ``None`` infers it from ``data``.
        classes: a fitted model's class names: ``y`` is matched to them by name. Without it, the classes are the
            sorted distinct labels.

    Raises:
        DataError: inputs that fit no modality or not the model's (the sentence says what is accepted), missing
            files, labels that are missing, regression-like, not among ``classes``, or not one per row.
    """
    if isinstance(data, Dataset):
        return data
    if isinstance(data, Splits):
        raise DataError("Pass one split here (e.g. splits.test), not the whole Splits object.")
    if isinstance(data, str | Path):
        data = [data]
    if isinstance(data, list | tuple) and data and all(isinstance(v, str | Path) for v in data):
        inputs, mod, name = _paths_or_texts(data, modality)
    else:
        mod = modality or infer_modality(data)
        name = "arrays"
        inputs = check_inputs(data, mod, name)  # type: ignore[arg-type]
    labels, found, meta = _labels(y, classes, name, len(inputs))
    return Dataset(mod, inputs, labels, found or list(classes or ["?"]), name, meta)  # type: ignore[arg-type]


def _paths_or_texts(items: list[Any] | tuple[Any, ...], modality: str | None) -> tuple[list[str], Modality, str]:
    """A list of strings: texts for a text model (or when they are not all existing paths), else image files."""
    if modality == "text" or (modality is None and not all(Path(str(v)).expanduser().exists() for v in items)):
        return [str(v) for v in items], "text", "texts"
    if modality == "tabular":
        raise DataError("This model takes tabular features, not files; give a 2-D array (rows, features).")
    return expand_image_paths(items), "image", "files"


def _labels(
    y: Any, classes: list[str] | None, name: str, n: int
) -> tuple[np.ndarray | None, list[str] | None, dict[str, Any]]:
    """(label indices, class names when found from ``y``, meta) for ``n`` inputs."""
    if y is None:
        return None, None, {"source": "arrays"}
    if classes is not None:
        labels = labels_by_name(y, classes, name)
        found = None
        meta: dict[str, Any] = {"source": "arrays"}
    else:
        y_arr = np.asarray(getattr(y, "to_numpy", lambda: y)())
        if y_arr.ndim != 1:
            raise DataError(f"Labels of '{name}' must be 1-D (one label per row), not of shape {y_arr.shape}.")
        labels, found, values = encode_labels(y_arr, f"labels of '{name}'")
        meta = {"source": "arrays", "label_values": values}
    if len(labels) != n:
        raise DataError(f"'{name}' has {n} inputs but {len(labels)} labels; give one label per input.")
    return labels, found, meta


def expand_image_paths(items: Any) -> list[str]:
    """Image files named by ``items``: files as given, folders searched recursively for image suffixes.

    Folders are read like an image folder's class folders (links followed, none twice, hidden names skipped; a
    skipped loop is named in one warning); the files come in sorted path order.

    Raises:
        DataError: a path that does not exist (named with its absolute form), or no image file at all.
    """
    out: list[str] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            skipped: list[tuple[str, str]] = []
            found = files_under(p, {dir_key(p)}, skipped)
            out.extend(str(f) for f in sorted(map(Path, found)) if f.suffix.lower() in IMAGE_SUFFIXES)
            if skipped:
                warnings.warn(skipped_message(skipped, p), UserWarning, stacklevel=3)
        elif p.exists():
            out.append(str(p))
        else:
            raise DataError(f"'{p.absolute()}' does not exist; give existing image files or folders.")
    if not out:
        raise DataError("No image files were found in the given paths; check the paths and file types.")
    return out


def check_label_set(train: Dataset, val: Dataset | None) -> None:
    """Refuse training data with fewer than two classes, or validation data with another label set."""
    counts = train.class_counts()
    if (counts > 0).sum() < 2:
        raise DataError("The training data has fewer than two classes; a classifier needs at least two.")
    if val is not None and val.is_labelled and list(val.classes) != list(train.classes):
        raise DataError("The validation data has a different label set from the training data; use the same classes.")


def remap_labels(ds: Dataset, classes: list[str]) -> Dataset:
    """``ds`` with its labels renumbered to ``classes``' order (matched by name); refuses a label not in it."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(ds.classes) - set(index))
    if unknown:
        raise DataError(
            f"The data has labels the model was not trained on ({', '.join(unknown[:5])}); "
            "evaluate on data with the model's label set."
        )
    mapping = np.array([index[c] for c in ds.classes], dtype=np.int64)
    return Dataset(ds.modality, ds.inputs, mapping[ds.labels], list(classes), ds.name, dict(ds.meta))


def concat(a: Dataset, b: Dataset) -> Dataset:
    """Rows of ``a`` then ``b`` (same modality and classes)."""
    arrays = isinstance(a.inputs, np.ndarray) and isinstance(b.inputs, np.ndarray)
    if arrays and a.inputs.shape[1:] == b.inputs.shape[1:]:
        inputs: Any = np.concatenate([a.inputs, b.inputs])
    elif arrays:
        raise DataError("Source and labelled target images differ in shape; give images of one size and colour.")
    else:
        inputs = list(a.inputs) + list(b.inputs)
    labels = np.concatenate([a.labels, b.labels]) if a.labels is not None and b.labels is not None else None
    return Dataset(a.modality, inputs, labels, list(a.classes), a.name, dict(a.meta))
