"""Run folders that are never half-written.

A run builds everything in a hidden sibling folder ``.<name>.partial`` (its checkpoint lives there too, which is
what ``--resume`` continues from) and only renames it to ``<name>`` once every file is in place. A command that
finds ``<name>`` can therefore trust it is complete; a killed run leaves only the ``.partial`` folder, which a later
``fit`` refuses to silently overwrite.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from .errors import RunError
from .io import write_text


class RunFolder:
    """The life cycle of one run folder: start (or resume) in ``.partial``, then finalise atomically."""

    def __init__(self, out: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.out = Path(out)
        self.partial = self.out.parent / f".{self.out.name}.partial"
        self.overwrite = overwrite
        self.resume = resume

    @property
    def checkpoint_dir(self) -> Path:
        return self.partial / "checkpoint"

    def start(self, config: dict[str, Any]) -> Path:
        """Create (or reopen, on resume) the partial folder and record the resolved config in it."""
        text = yaml.safe_dump(config, sort_keys=False)
        if self.resume:
            saved = self.partial / "config.yaml"
            if not saved.is_file():
                if self.out.is_dir():
                    raise RunError(f"The run in '{self.out}' already finished; there is nothing to resume.")
                raise RunError(f"There is no interrupted run to resume at '{self.out}'; start it without --resume.")
            before = yaml.safe_load(saved.read_text())
            diff = _first_difference(before, config)
            if diff is not None:
                raise RunError(
                    f"The config differs from the interrupted run's at '{diff}'; resume with the same config, "
                    "or start a new run with --overwrite."
                )
            return self.partial
        if self.out.exists() and not self.overwrite:
            raise RunError(f"Run folder '{self.out}' already exists; pass --overwrite or choose another --out.")
        if self.partial.exists():
            if not self.overwrite:
                raise RunError(
                    f"An interrupted run exists for '{self.out}'; pass --resume to continue it or --overwrite "
                    "to start again."
                )
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        write_text(self.partial / "config.yaml", text)
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
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k in ("out", "overwrite") and not path:
                continue
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if d is not None:
                return d
        return None
    return None if a == b else (path or "<root>")
