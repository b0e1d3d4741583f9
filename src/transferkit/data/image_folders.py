"""Image folders in the Keras ``flow_from_directory`` layout (one sub-folder per class), read into :class:`Splits`.

Either already split into ``train/``, ``val/`` and ``test/`` or a single root that is split here (seeded,
stratified, see :mod:`transferkit.data.splits`). Every file is checked up front; files that only lose a few
examples (a corrupt image, a stray ``notes.txt``) are skipped with a single ``UserWarning`` that lists them,
because one bad file among thousands should not stop a run but must not go unseen. Free of torch.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import Dataset, Splits
from .splits import check_fractions, split_dataset

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

_MAX_LISTED = 50  # files named in one "skipped" warning before it says "and N more"


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


def dir_key(path: str | os.PathLike[str]) -> tuple[int, int]:
    """The identity of a folder (device, inode) after following links: equal for every way to reach it."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def files_under(folder: Path, seen: set[tuple[int, int]], skipped: list[tuple[str, str]]) -> list[str]:
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
                key = dir_key(entry.path)
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
    :func:`files_under`); the root and its class folders are added to it first, so a link to any of them is
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
    seen.update(dir_key(d) for d in [folder, *class_dirs])
    candidates: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for d in class_dirs:
        candidates.extend((f, d.name) for f in files_under(d, seen, skipped))
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
    check_fractions(val_fraction, test_fraction)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder '{root}' does not exist; check the path.")
    name = root.name or str(root)
    split_dirs = _find_split_dirs(root)
    skipped: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = {dir_key(root)}
    if split_dirs is None:
        paths, names, classes, skipped = _scan_class_folders(root, "image", seen)
        _check_classes(classes, root)
        ds = _image_dataset(paths, names, classes, name)
        _warn_skipped(skipped, root)
        return split_dataset(ds, val_fraction, test_fraction, seed)

    scanned: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for folder in split_dirs.values():  # a link from one split into another is not followed either
        seen.update(dir_key(d) for d in [folder, *_list_class_dirs(folder)])
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
