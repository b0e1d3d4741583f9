"""Data for transferkit: built-in offline data sets, the user's own files and arrays, transforms and loaders.

:func:`load_data` turns a :class:`~transferkit.config.DataConfig` into :class:`Splits`; everything downstream reads
only :class:`Dataset` / :class:`Splits`. Reading and splitting data never imports torch (so ``transferkit datasets``
is fast); :func:`make_loader` and the transforms, which need torch, are imported on first use.

The modules, each one kind of thing:

* ``base``: :class:`Dataset` and :class:`Splits`; ``preprocessing``: what a backbone expects of its inputs;
* ``image_folders``, ``tables``, ``arrays``: the user's own data (``labels``: their class labels as indices);
* ``builtin``: the offline data sets; ``shifted``: their shifted targets and the domain-adaptation pairs
  (``packages``: files inside installed packages, which both read);
* ``splits``: the seeded stratified train/val/test split; ``sampling``: the one seeded subsample;
* ``coerce``: whatever the estimator's ``fit`` accepts, as :class:`Splits`;
* ``transforms``, ``loaders``: torch batches.

Data sits below the backbones: nothing here imports :mod:`transferkit.backbones`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataError
from .arrays import from_arrays
from .base import Dataset, Modality, Splits
from .builtin import BUILTINS, canonical_name, list_datasets, load_builtin
from .image_folders import from_image_folder
from .preprocessing import Preprocessing
from .sampling import subsample, subsample_train
from .splits import split_dataset, stratified_split
from .tables import from_text_table, table_format

if TYPE_CHECKING:
    from ..config import DataConfig
    from .loaders import make_loader

__all__ = [
    "Dataset",
    "Modality",
    "Preprocessing",
    "Splits",
    "from_arrays",
    "from_image_folder",
    "from_text_table",
    "list_datasets",
    "load_builtin",
    "load_data",
    "make_loader",
    "resolve_data_arg",
    "split_dataset",
    "stratified_split",
    "subsample",
    "subsample_train",
]


def __getattr__(name: str) -> Any:
    # make_loader imports torch and torchvision: load it lazily, so that `import transferkit.data` stays cheap.
    if name == "make_loader":
        from .loaders import make_loader

        return make_loader
    raise AttributeError(f"module 'transferkit.data' has no attribute {name!r}")


def load_data(cfg: DataConfig) -> Splits:
    """Load the data a run configuration points at, as train/val/test :class:`Splits`.

    Exactly one of ``cfg.name`` (a built-in data set, see :func:`list_datasets`) and ``cfg.path`` must be set. A
    path to a folder is read as an image folder (:func:`from_image_folder`), a ``.csv``/``.tsv``/``.jsonl`` file as a
    text table (:func:`from_text_table`). Built-in data sets have fixed splits; for paths, ``val_fraction``,
    ``test_fraction`` and ``split_seed`` decide the splits a source does not bring itself. Then the training split
    alone is reduced by ``train_size`` (stratified, seeded) or ``per_class`` (exactly k per class, seeded); val and
    test never change, so results with different training budgets stay comparable.

    Raises:
        ConfigError: neither or both of ``name`` and ``path``, or both ``train_size`` and ``per_class``.
        DataError: unknown data set name (with the closest name), missing or unreadable data, too few examples.
    """
    if (cfg.name is None) == (cfg.path is None):
        which = "neither" if cfg.name is None else "both"
        raise ConfigError(
            f"Set exactly one of data.name (a built-in data set) and data.path (a folder or file), not {which}."
        )
    if cfg.train_size is not None and cfg.per_class is not None:
        raise ConfigError("Set at most one of data.train_size and data.per_class, not both.")
    if cfg.name is not None:
        key = canonical_name(cfg.name)
        if key not in BUILTINS:
            raise _unknown_name(cfg.name)
        splits = load_builtin(key)
    else:
        splits = _load_path(cfg)
    if cfg.train_size is not None or cfg.per_class is not None:
        splits = Splits(
            subsample_train(splits.train, train_size=cfg.train_size, per_class=cfg.per_class, seed=cfg.split_seed),
            splits.val,
            splits.test,
        )
    return splits


def resolve_data_arg(text: str | Path) -> DataConfig:
    """What a ``--data`` argument (or ``fit("...")``) names: an existing file or folder, else a built-in data set.

    The one place that decides between the two, for the CLI's ``fit``, ``evaluate`` and ``rank`` and for the Python
    API. A name that does not exist as a path is returned as ``DataConfig(name=...)``; :func:`load_data` then says
    that the file or folder does not exist when the name looks like a path (see :func:`looks_like_path`), or that the
    data set is unknown (with the closest name) when it does not.
    """
    from ..config import DataConfig

    text = str(text)
    if Path(text).expanduser().exists():
        return DataConfig(path=text)
    return DataConfig(name=text)


def looks_like_path(text: str) -> bool:
    """Whether ``text`` names a file or folder rather than a built-in data set: a path separator, ``~``, ``.``/``..``
    or a file suffix (``reviews.csv``); built-in names have none of these."""
    return (
        any(sep in text for sep in ("/", "\\", os.sep))
        or text.startswith("~")
        or text in (".", "..")
        or bool(Path(text).suffix)
    )


def _unknown_name(name: str) -> DataError:
    """The error for a ``data.name`` that is not built in: a missing path if it looks like one, else the closest
    built-in name."""
    path = Path(name).expanduser().absolute()
    if path.exists():
        return DataError(f"'{name}' is a file or folder, not a built-in data set; set data.path instead of data.name.")
    if looks_like_path(name):
        return DataError(f"Data path '{path}' does not exist (no such file or folder); check the path.")
    key = canonical_name(name)
    close = difflib.get_close_matches(key, list(BUILTINS), n=1, cutoff=0.4)
    hint = f"did you mean '{close[0]}'?" if close else "run `transferkit datasets` to list them."
    return DataError(f"Unknown data set '{name}' and no file or folder '{path}' exists; {hint}")


def _load_path(cfg: DataConfig) -> Splits:
    assert cfg.path is not None
    p = Path(cfg.path).expanduser()
    if p.is_dir():
        return from_image_folder(p, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    if table_format(p) is not None:
        return from_text_table(
            p, cfg.text_column, cfg.label_column, cfg.val_fraction, cfg.test_fraction, cfg.split_seed
        )
    if not p.exists():
        raise DataError(f"Data path '{p.absolute()}' does not exist; check data.path.")
    raise DataError(f"Cannot read '{p}': data.path must be an image folder or a .csv, .tsv or .jsonl file.")
