"""Atomic file writes.

Every file transferkit writes goes through these helpers: the bytes land in a temporary file in the same folder,
are flushed and fsync'ed, and only then renamed over the destination with :func:`os.replace` (atomic on POSIX and
Windows). A process killed at any moment therefore leaves either the old file or the new one, never a half-written
one that a later command would read.

Files get mode ``0o666`` and folders ``0o777``, both reduced by the process's umask, as any tool that writes user
files does: the mode is set on the finished temporary file just before the rename, because some writers
(``safetensors``) replace the file they are given with one of their own ``0600`` files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success rename it over ``dest``, on error delete it.

    Use it for writers that insist on a file name (``safetensors.torch.save_file``, ``matplotlib.savefig``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp_file(dest, suffix)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: ``/proc/self/status``).

    Elsewhere it is read the only portable way, by setting and restoring it, which is not atomic across threads.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _create_temp_file(dest: Path, suffix: str) -> Path:
    """Create a new, empty, uniquely named file next to ``dest`` with mode ``0o666 & ~umask`` (the kernel applies it).

    The name keeps at most 200 characters of ``dest``'s so that a long but valid destination name still fits.
    """
    for _ in range(100):
        tmp = dest.parent / f".{dest.name[:200]}.{secrets.token_hex(4)}{suffix}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name next to {dest}")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256 in hex, read in 1 MiB chunks (model files, exported graphs, teacher files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``dest`` atomically (numpy scalars are converted)."""
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_with(dest: str | os.PathLike[str], writer: Callable[[Path], None], suffix: str = "") -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``dest``."""
    with atomic_path(dest, suffix=suffix) as tmp:
        writer(tmp)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


#: characters a writer adds to an output's name for the sibling it writes first (``.NAME.xxxxxxxx.tmp`` of
#: :func:`atomic_path` with a short suffix, ``.NAME.partial`` of a run folder): a name that fits on its own but not
#: with these would fail only after the work is done, so it is refused up front too
_SIBLING_NAME_EXTRA = 20


def check_output_path(path: str | os.PathLike[str], kind: str = "file", what: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be written as an output ``kind`` ("file" or "folder").

    Refuses with one sentence (a :class:`~transferkit.errors.ConfigError`) what would otherwise fail only when the
    result is written: an empty path; a name longer than the file system allows; a file path that is an existing
    folder, or a folder path that is an existing file; a path below an existing file; a folder that may not be
    written (permissions, read-only file system). Folders that do not exist yet are fine: writers create them.
    ``what`` names the path in the sentence (the flag or config key it came from). Returns the path.
    """
    from .errors import ConfigError

    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', not {kind!r}")
    if not str(path).strip():
        raise ConfigError(f"{what} is empty; give the path of the {kind} to write.")
    p = Path(path)
    shown = _shorten(str(p))
    _check_name_lengths(p, what, shown)
    try:
        _check_kind_and_folder(p, kind, what, shown)
    except OSError as e:  # a folder on the way that may not be searched, say
        raise ConfigError(f"{what} '{shown}' cannot be used ({e.strerror or e}); choose another location.") from None
    return p


def _check_kind_and_folder(p: Path, kind: str, what: str, shown: str) -> None:
    """The checks of :func:`check_output_path` that look at the file system (they may raise OSError)."""
    from .errors import ConfigError

    if kind == "file" and p.is_dir():
        raise ConfigError(f"{what} '{shown}' is an existing folder; give the path of a file to write.")
    if kind == "folder" and p.exists() and not p.is_dir():
        raise ConfigError(f"{what} '{shown}' is an existing file; give the path of a folder to write.")
    anchor = _nearest_existing(p.absolute().parent)
    if not anchor.is_dir():
        raise ConfigError(f"{what} '{shown}' lies below '{_shorten(str(anchor))}', which is a file, not a folder; "
                          "choose another path.")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} '{shown}' cannot be written: folder '{_shorten(str(anchor))}' is not writable "
                          "(permissions or a read-only file system); choose another location.")


def _check_name_lengths(p: Path, what: str, shown: str) -> None:
    """Refuse a path whose whole or any one name is longer than the file system allows (checked before any stat)."""
    from .errors import ConfigError

    full = p.absolute()
    anchor = _nearest_existing_quiet(full)
    name_max = _pathconf(anchor, "PC_NAME_MAX", 255)
    path_max = _pathconf(anchor, "PC_PATH_MAX", 4096)
    if len(os.fsencode(full)) + _SIBLING_NAME_EXTRA >= path_max:
        raise ConfigError(f"{what} '{shown}' is too long a path for this file system; choose a shorter one.")
    names = list(full.parts[1:])
    for i, name in enumerate(names):
        limit = name_max - (_SIBLING_NAME_EXTRA if i == len(names) - 1 else 0)
        if len(os.fsencode(name)) > limit:
            raise ConfigError(
                f"{what} '{shown}' has a name of {len(name)} characters, more than this file system allows "
                f"(at most {limit} here); choose a shorter name."
            )


def _nearest_existing(p: Path) -> Path:
    """``p`` or its closest ancestor that exists (as a file or a folder)."""
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _nearest_existing_quiet(p: Path) -> Path:
    """Like :func:`_nearest_existing`, for paths not yet checked: an over-long name counts as not existing."""
    while p != p.parent:
        try:
            if p.exists():
                return p
        except OSError:
            pass
        p = p.parent
    return p


def _pathconf(p: Path, name: str, default: int) -> int:
    """``os.pathconf(p, name)`` where the platform and file system say, else ``default``."""
    try:
        value = os.pathconf(p if p.is_dir() else p.parent, name)
    except (OSError, ValueError, AttributeError):
        return default
    return value if value and value > 0 else default


def _shorten(text: str, limit: int = 80) -> str:
    """``text`` cut in the middle to at most ``limit`` characters, for naming a path in a sentence."""
    return text if len(text) <= limit else f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 1):]}"
