"""Build ``report.html`` from a folder's files: find the folder's kind, render its sections, write atomically.

The builder reads files only (it never loads the model or the data, and never unpickles anything: JSON, YAML with
``safe_load``, PNG bytes and ``.npz`` arrays with ``allow_pickle=False``), so ``transferkit report FOLDER`` rebuilds a
report quickly, also for a folder written before reports existed: what its files do not allow is left out with a
note, never an error. A section that cannot be built from damaged files is replaced by a note naming the problem.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..io import write_text
from .html import note, page
from .registry import FolderKind, kind_of, kinds, sections_for

__all__ = ["ReportContext", "build_report", "write_report", "REPORT", "SECTION_MODULES"]

REPORT = "report.html"
#: modules (of this package) whose import registers kinds and sections; a new folder kind adds its module here
SECTION_MODULES = ("run_sections", "compare_sections", "ensemble_sections")


class ReportContext:
    """What a section reads the folder through: cached, forgiving readers and the notes about missing parts."""

    def __init__(self, folder: Path, kind: FolderKind) -> None:
        self.folder = folder
        self.kind = kind
        self.notes: list[str] = []
        self._cache: dict[str, Any] = {}

    def exists(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def note(self, text: str) -> None:
        """Record that a part is missing (shown in that section)."""
        self.notes.append(text)

    def text(self, name: str) -> str | None:
        """The UTF-8 text of ``name``, or ``None`` if the folder lacks it."""
        key = f"text:{name}"
        if key not in self._cache:
            path = self.folder / name
            self._cache[key] = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
        return self._cache[key]

    def json(self, name: str) -> Any:
        """The parsed JSON of ``name``, or ``None`` if missing or unreadable (with a note saying which)."""
        key = f"json:{name}"
        if key not in self._cache:
            raw = self.text(name)
            value = None
            if raw is not None:
                try:
                    value = json.loads(raw)
                except ValueError:
                    self.note(f"{name} is not valid JSON; the parts built from it are left out.")
            self._cache[key] = value
        return self._cache[key]

    def yaml(self, name: str) -> Any:
        """The parsed YAML of ``name`` (``safe_load``: data only), or ``None``."""
        import yaml

        raw = self.text(name)
        if raw is None:
            return None
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            self.note(f"{name} is not valid YAML.")
            return None

    def bytes(self, name: str) -> bytes | None:
        path = self.folder / name
        return path.read_bytes() if path.is_file() else None

    def npz(self, name: str) -> dict[str, Any] | None:
        """The arrays of an ``.npz`` file (``allow_pickle=False``), or ``None`` if missing or unreadable."""
        import numpy as np

        path = self.folder / name
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            self.note(f"{name} could not be read ({e}).")
            return None


def _load_sections() -> None:
    for mod in SECTION_MODULES:
        importlib.import_module(f"{__package__}.{mod}")


def build_report(folder: str | os.PathLike[str]) -> str:
    """The report of ``folder`` as one self-contained HTML document.

    Raises:
        RunError: ``folder`` is not a folder, or not of any registered kind (run, compare, ...).
    """
    from ..version import __version__

    _load_sections()
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"'{folder}' is not a folder; give a run, compare or ensemble folder to report on.")
    kind = kind_of(folder)
    if kind is None:
        known = ", ".join(k.name for k in kinds())
        raise RunError(f"'{folder}' is not a folder transferkit wrote (no metrics.json, compare.json or other "
                       f"known file; kinds: {known}); give a run, compare or ensemble folder.")
    ctx = ReportContext(folder, kind)
    parts: list[tuple[str, str, str]] = []
    for s in sections_for(kind):
        before = len(ctx.notes)
        try:
            body = s.render(ctx)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError) as e:
            body = None
            ctx.note(f"This section could not be built from the folder's files ({type(e).__name__}: {e}).")
        notes = "".join(note(n) for n in ctx.notes[before:])
        if body or notes:
            parts.append((s.anchor, s.title, (body or "") + notes))
    summary = ctx.json("summary.json") or {}
    config = ctx.yaml("config.yaml") or {}
    shown = display_name(folder)
    subtitle = [f"{kind.title}: {shown}"]
    what = _what(summary, config)
    if what:
        subtitle.append(what)
    return page(f"transferkit report: {shown}", subtitle, parts,
                f"Built by transferkit {__version__} from the files in this folder; self-contained, works offline.")


def display_name(folder: Path) -> str:
    """The folder's name as the user chose it: a run writes its report inside ``.<name>.partial`` before the rename."""
    base = folder.resolve().name
    if base.startswith(".") and base.endswith(".partial") and len(base) > len("..partial"):
        return base[1 : -len(".partial")]
    return base


def _what(summary: dict[str, Any], config: dict[str, Any]) -> str:
    """One line: method, backbone and data, from the summary or the config."""
    model = config.get("model") if isinstance(config, dict) else None
    data = config.get("data") if isinstance(config, dict) else None
    method = summary.get("method")
    method = method.get("name") if isinstance(method, dict) else method
    method = method or (model or {}).get("method")
    backbone = summary.get("backbone") or (model or {}).get("backbone")
    source = (data or {}).get("name") or (data or {}).get("path")
    compare = config.get("compare") if isinstance(config, dict) else None
    if isinstance(compare, dict) and compare.get("methods"):
        method = None
    bits = [f"methods {', '.join(map(str, compare['methods']))}" if isinstance(compare, dict) and compare.get("methods")
            else "", f"method {method}" if method else "", f"backbone {backbone}" if backbone else "",
            f"data {source}" if source else ""]
    target = config.get("target") if isinstance(config, dict) else None
    if isinstance(target, dict) and (target.get("name") or target.get("path")):
        bits.append(f"target {target.get('name') or target.get('path')}")
    return ", ".join(b for b in bits if b)


def write_report(folder: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Build the report of ``folder`` and write it atomically to ``out`` (default ``folder/report.html``)."""
    html = build_report(folder)
    path = Path(out) if out is not None else Path(folder) / REPORT
    write_text(path, html)
    return path


