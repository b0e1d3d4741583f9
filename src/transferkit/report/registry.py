"""Which sections a report has: folder kinds and the sections registered for them.

A report is a list of sections, each a small function ``render(ctx) -> str | None`` that reads the folder's files
through a :class:`~transferkit.report.builder.ReportContext` and returns an HTML fragment (every user-provided
string already escaped with :func:`transferkit.report.html.esc`), or ``None`` when the folder lacks what it needs
(it then says so with ``ctx.note(...)``). Sections are registered for one or more folder *kinds*; a kind is
recognised from the files in a folder (:func:`register_kind`) and may include the sections of other kinds (an
ensemble folder is also a model folder, so it can include the ``run`` sections and add its own).

To add a kind (say ``ensemble``) and its sections, in a module of this package listed in
:data:`transferkit.report.builder.SECTION_MODULES`::

    register_kind("ensemble", lambda folder: (folder / "ensemble.json").is_file(), priority=20, includes=("run",))

    @section("Members", kinds=("ensemble",), order=15)
    def members(ctx):
        data = ctx.json("ensemble.json")
        ...
        return table(["member", "accuracy", "macro-F1", "ECE"], rows)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FolderKind", "Section", "register_kind", "section", "kind_of", "sections_for", "kinds"]


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder a report can be built for.

    Attributes:
        name: ``run``, ``compare``, ...
        detect: ``detect(folder) -> bool``: whether a folder is of this kind (from its files alone).
        priority: kinds are tried from the highest priority down (a more specific kind before a generic one).
        includes: other kinds whose sections this kind's report also shows.
        title: how the report's heading names the folder.
    """

    name: str
    detect: Callable[[Path], bool]
    priority: int = 0
    includes: tuple[str, ...] = ()
    title: str = ""


@dataclass(frozen=True)
class Section:
    """One section of a report: a heading and the function that renders its body."""

    title: str
    render: Callable[[Any], str | None]
    kinds: tuple[str, ...]
    order: int
    anchor: str


_KINDS: dict[str, FolderKind] = {}
_SECTIONS: list[Section] = []


def register_kind(name: str, detect: Callable[[Path], bool], *, priority: int = 0, includes: tuple[str, ...] = (),
                  title: str | None = None) -> FolderKind:
    """Register (or replace) a folder kind; see :class:`FolderKind`."""
    kind = FolderKind(name, detect, priority, tuple(includes), title or f"{name} folder")
    _KINDS[name] = kind
    return kind


def section(title: str, *, kinds: tuple[str, ...], order: int, anchor: str | None = None
            ) -> Callable[[Callable[[Any], str | None]], Callable[[Any], str | None]]:
    """Decorator: register ``render(ctx)`` as the section ``title`` of the reports of ``kinds``, at ``order``."""

    def wrap(render: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        slug = anchor or "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
        _SECTIONS[:] = [s for s in _SECTIONS if not (s.anchor == slug and s.kinds == tuple(kinds))]
        _SECTIONS.append(Section(title, render, tuple(kinds), order, slug))
        return render

    return wrap


def kinds() -> list[FolderKind]:
    """The registered kinds, most specific (highest priority) first."""
    return sorted(_KINDS.values(), key=lambda k: -k.priority)


def kind_of(folder: Path) -> FolderKind | None:
    """The first kind (by priority) whose ``detect`` accepts ``folder``, or ``None``."""
    for kind in kinds():
        try:
            if kind.detect(folder):
                return kind
        except OSError:
            continue
    return None


def sections_for(kind: FolderKind) -> list[Section]:
    """The sections of ``kind`` and of every kind it includes (transitively), sorted by ``order``."""
    names: list[str] = []
    todo = [kind.name]
    while todo:
        name = todo.pop(0)
        if name in names:
            continue
        names.append(name)
        if name in _KINDS:
            todo += list(_KINDS[name].includes)
    seen: set[int] = set()
    out = []
    for s in sorted(_SECTIONS, key=lambda s: s.order):
        if id(s) not in seen and any(k in names for k in s.kinds):
            seen.add(id(s))
            out.append(s)
    return out
