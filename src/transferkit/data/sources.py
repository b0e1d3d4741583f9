"""Turn the user's own data into :class:`~transferkit.data.base.Dataset` / :class:`~transferkit.data.base.Splits`.

Three kinds of source, all free of torch so that reading and checking data stays fast:

* image folders in the Keras ``flow_from_directory`` layout (one sub-folder per class), either already split into
  ``train/``, ``val/`` and ``test/`` or as a single root that we split ourselves;
* text tables (CSV, TSV, JSONL) with a text column and a label column;
* in-memory arrays (numpy arrays, pandas DataFrames/Series) via :func:`from_arrays`.

Every split we make ourselves goes through :func:`stratified_split`, which is seeded and exact, so the same data and
the same seed always give the same splits, on any machine and any scikit-learn version.

Problems the user can fix raise :class:`~transferkit.errors.DataError` with one sentence saying what is wrong and
what to do. Problems that only lose a few examples (a corrupt image, an empty text row) are skipped with a single
``UserWarning`` that lists them, because one bad file among thousands should not stop a run, but must not go unseen.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .base import Dataset, Modality, Splits

#: Folder names recognised as the three splits of a pre-split image folder (first entry is the canonical one).
SPLIT_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}

#: Suffixes of common image files, for callers that pick images out of a folder by name (the folder reader itself
#: checks every file's content instead, so an image with an unusual suffix still counts).
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

#: Table suffixes understood by :func:`from_text_table` (after stripping a compression suffix).
TEXT_SUFFIXES: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".zip", ".xz", ".zst"}

_MAX_LISTED = 50  # files named in one "skipped" warning before it says "and N more"


# ---------------------------------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------------------------------


def _largest_remainder(total: int, weights: Sequence[float], rng: np.random.Generator | None = None) -> np.ndarray:
    """Integers that sum to ``total`` and are as close as possible to ``total * weights`` (Hamilton's method).

    Ties among equal remainders are broken by ``rng`` when given (so no part is favoured systematically), else by
    position.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full_like(w, 1.0 / len(w))
    exact = total * w
    counts = np.floor(exact + 1e-9).astype(np.int64)
    short = int(total - counts.sum())
    if short > 0:
        rem = exact - counts
        # round remainders so that floating noise does not decide between really equal parts
        key = np.round(rem, 9)
        tie = rng.random(len(w)) if rng is not None else -np.arange(len(w), dtype=np.float64)
        order = np.lexsort((-tie, -key))
        counts[order[:short]] += 1
    return counts


def stratified_split(labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``len(fractions)`` parts with the class mix of ``labels`` in every part.

    The part sizes are exact: they sum to ``len(labels)`` and each is the largest-remainder rounding of
    ``len(labels) * fraction`` (``fractions`` are normalised to sum to 1). Each class is then shared out among the
    parts in proportion (largest-remainder again, done so the per-class counts add up to the part sizes), and which
    examples of a class go where is a seeded random permutation. Every part is returned in a seeded random order, so
    sources that are sorted by label (MNIST files often are) come out shuffled.

    A class too small to appear in every part (say 2 examples and 3 parts) simply lands in fewer parts; the function
    never fails on small classes, which is the same as falling back to a plain seeded split for those classes.

    Implemented with numpy only (instead of scikit-learn's ``train_test_split``) so that the fixed splits of the
    built-in data sets cannot change with a scikit-learn release.

    Args:
        labels: class index (or any hashable label) per example.
        fractions: share of the examples in each part, e.g. ``(0.7, 0.1, 0.2)`` for train/val/test.
        seed: the seed of the split; equal inputs and seed give equal parts.

    Returns:
        One int64 index array per part.
    """
    y = np.asarray(labels)
    n = len(y)
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) == 0 or np.any(fr < 0) or fr.sum() <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, not {list(fractions)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    sizes = _largest_remainder(n, fr)
    classes, y_idx = np.unique(y, return_inverse=True)
    class_counts = np.bincount(y_idx, minlength=len(classes))
    # Allocate each class among the parts; the column sums must hit `sizes` exactly. Work part by part: the per-class
    # quota of part k is what remains of the class times (part size / what remains overall), rounded so it sums to
    # the part size (sklearn's _approximate_mode does the same for one cut).
    alloc = np.zeros((len(classes), len(fr)), dtype=np.int64)
    remaining = class_counts.copy()
    for k in range(len(fr) - 1):
        need = int(sizes[k])
        left = int(remaining.sum())
        if need == 0 or left == 0:
            continue
        take = _largest_remainder(need, remaining / left, rng) if need < left else remaining.copy()
        # a class cannot give more than it has left: move the overflow to classes that still have room
        over = np.maximum(take - remaining, 0)
        take -= over
        spare = int(over.sum())
        while spare > 0:
            room = remaining - take
            cand = np.flatnonzero(room > 0)
            pick = cand[np.argsort(-room[cand], kind="stable")][: min(spare, len(cand))]
            take[pick] += 1
            spare -= len(pick)
        alloc[:, k] = take
        remaining -= take
    alloc[:, -1] = remaining
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y_idx == c))
        bounds = np.concatenate([[0], np.cumsum(alloc[c])])
        for k in range(len(fr)):
            parts[k].append(members[bounds[k] : bounds[k + 1]])
    out = []
    for p in parts:
        idx = np.concatenate(p) if p else np.zeros(0, dtype=np.int64)
        out.append(rng.permutation(idx).astype(np.int64))
    return out


def split_dataset(ds: Dataset, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Split one labelled :class:`Dataset` into train/val/test with :func:`stratified_split`.

    A fraction of 0 leaves that split out (``None``).
    """
    _check_fractions(val_fraction, test_fraction)
    if ds.labels is None:
        raise DataError(f"Data set '{ds.name}' has no labels, so it cannot be split into train/val/test; add labels.")
    parts = stratified_split(ds.labels, [1.0 - val_fraction - test_fraction, val_fraction, test_fraction], seed)
    names = ("train", "val", "test")
    sub = [ds.subset(p, name=ds.name) if len(p) else None for p in parts]
    for s, nm in zip(sub, names):
        if s is not None:
            s.meta["split"] = nm
    if sub[0] is None:
        raise DataError(f"Data set '{ds.name}' is too small to split; add examples or lower val/test fractions.")
    return Splits(sub[0], sub[1], sub[2])


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0) or val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must each be in [0, 1) and sum to "
            "less than 1; lower them."
        )


# ---------------------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------------------


def _check_image(path: str) -> str | None:
    """Why ``path`` is not a usable image (``"empty file"``, ``"not an image"``, ``"truncated"``...), or ``None``.

    Opening and ``verify()``-ing is cheap: PIL reads the header and walks the chunks without decoding pixels. That
    walk proves a PNG whole (every chunk's CRC) but not a JPEG, whose ``verify()`` reads only the header; a JPEG cut
    short (an interrupted download) would then fail only when decoded during training. So a JPEG that does not end
    with its end-of-image marker is decoded here in full: the common whole file costs one read of its last bytes.
    """
    from PIL import Image, UnidentifiedImageError

    if os.path.islink(path) and not os.path.exists(path):
        return "broken link"
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        if fmt == "JPEG" and not _ends_with_jpeg_eoi(path):
            with Image.open(path) as im:
                im.load()
    except UnidentifiedImageError:
        return "not an image"
    except PermissionError:
        return "not readable: permission denied"
    except Exception as e:  # noqa: BLE001 - any failure to read means the file cannot be used
        return "truncated" if "truncated" in str(e) else f"corrupt: {type(e).__name__}"
    return None


def _ends_with_jpeg_eoi(path: str, tail: int = 4096) -> bool:
    """Whether the JPEG end-of-image marker (FF D9) is among the last ``tail`` bytes (trailing padding allowed)."""
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - tail))
        return b"\xff\xd9" in fh.read()


def _list_class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _dir_key(path: str | os.PathLike[str]) -> tuple[int, int]:
    """The identity of a folder (device, inode) after following links: equal for every way to reach it."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _files_under(folder: Path, seen: set[tuple[int, int]], skipped: list[tuple[str, str]]) -> list[str]:
    """Every non-hidden file under ``folder`` (recursively, following links as Keras does), in sorted order.

    A folder is read at most once: ``seen`` holds the identity of every folder read so far (shared by all class
    folders of a data set), so a link back to a parent (a loop) or to a folder read elsewhere is not followed again
    but added to ``skipped`` with the reason, as is a sub-folder that cannot be opened.
    """
    out: list[str] = []
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as e:
            skipped.append((current, f"folder not readable: {e.strerror or type(e).__name__}"))
            continue
        subdirs: list[str] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if not is_dir:
                out.append(entry.path)
                continue
            try:
                key = _dir_key(entry.path)
            except OSError as e:
                skipped.append((entry.path, f"folder not readable: {e.strerror or type(e).__name__}"))
                continue
            if key in seen:
                skipped.append((entry.path, "link to a folder already read"))
                continue
            seen.add(key)
            subdirs.append(entry.path)
        # depth first in sorted order: the same order as os.walk with sorted names
        stack.extend(reversed(subdirs))
    return out


def _scan_class_folders(
    folder: Path, what: str, seen: set[tuple[int, int]] | None = None
) -> tuple[list[str], list[str], list[str], list[tuple[str, str]]]:
    """Read one root of class folders: (paths, label names, class names, skipped (path, reason) pairs).

    ``seen`` holds the identities of folders already read (shared across the splits of one data set, see
    :func:`_files_under`); the root and its class folders are added to it first, so a link to any of them is
    skipped rather than read a second time.
    """
    if not folder.is_dir():
        raise DataError(f"Image folder '{folder}' does not exist; check the path.")
    class_dirs = _list_class_dirs(folder)
    if not class_dirs:
        raise DataError(
            f"The {what} folder '{folder}' has no class sub-folders; put the images of each class in their own "
            "sub-folder (e.g. cats/, dogs/)."
        )
    seen = set() if seen is None else seen
    seen.update(_dir_key(d) for d in [folder, *class_dirs])
    candidates: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for d in class_dirs:
        candidates.extend((f, d.name) for f in _files_under(d, seen, skipped))
    files = [f for f, _ in candidates]
    workers = max(1, min(8, (os.cpu_count() or 1) * 2))
    if len(files) > 64 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            problems = list(ex.map(_check_image, files, chunksize=32))
    else:
        problems = [_check_image(f) for f in files]
    paths: list[str] = []
    names: list[str] = []
    for (f, cls), why in zip(candidates, problems):
        if why is None:
            paths.append(f)
            names.append(cls)
        else:
            skipped.append((f, why))
    present = set(names)
    for d in class_dirs:
        if d.name not in present:
            lost = [f"{_rel(p, folder)} ({why})" for p, why in skipped if _is_under(p, d)][:3]
            detail = f" (skipped: {', '.join(lost)})" if lost else ""
            raise DataError(f"Class folder '{d}' has no valid image{detail}; add images to it or remove the folder.")
    return paths, names, [d.name for d in class_dirs], skipped


def _is_under(path: str, folder: Path) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(folder)


def skipped_message(skipped: list[tuple[str, str]], root: str | os.PathLike[str], note: str = "") -> str:
    """The one-sentence warning that lists files (and folders) left out: ``Skipped N unreadable file(s) ...``.

    Used by the folder scan and by the loader (an image that fails only when decoded), so both read alike.
    """
    root = Path(root)
    listed = ", ".join(f"{_rel(p, root)} ({why})" for p, why in skipped[:_MAX_LISTED])
    more = f", and {len(skipped) - _MAX_LISTED} more" if len(skipped) > _MAX_LISTED else ""
    return f"Skipped {len(skipped)} unreadable file(s) under '{root}': {listed}{more}{note}."


def _warn_skipped(skipped: list[tuple[str, str]], root: Path) -> None:
    if skipped:
        warnings.warn(skipped_message(skipped, root), UserWarning, stacklevel=3)


def _rel(p: str, root: Path) -> str:
    try:
        return os.path.relpath(p, root)
    except ValueError:
        return p


def _find_split_dirs(root: Path) -> dict[str, Path] | None:
    """``{"train": ..., "val": ..., "test": ...}`` (present ones) if ``root`` is a pre-split folder, else ``None``."""
    subdirs = {p.name.lower(): p for p in _list_class_dirs(root)}
    found: dict[str, Path] = {}
    for split, aliases in SPLIT_DIRS.items():
        hits = [subdirs[a] for a in aliases if a in subdirs]
        if len(hits) > 1:
            raise DataError(
                f"Image folder '{root}' has both {hits[0].name}/ and {hits[1].name}/; keep only one {split} folder."
            )
        if hits:
            found[split] = hits[0]
    if "train" not in found:
        if found:
            names = ", ".join(f"{p.name}/" for p in found.values())
            raise DataError(f"Image folder '{root}' has {names} but no train/ folder; add root/train/<class>/ images.")
        return None
    others = sorted(set(subdirs) - {p.name.lower() for p in found.values()})
    if others:
        raise DataError(
            f"Image folder '{root}' mixes split folders (train/...) with other folders ({', '.join(others)}); "
            "move every class folder inside train/, val/ or test/."
        )
    return found


def from_image_folder(
    root: str | os.PathLike[str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Splits:
    """Read an image folder in the Keras ``flow_from_directory`` layout.

    Two layouts are understood:

    * ``root/train/<class>/*``, with optional ``root/val/<class>/*`` (also ``valid/``, ``validation/``) and
      ``root/test/<class>/*``. A missing val or test split is cut from train with a seeded stratified split
      (``val_fraction`` / ``test_fraction`` of the train folder). The val/test folders must have exactly the
      classes of train.
    * ``root/<class>/*``: split into train/val/test by ``val_fraction`` / ``test_fraction`` (seeded, stratified).

    Class names are the sub-folder names in sorted order; files are found recursively inside each class folder,
    following links, but no folder is read twice (a link loop, or a link to a folder read elsewhere, is skipped);
    hidden files and folders (names starting with ``.``) are ignored. Inputs are file paths, decoded lazily by the
    loader, but every file is checked up front (PIL open + ``verify``, no pixel decoding; a JPEG without its end
    marker is decoded in full): corrupt, truncated, empty (0-byte) and non-image files, broken links and folders
    that cannot be read or were already read are **skipped** and listed in one ``UserWarning`` (also logged), so a
    stray ``notes.txt`` or one broken download does not stop a run but is never silently dropped.

    Raises:
        DataError: missing folder, a class folder without any valid image, fewer than 2 classes, no images at all,
            or val/test folders whose classes differ from train's.
    """
    _check_fractions(val_fraction, test_fraction)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder '{root}' does not exist; check the path.")
    name = root.name or str(root)
    split_dirs = _find_split_dirs(root)
    skipped: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = {_dir_key(root)}
    if split_dirs is None:
        paths, names, classes, skipped = _scan_class_folders(root, "image", seen)
        _check_classes(classes, root)
        ds = _image_dataset(paths, names, classes, name)
        _warn_skipped(skipped, root)
        return split_dataset(ds, val_fraction, test_fraction, seed)

    scanned: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for folder in split_dirs.values():  # a link from one split into another is not followed either
        seen.update(_dir_key(d) for d in [folder, *_list_class_dirs(folder)])
    for split, folder in split_dirs.items():
        p, n, c, s = _scan_class_folders(folder, split, seen)
        scanned[split] = (p, n, c)
        skipped.extend(s)
    classes = scanned["train"][2]
    _check_classes(classes, split_dirs["train"])
    for split in ("val", "test"):
        if split in scanned and scanned[split][2] != classes:
            other = scanned[split][2]
            missing = sorted(set(classes) - set(other))
            extra = sorted(set(other) - set(classes))
            detail = "; ".join(
                x
                for x in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"extra {', '.join(extra)}" if extra else "",
                )
                if x
            )
            raise DataError(
                f"The {split} folder '{split_dirs[split]}' has different classes from train ({detail}); give both the "
                "same class sub-folders."
            )
    _warn_skipped(skipped, root)
    train = _image_dataset(*scanned["train"][:2], classes, name)
    val = _image_dataset(*scanned["val"][:2], classes, name) if "val" in scanned else None
    test = _image_dataset(*scanned["test"][:2], classes, name) if "test" in scanned else None
    cut_val = val_fraction if val is None else 0.0
    cut_test = test_fraction if test is None else 0.0
    if cut_val > 0 or cut_test > 0:
        cut = split_dataset(train, cut_val, cut_test, seed)
        train = cut.train
        val = val if val is not None else cut.val
        test = test if test is not None else cut.test
    for ds, nm in ((train, "train"), (val, "val"), (test, "test")):
        if ds is not None:
            ds.meta["split"] = nm
    return Splits(train, val, test)


def _check_classes(classes: list[str], where: Path) -> None:
    if len(classes) < 2:
        raise DataError(
            f"Image folder '{where}' has only {len(classes)} class ({', '.join(classes)}); a classifier needs at "
            "least 2 class sub-folders."
        )


def _image_dataset(paths: list[str], names: list[str], classes: list[str], name: str) -> Dataset:
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[n] for n in names], dtype=np.int64)
    return Dataset("image", list(paths), labels, list(classes), name, {"source": "image_folder"})


# ---------------------------------------------------------------------------------------------------------------
# Text tables
# ---------------------------------------------------------------------------------------------------------------


def table_format(path: str | os.PathLike[str]) -> str | None:
    """``"csv"``, ``"tsv"`` or ``"jsonl"`` from the file name (a ``.gz``/``.bz2``/... suffix is looked through)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    return TEXT_SUFFIXES.get(suffixes[-1]) if suffixes else None


def read_table(path: str | os.PathLike[str]) -> Any:
    """Read a CSV/TSV/JSONL file into a pandas DataFrame, with a :class:`DataError` for unreadable files."""
    import pandas as pd

    p = Path(path).expanduser()
    fmt = table_format(p)
    if fmt is None:
        raise DataError(
            f"Cannot tell the format of '{p}'; use a .csv, .tsv or .jsonl file (optionally compressed, e.g. .csv.gz)."
        )
    if p.is_dir():
        raise DataError(f"'{p}' is a folder, not a {fmt.upper()} file; give the file itself.")
    if not p.is_file():
        raise DataError(f"Data file '{p.absolute()}' does not exist; check the path.")
    try:
        if fmt == "jsonl":
            df = pd.read_json(p, lines=True, dtype=False)
        else:
            df = pd.read_csv(p, sep="\t" if fmt == "tsv" else ",")
    except UnicodeDecodeError as e:
        raise DataError(
            f"'{p}' is not UTF-8 text (byte {e.object[e.start]:#04x} at position {e.start}); save it as UTF-8."
        ) from None
    except PermissionError:
        raise DataError(f"Cannot read '{p}': permission denied; make the file readable.") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"'{p}' is empty; {_TABLE_FORM[fmt]}.") from None
    except (ValueError, TypeError, pd.errors.ParserError, OSError) as e:  # TypeError: a JSONL line not an object
        where = _bad_json_line(p) if fmt == "jsonl" else None
        if where is not None:
            raise DataError(f"Line {where} of '{p}' is not a JSON object; fix or remove that line.") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"Cannot read '{p}' as {fmt.upper()} ({first}); check the file format.") from None
    if df.shape[1] == 0:
        raise DataError(f"'{p}' is empty; {_TABLE_FORM[fmt]}.")
    return df


_TABLE_FORM = {
    "csv": "give a CSV file with a header row, then one row per example",
    "tsv": "give a TSV file with a header row, then one row per example",
    "jsonl": "give a JSONL file with one JSON object per line",
}


def _bad_json_line(p: Path) -> int | None:
    """The 1-based number of the first non-blank line of a JSONL file that is not a JSON object, if one is found."""
    import bz2
    import gzip
    import json
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(p.suffix.lower(), open)
    try:
        with opener(p, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    ok = isinstance(json.loads(line), dict)
                except ValueError:
                    ok = False
                if not ok:
                    return n
    except (OSError, ValueError):
        return None
    return None


def _missing_labels(values: Any) -> np.ndarray:
    """A boolean mask of missing labels: NaN, None, pandas NA, or a string that is empty or only spaces."""
    import pandas as pd

    s = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
    miss = np.array(s.isna(), dtype=bool)
    if not pd.api.types.is_numeric_dtype(s):
        miss |= np.fromiter((isinstance(v, str) and not v.strip() for v in s.tolist()), dtype=bool, count=len(s))
    return miss


def _list_rows(rows: np.ndarray, what: str = "row", start: int = 0) -> str:
    """``"rows 3, 7 and 12"`` / ``"rows 3, 7, 12, 20, 31 and 9 more"`` for error messages (``start`` is added)."""
    nums = [str(int(r) + start) for r in rows[:5]]
    if len(rows) == 1:
        return f"{what} {nums[0]}"
    if len(rows) > 5:
        return f"{what}s {', '.join(nums)} and {len(rows) - 5} more"
    return f"{what}s {', '.join(nums[:-1])} and {nums[-1]}"


def _encode_labels(values: Any, what: str) -> tuple[np.ndarray, list[str], list[Any]]:
    """Map label values to indices into a sorted class list: (indices, class names, original values).

    Raises:
        DataError: a label is missing (NaN, None, empty), or the labels look like regression targets (see
            :func:`_check_not_regression`).
    """
    import pandas as pd

    s = pd.Series(values)
    miss = _missing_labels(s)
    if miss.any():
        raise DataError(
            f"The {what} are missing (NaN, None or empty) at {_list_rows(np.flatnonzero(miss))} (counting from 0); "
            "drop those rows or fill in the labels."
        )
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
    s = pd.Series(arr)
    miss = _missing_labels(s)
    if miss.any():
        raise DataError(
            f"The labels of '{name}' are missing (NaN, None or empty) at {_list_rows(np.flatnonzero(miss))} "
            "(counting from 0); drop those rows or fill in the labels."
        )
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


def from_text_table(
    path: str | os.PathLike[str],
    text_column: str = "text",
    label_column: str = "label",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Splits:
    """Read a CSV/TSV/JSONL file of labelled texts and split it (seeded, stratified).

    The format comes from the suffix (``.csv``, ``.tsv``/``.tab``, ``.jsonl``/``.ndjson``, optionally compressed).
    Classes are the distinct values of ``label_column``, sorted (numerically when they are numbers); the class names
    are their text. Rows whose text is empty/missing or whose label is missing are dropped with one warning, since a
    few blank rows are common in exported tables and carry no information.

    Raises:
        DataError: unreadable file, a missing column (the message lists the available ones), no rows left, or fewer
            than 2 classes.
    """
    _check_fractions(val_fraction, test_fraction)
    p = Path(path).expanduser()
    df = read_table(p)
    cols = [str(c) for c in df.columns]
    for role, col in (("text", text_column), ("label", label_column)):
        if col not in df.columns:
            raise DataError(
                f"Column '{col}' (the {role} column) is not in '{p.name}'; available columns are: {', '.join(cols)} "
                f"(set data.{role}_column){_separator_hint(cols, table_format(p))}."
            )
    text = df[text_column]
    labels = df[label_column]
    text_ok = (text.notna() & (text.astype(str).str.strip() != "")).to_numpy()
    label_ok = ~_missing_labels(labels)
    keep = text_ok & label_ok
    dropped = int((~keep).sum())
    if dropped:
        first_line = 1 if table_format(p) == "jsonl" else 2  # the header is line 1 of a CSV/TSV
        msg = (
            f"Dropped {dropped} row(s) of '{p.name}' with empty text ({int((~text_ok).sum())}) or a missing label "
            f"({int((~label_ok).sum())}): {_list_rows(np.flatnonzero(~keep), 'line', first_line)}."
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
    if not keep.any():
        raise DataError(f"'{p.name}' has no rows with both text and a label; check the text and label columns.")
    texts = text[keep].astype(str).tolist()
    codes, classes, values = _encode_labels(labels[keep].to_numpy(), f"labels in column '{label_column}'")
    if len(classes) < 2:
        raise DataError(
            f"Label column '{label_column}' of '{p.name}' has only {len(classes)} class ({', '.join(classes)}); a "
            "classifier needs at least 2."
        )
    ds = Dataset("text", texts, codes, classes, p.name, {"source": "table", "label_values": values})
    return split_dataset(ds, val_fraction, test_fraction, seed)


def _separator_hint(columns: list[str], fmt: str | None) -> str:
    """A hint when a table read as one column holds another separator in its name (a ';'-separated .csv)."""
    if len(columns) != 1 or fmt == "jsonl":
        return ""
    for sep, label in ((";", "';'"), ("\t", "tabs"), ("|", "'|'"), (",", "','")):
        if sep in columns[0]:
            want = "tabs" if fmt == "tsv" else "','"
            return f"; the file seems to separate columns with {label}, but a .{fmt} file must use {want}"
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------------------------


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
    """Wrap in-memory arrays as a :class:`Dataset` (one split; use :func:`split_dataset` to cut it).

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
    inputs = _check_inputs(X, modality, name)
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
        codes, cls, values = _encode_labels(y_arr, f"labels of '{name}'")
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


def _check_inputs(X: Any, modality: Modality, name: str) -> Any:
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
