"""Run folders that are never half-written, and never written by two runs at once.

A run builds everything in a hidden sibling folder ``.<name>.partial`` (its checkpoint lives there too, which is
what ``--resume`` continues from) and only renames it to ``<name>`` once every file is in place. A command that
finds ``<name>`` can therefore trust it is complete.

Life cycle (:meth:`RunFolder.hold` wraps a whole run):

1. lock: an OS file lock on ``.<name>.lock`` (``filelock``, taken without waiting) is held for the whole run, so a
   second run into the same ``--out`` is refused at once ("another run is writing to ..."). The OS drops the lock
   when the process dies, so a killed run never blocks the next one.
2. :meth:`RunFolder.check`: refuse an existing folder, an interrupted run, or a resume with another config, before
   anything is written; the caller then validates everything it can (names, weights, data) and only then
3. :meth:`RunFolder.start` creates (or reopens, on resume) the ``.partial`` folder, and
4. :meth:`RunFolder.finalize` renames it into place.

A run that fails with a user error (:class:`~transferkit.errors.TransferkitError`) removes its partial folder unless
that folder holds a checkpoint to resume from (a diverged run keeps the last good epoch); a kill or a crash (any
other exception) keeps it for ``--resume``, as does a failure before the run started (it is not this run's folder).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ..errors import RunError, TransferkitError
from ..io import write_text

#: Config keys that may differ when a run is resumed: they change how the rest of the run goes, not what the
#: checkpoint means (a diverged run continues with a lower learning rate). Any other difference is refused.
RESUMABLE_KEYS = ("train.lr", "train.grad_clip", "train.progress")

#: Top-level keys that never count as a config difference (where the run goes, not what it computes).
_IGNORED_KEYS = ("out", "overwrite")


class RunFolder:
    """The life cycle of one run folder: lock, check, start (or resume) in ``.partial``, then finalise atomically."""

    def __init__(self, out: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.out = Path(out)
        self.partial = self.out.parent / f".{self.out.name}.partial"
        self.lock_path = self.out.parent / f".{self.out.name}.lock"
        self.overwrite = overwrite
        self.resume = resume
        self._lock: Any = None
        self._started = False
        self._made_dirs: list[Path] = []

    @property
    def checkpoint_dir(self) -> Path:
        return self.partial / "checkpoint"

    # --- the whole run ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def hold(self) -> Iterator[RunFolder]:
        """Lock the run folder for the block; on a user error inside it, clean up what this run wrote.

        On a :class:`TransferkitError` the partial folder this run started is removed unless it holds a checkpoint;
        any other exception (a crash, Ctrl-C) keeps it for ``--resume``. The lock is released in every case.
        """
        self.acquire()
        try:
            yield self
        except TransferkitError:
            self._discard_unless_resumable()
            raise
        finally:
            self.release()

    def acquire(self) -> None:
        """Take the run folder's lock without waiting; refuse when another live run holds it."""
        from filelock import FileLock, Timeout

        if self._lock is not None:
            return
        self._make_parent()
        lock = FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            self._remove_made_dirs()
            raise RunError(f"Another run is writing to '{self.out}'; wait for it to finish or choose another "
                           "--out.") from None
        except OSError as e:
            self._remove_made_dirs()
            raise _cannot_write(self.out, e) from None
        self._lock = lock

    def release(self) -> None:
        """Release the lock; its file is removed first, while still held (filelock retries a removed lock file)."""
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            self.lock_path.unlink()
        self._lock.release()
        self._lock = None
        self._remove_made_dirs()

    # --- steps ----------------------------------------------------------------------------------------------
    def check(self, config: dict[str, Any]) -> None:
        """Refuse, before anything is written, a run that would overwrite, clash with an interrupted run or resume
        a run with another config (only :data:`RESUMABLE_KEYS` may change on resume)."""
        if self.resume:
            saved = self.partial / "config.yaml"
            if not saved.is_file():
                if self.out.is_dir():
                    raise RunError(f"The run in '{self.out}' already finished; there is nothing to resume.")
                raise RunError(f"There is no interrupted run to resume at '{self.out}'; start it without --resume.")
            before = yaml.safe_load(saved.read_text(encoding="utf-8"))
            diff = next((d for d in _differences(before, config) if d not in RESUMABLE_KEYS), None)
            if diff is not None:
                raise RunError(
                    f"The config differs from the interrupted run's at '{diff}' and only "
                    f"{', '.join(RESUMABLE_KEYS)} may change on --resume; resume with the same config, or start a "
                    "new run with --overwrite."
                )
            return
        if self.out.exists() and not self.out.is_dir():
            raise RunError(f"'{self.out}' is a file, not a run folder; choose another --out.")
        if self.out.exists() and not self.overwrite:
            raise RunError(f"Run folder '{self.out}' already exists; pass --overwrite or choose another --out.")
        if self.partial.exists() and not self.overwrite:
            raise RunError(
                f"An interrupted run exists for '{self.out}'; pass --resume to continue it or --overwrite "
                "to start again."
            )

    def start(self, config: dict[str, Any]) -> Path:
        """Create (or reopen, on resume) the partial folder and record the resolved config in it.

        On resume the config is rewritten when a :data:`RESUMABLE_KEYS` value changed (the history's per-epoch
        ``lr`` shows where); a later ``--resume`` compares against the latest.
        """
        self.check(config)
        text = yaml.safe_dump(config, sort_keys=False)
        try:
            if not self.resume:
                if self.partial.exists():
                    shutil.rmtree(self.partial)
                self.partial.mkdir(parents=True)
            self._started = True
            write_text(self.partial / "config.yaml", text)
        except OSError as e:
            raise _cannot_write(self.out, e) from None
        return self.partial

    def finalize(self) -> Path:
        """Drop the checkpoint and move the finished folder into place (replacing an old one on overwrite)."""
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        old = None
        if self.out.exists():
            if not self.overwrite and not self.resume:
                raise RunError(f"Run folder '{self.out}' appeared while training; the result is in '{self.partial}'.")
            old = self.out.parent / f".{self.out.name}.old"
            if old.exists():
                shutil.rmtree(old)
            self.out.rename(old)
        self.partial.rename(self.out)
        self._started = False
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    # --- clean-up ---------------------------------------------------------------------------------------------
    def _discard_unless_resumable(self) -> None:
        """Remove the partial folder this run started, unless it holds a checkpoint to resume from."""
        if not self._started or (self.checkpoint_dir.is_dir() and any(self.checkpoint_dir.iterdir())):
            return
        shutil.rmtree(self.partial, ignore_errors=True)
        self._started = False

    def _make_parent(self) -> None:
        """Create the missing folders above the run folder, remembering them so a refused run can remove them."""
        missing = [p for p in (self.out.parent, *self.out.parent.parents) if not p.exists()]
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _cannot_write(self.out, e) from None
        self._made_dirs = missing  # deepest first

    def _remove_made_dirs(self) -> None:
        """Remove the folders :meth:`_make_parent` created, where they are still empty (nothing was written)."""
        for d in self._made_dirs:
            try:
                d.rmdir()
            except OSError:
                break
        self._made_dirs = []


def _cannot_write(out: Path, e: OSError) -> RunError:
    """One sentence for a run folder the OS will not let us create: the path and the reason."""
    blocker = next((p for p in (out.parent, *out.parent.parents) if p.exists() and not p.is_dir()), None)
    reason = f"'{blocker}' is a file, not a folder" if blocker is not None else (e.strerror or str(e)).lower()
    return RunError(f"Cannot create the run folder '{out}': {reason}; choose another --out.")


def _differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """The dotted keys where two configs differ (depth first, sorted), ignoring :data:`_IGNORED_KEYS`."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k in _IGNORED_KEYS and not path:
                continue
            yield from _differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return
    if a != b:
        yield path or "<root>"
