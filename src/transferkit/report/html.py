"""The HTML of a report: escaping, tables, inline images, and the page with its CSS.

Hand-written rather than a template engine (Jinja2 is not a dependency, and the page is a handful of tags): every
user-provided string (class names, file names, config values, text snippets) goes through :func:`esc`, and only
:class:`Raw` fragments built here are inserted unescaped. The page is self-contained and offline: CSS inline, images
as ``data:`` URIs, no script at all, and a Content-Security-Policy that lets the browser load nothing else (so even
a missed escape could neither run a script nor make a request; the browser would log the refusal instead).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["Raw", "RawCell", "esc", "name", "table", "data_uri", "image", "fmt", "pct", "page", "note", "CSP"]

#: nothing but inline styles and data: images may load; no script, no font, no request
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


class Raw(str):
    """An HTML fragment built by this module (already escaped): inserted as is."""


class RawCell(Raw):
    """A whole table cell (``<td ...>...</td>``, e.g. with its own style), already escaped: inserted as is."""


def esc(value: Any) -> str:
    """``value`` as text, HTML-escaped (quotes too, so it is also safe inside an attribute)."""
    return html.escape(str(value), quote=True)


def name(value: Any) -> Raw:
    """A user-provided name (a class, a file): escaped and bidi-isolated, so right-to-left scripts such as Arabic
    show in their own direction without reordering the text around them."""
    return Raw(f"<bdi>{esc(value)}</bdi>")


def fmt(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals (integers as they are); ``—`` for missing or non-finite values."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{v:.{digits}f}" if math.isfinite(v) else "—"


def pct(value: Any, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage; ``—`` when missing."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{100 * v:.{digits}f}\u00a0%" if math.isfinite(v) else "—"  # no break before the sign


def _cell(value: Any, tag: str) -> str:
    if isinstance(value, RawCell):
        return str(value)
    if isinstance(value, Raw):
        return f"<{tag}>{value}</{tag}>"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<{tag} class="num">{esc(fmt(value))}</{tag}>'
    return f"<{tag}>{esc(value)}</{tag}>"


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], *, caption: str | None = None,
          cls: str = "", row_headers: bool = False) -> Raw:
    """A table in a sideways-scrolling box (wide tables scroll on a phone instead of squeezing the page).

    Cells are escaped unless they are :class:`Raw` (a :class:`RawCell` is the whole cell); numbers are
    right-aligned. With ``row_headers`` the first cell of each row is a ``<th>``; headers all empty: no header row.
    """
    head = "".join(_cell(h, "th") for h in headers) if any(str(h) for h in headers) else ""
    body = []
    for r in rows:
        cells = [_cell(v, "th" if row_headers and i == 0 else "td") for i, v in enumerate(r)]
        body.append(f"<tr>{''.join(cells)}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return Raw(f'<div class="scroll"><table class="{esc(cls)}">{cap}{thead}'
               f"<tbody>{''.join(body)}</tbody></table></div>")


_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}


def data_uri(payload: bytes | str, mime: str = "image/png") -> str | None:
    """A ``data:`` URI for image bytes (or a base64 string read from a folder's file).

    Returns ``None`` when the payload is not base64 of an image of that type (a damaged or crafted file), so the
    report leaves the image out with a note instead of embedding something else.
    """
    if isinstance(payload, str):
        if not _BASE64.match(payload):
            return None
        try:
            raw = base64.b64decode(payload, validate=True)
        except ValueError:
            return None
        text = payload
    else:
        raw, text = payload, base64.b64encode(payload).decode("ascii")
    if mime not in _MAGIC or not raw.startswith(_MAGIC[mime]):
        return None
    return f"data:{mime};base64,{text}"


def image(uri: str, alt: str, *, caption: str | None = None, cls: str = "plot") -> Raw:
    """An inline image (``uri`` from :func:`data_uri`) with alt text and an optional caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return Raw(f'<figure class="{esc(cls)}"><img src="{esc(uri)}" alt="{esc(alt)}" loading="eager">{cap}</figure>')


def note(text: str) -> Raw:
    """A short grey note (a part the folder's files do not allow, and why)."""
    return Raw(f'<p class="note">{esc(text)}</p>')


_CSS = """
:root { color-scheme: light; --fg: #1d2430; --muted: #5b6675; --line: #d9dee5; --bg: #ffffff; --soft: #f4f6f9;
        --accent: #1f5fa8; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC",
             "Noto Sans Arabic", "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 16px 20px 40px; }
header h1 { font-size: 1.5rem; margin: 8px 0 2px; overflow-wrap: anywhere; }
header p { margin: 2px 0; color: var(--muted); overflow-wrap: anywhere; }
nav { margin: 12px 0 8px; display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: .92rem; }
nav a { color: var(--accent); text-decoration: none; }
section { border-top: 1px solid var(--line); padding: 10px 0 6px; }
h2 { font-size: 1.2rem; margin: 10px 0 8px; }
h3 { font-size: 1rem; margin: 14px 0 6px; color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin: 6px 0 12px; }
.card { background: var(--soft); border-radius: 8px; padding: 10px 12px; }
.card .v { font-size: 1.35rem; font-weight: 600; }
.card .k { font-size: .82rem; color: var(--muted); }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; margin: 6px 0 12px; max-width: 100%; }
table { border-collapse: collapse; font-size: .9rem; min-width: 40%; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: var(--soft); position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.cm td { text-align: center; min-width: 2.6em; font-variant-numeric: tabular-nums; }
table.cm th { white-space: nowrap; }
table.cm tbody th { position: sticky; left: 0; background: var(--bg); z-index: 1; }
caption { caption-side: top; text-align: left; color: var(--muted); font-size: .85rem; padding: 2px 0 4px; }
figure { margin: 8px 0 14px; }
figure.plot img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .85rem; }
.examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.example { background: var(--soft); border-radius: 8px; padding: 8px; font-size: .85rem; overflow-wrap: anywhere; }
.example img { width: 96px; height: auto; image-rendering: pixelated; display: block; margin: 0 auto 6px;
               background: #fff; }
.examples.wide { grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); }
.example .snippet { font-style: italic; margin-bottom: 6px; }
.bad { color: #a11d1d; font-weight: 600; }
.note { color: var(--muted); font-size: .88rem; background: #fff8e6; border-left: 3px solid #e0b040;
        padding: 4px 8px; margin: 6px 0; }
pre { background: var(--soft); padding: 10px; border-radius: 6px; overflow-x: auto; font-size: .82rem;
      line-height: 1.35; white-space: pre; }
footer { color: var(--muted); font-size: .8rem; margin-top: 24px; }
@media (max-width: 600px) {
  main { padding: 10px 10px 30px; }
  body { font-size: 14px; }
  header h1 { font-size: 1.2rem; }
  .cards { grid-template-columns: repeat(2, 1fr); }
  .examples { grid-template-columns: repeat(2, 1fr); }
  .examples.wide { grid-template-columns: 1fr; }
  th, td { padding: 3px 5px; }
  table.cm tbody th { white-space: normal; max-width: 42vw; overflow-wrap: anywhere; }
}
"""


def page(title: str, subtitle: Sequence[str], sections: Sequence[tuple[str, str, str]], footer: str) -> str:
    """The whole document: ``sections`` are ``(anchor, heading, body HTML)``; texts are escaped here."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>{b}</section>' for a, h, b in sections)
    sub = "".join(f"<p>{esc(s)}</p>" for s in subtitle)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en" dir="ltr"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main><header><h1>{esc(title)}</h1>{sub}</header><nav>{nav}</nav>{body}"
        f"<footer>{esc(footer)}</footer></main></body></html>\n"
    )
