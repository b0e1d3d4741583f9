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
