"""The on-disk feature cache (the design notes' "proxy collection"): features computed once, read back later.

Layout under the root (``$TRANSFERKIT_CACHE_DIR``, else ``~/.cache/transferkit``)::

    features/<key>/features.npy   float32 (N, D), read back memory-mapped and read-only
    features/<key>/meta.json      what the entry is: backbone, layers, pooling, data, shape, time, key parts
    onnx/<key>/model.onnx         exported frozen backbones (keyed without the data), see ``onnx_export.py``
    heads/<key>/head.npz          closed-form heads fitted on cached features (the probe's weights, bias), with
    heads/<key>/meta.json         their record (the C path's scores); keyed by the features, labels and settings
    backbones/<key>.json          descriptions (cards) of packaged backbones, so a cached re-run need not build one
    locks/<key>.lock              one lock file per key (``filelock``)

Atomicity: an entry is written into a temporary directory ``.tmp-<key>-*`` next to where it belongs (same file
system), flushed to disk, and only then renamed to ``<key>`` with ``os.rename``, which is atomic. An entry
directory therefore exists only when it is complete; a process killed while writing leaves a ``.tmp-`` directory
that :meth:`FeatureCache.get` never looks at and :meth:`FeatureCache.clear` removes. Concurrency: writers of one
key serialise on that key's lock, and a writer that still finds the entry present when it renames (another writer
that did not use the lock won) discards its own copy; readers need no lock. Entries are removed by renaming them to
``.trash-*`` first, so a half-deleted entry is never read either.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from .keys import canonical_json, describe_spec, taps_of

FEATURES_FILE = "features.npy"
HEAD_FILE = "head.npz"
META_FILE = "meta.json"
CACHE_ENV = "TRANSFERKIT_CACHE_DIR"
_TMP, _TRASH = ".tmp-", ".trash-"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _remove_tree(path: Path) -> bool:
    """Delete ``path`` by renaming it to a ``.trash-`` sibling first (atomic), then removing that."""
    trash = path.with_name(f"{_TRASH}{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


class FeatureCache:
    """Features (and exported models) on disk, keyed by everything they depend on.

    Args:
        root: the cache folder; ``None`` uses ``$TRANSFERKIT_CACHE_DIR``, else ``~/.cache/transferkit``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "transferkit"
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    # -- keys and paths --------------------------------------------------------------------------------------------
    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def models_dir(self) -> Path:
        return self.root / "onnx"

    @property
    def heads_dir(self) -> Path:
        return self.root / "heads"

    @property
    def cards_dir(self) -> Path:
        """Descriptions of packaged backbones (:mod:`transferkit.backbones.deferred`): a re-run need not build one."""
        return self.root / "backbones"

    def key(self, parts: dict[str, Any]) -> str:
        """SHA-256 (hex) of the canonical JSON of ``parts``: equal parts, equal key."""
        return hashlib.sha256(canonical_json(parts).encode()).hexdigest()

    def entry_dir(self, key: str) -> Path:
        return self.features_dir / key

    def lock(self, key: str) -> FileLock:
        """The inter-process lock of ``key`` (use as a context manager around computing and writing it)."""
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / f"{key}.lock"))

    # -- reading ---------------------------------------------------------------------------------------------------
    def get(self, key: str) -> np.ndarray | None:
        """The cached features of ``key``: a read-only memory-mapped float32 ``(N, D)`` array, or ``None``."""
        folder = self.entry_dir(key)
        path = folder / FEATURES_FILE
        if not path.is_file() or not (folder / META_FILE).is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None
        if arr.dtype != np.float32 or arr.ndim != 2:
            return None
        return arr

    def meta(self, key: str) -> dict[str, Any] | None:
        """The ``meta.json`` of entry ``key`` (``None`` if absent or unreadable)."""
        try:
            return json.loads((self.entry_dir(key) / META_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def get_head(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The arrays and record of fitted head ``key``, or ``None`` when absent, unreadable or not that key's.

        The arrays are read with ``allow_pickle=False`` (numeric arrays only); a damaged entry reads as ``None``,
        so the caller fits again and :meth:`put_head` replaces it.
        """
        folder = self.heads_dir / key
        try:
            meta = json.loads((folder / META_FILE).read_text())
            with np.load(folder / HEAD_FILE, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None
        return arrays, meta

    def put_head(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Publish fitted head ``key`` (numeric ``arrays`` as ``head.npz``, ``meta`` as JSON) atomically.

        A damaged entry of the same key is replaced; writers of one key serialise on its lock (as features do).
        """
        with self.lock(key):
            if (self.heads_dir / key).exists():
                _remove_tree(self.heads_dir / key)
            with self.staging(self.heads_dir, key) as tmp:
                np.savez(tmp / HEAD_FILE, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
                record = {**meta, "key": key, "created": now_iso()}
                (tmp / META_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def heads(self) -> list[dict[str, Any]]:
        """One row per fitted head: key, method, bytes, created."""
        rows = []
        if not self.heads_dir.is_dir():
            return rows
        for folder in self.heads_dir.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            meta = self.get_head(folder.name)
            record = meta[1] if meta is not None else {}
            rows.append({"key": folder.name, "method": record.get("method"), "bytes": _size(folder),
                         "created": record.get("created")})
        return sorted(rows, key=lambda r: (r["created"] or "", r["key"]))

    def entries(self) -> list[dict[str, Any]]:
        """One row per feature entry, oldest first: key, backbone, layers, pooling, n, dim, bytes, created, data."""
        rows = []
        if not self.features_dir.is_dir():
            return rows
        for folder in self.features_dir.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            meta = self.meta(folder.name) or {}
            spec = (meta.get("key_parts") or {}).get("backbone") or {}
            layers, pooling = taps_of(spec) if spec else (None, None)
            rows.append({
                "key": folder.name,
                "backbone": describe_spec(spec) if spec else "?",
                "layers": layers,
                "pooling": pooling,
                "n": meta.get("n"),
                "dim": meta.get("dim"),
                "bytes": _size(folder),
                "created": meta.get("created"),
                "data": meta.get("data"),
                "image_size": (meta.get("key_parts") or {}).get("image_size"),
            })
        return sorted(rows, key=lambda r: (r["created"] or "", r["key"]))

    def models(self) -> list[dict[str, Any]]:
        """One row per exported ONNX model: key, backbone, image_size, exporter, bytes, created."""
        rows = []
        if not self.models_dir.is_dir():
            return rows
        for folder in self.models_dir.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                meta = json.loads((folder / META_FILE).read_text())
            except (OSError, json.JSONDecodeError):
                meta = {}
            spec = (meta.get("key_parts") or {}).get("backbone") or {}
            rows.append({
                "key": folder.name,
                "backbone": describe_spec(spec) if spec else "?",
                "image_size": (meta.get("key_parts") or {}).get("image_size"),
                "exporter": meta.get("exporter"),
                "bytes": _size(folder),
                "created": meta.get("created"),
            })
        return sorted(rows, key=lambda r: (r["created"] or "", r["key"]))

    # -- writing ---------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, key: str, shape: tuple[int, int], meta: dict[str, Any]) -> Iterator[np.ndarray]:
        """Yield a writable float32 memory map of ``shape`` for entry ``key``; publish it atomically on success.

        The array lives in a temporary directory until the block ends without error; then it is flushed, its
        ``meta.json`` written, and the directory renamed to the entry. On error (or a kill) the entry never appears.
        If the entry appeared meanwhile (another writer won), this copy is discarded.
        """
        with self.staging(self.features_dir, key) as tmp:
            arr = np.lib.format.open_memmap(tmp / FEATURES_FILE, mode="w+", dtype=np.float32, shape=shape)
            yield arr
            arr.flush()
            del arr
            record = {**meta, "key": key, "n": int(shape[0]), "dim": int(shape[1]), "created": now_iso()}
            (tmp / META_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")

    @contextlib.contextmanager
    def staging(self, parent: Path, key: str) -> Iterator[Path]:
        """A temporary folder in ``parent`` that becomes ``parent/key`` when the block succeeds (as in writing)."""
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}{key}-", dir=parent))
        try:
            yield tmp
            for f in tmp.rglob("*"):
                if f.is_file():
                    _fsync_file(f)
            _fsync_dir(tmp)
            try:
                os.rename(tmp, parent / key)
            except OSError:
                if not (parent / key).is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # lost the race: the entry already exists, keep that one
            _fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- removing --------------------------------------------------------------------------------------------------
    def remove(self, key: str) -> bool:
        """Remove feature entry ``key`` (atomically: it is renamed away first); whether it existed."""
        return _remove_tree(self.entry_dir(key))

    def clear(self) -> int:
        """Remove every feature entry, exported model and fitted head, and orphaned temporary directories.

        A temporary directory whose key is locked belongs to a live writer and is left alone. Returns the number of
        entries removed (feature sets, exported models and fitted heads, i.e. what ``transferkit cache list`` showed).
        """
        removed = 0
        for parent in (self.features_dir, self.models_dir, self.heads_dir):
            if not parent.is_dir():
                continue
            for path in parent.iterdir():
                if path.name.startswith(_TMP):
                    key = path.name[len(_TMP):].split("-", 1)[0]
                    self._remove_orphan(path, key)
                elif path.name.startswith(_TRASH):
                    shutil.rmtree(path, ignore_errors=True)
                elif path.is_dir():
                    removed += int(_remove_tree(path))
                else:  # failure markers of exports, stray temporary files of atomic writes
                    path.unlink(missing_ok=True)
        shutil.rmtree(self.cards_dir, ignore_errors=True)  # descriptions only: rebuilt by the next fit
        return removed

    def _remove_orphan(self, path: Path, key: str) -> None:
        lock = self.lock(key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return  # a live writer owns it
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            lock.release()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def default_cache() -> FeatureCache:
    """The cache at ``$TRANSFERKIT_CACHE_DIR`` (read now, so tests and users can point it elsewhere at any time)."""
    return FeatureCache()
