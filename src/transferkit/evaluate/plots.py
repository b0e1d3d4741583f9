"""PNG figures for the run report: the confusion matrix and the learning curves.

The figures are drawn on a bare :class:`matplotlib.figure.Figure` attached to an Agg canvas, never through
``pyplot``: that needs no display, selects no global backend, registers no figure in pyplot's global list (so nothing
leaks across many runs in one process), and leaves the backend of a user's notebook untouched. Every file is written
atomically through :func:`transferkit.io.write_with`, so a crash mid-save leaves no half-written PNG.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import write_with

__all__ = ["confusion_matrix_png", "embedding_png", "learning_curves_png", "DPI"]

#: Resolution of every saved figure.
DPI = 110
# Beyond this many classes the per-cell numbers are unreadable and are left out (the colours still show the pattern).
_MAX_ANNOTATED = 30
# Beyond this many classes the tick labels would overlap even at the smallest font; they are left out.
_MAX_LABELLED = 80
_MAX_LABEL_CHARS = 24


# Fonts that cover Chinese, Japanese and Korean (and much else), tried before any other installed font when a class
# name has characters the default font lacks. Any other installed font that has every missing glyph serves too.
_WIDE_FONTS = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans SC",
    "Source Han Sans", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback", "AR PL UMing CN",
    "Arial Unicode MS", "Noto Sans",
)  # fmt: skip
# "Last Resort" has a placeholder box for every code point: it would "cover" any name without showing it.
_PLACEHOLDER_FONTS = ("Last Resort",)
_GLYPH_WARNING = r"Glyph .* missing from font"


@cache
def _charmap(path: str) -> frozenset[int]:
    """The code points the font file at ``path`` has glyphs for (empty if it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def _default_font_path() -> str:
    from matplotlib import font_manager

    found = font_manager.findfont(font_manager.FontProperties())
    return str(getattr(found, "path", found))


def _candidate_fonts() -> list[Any]:
    """Installed fonts to draw missing glyphs with: the CJK fonts of :data:`_WIDE_FONTS` first, placeholders never."""
    from matplotlib import font_manager

    rank = {name: i for i, name in enumerate(_WIDE_FONTS)}
    fonts = [f for f in font_manager.fontManager.ttflist if not f.name.startswith(_PLACEHOLDER_FONTS)]
    return sorted(fonts, key=lambda f: rank.get(f.name, len(rank)))


def label_font(labels: Sequence[str]) -> tuple[list[str] | None, list[bool]]:
    """How to draw ``labels`` legibly: a font family list and, per label, whether every character can be drawn.

    The family is ``None`` when the default font has every glyph; otherwise it is the default family followed by the
    installed font that has the most of the missing glyphs (all of them when one does), so Latin text keeps its usual
    look and matplotlib takes the rest glyph by glyph from the second font. A label is not drawable when no chosen
    font has all of its characters (no CJK font installed, for instance).
    """
    from matplotlib import rcParams

    default = _charmap(_default_font_path())
    needed = [frozenset(ord(ch) for ch in str(label) if not ch.isspace()) for label in labels]
    missing = frozenset().union(*needed) - default
    if not missing:
        return None, [True] * len(needed)
    best_name, best = None, frozenset()
    for entry in _candidate_fonts():
        cmap = _charmap(str(entry.fname))
        if len(missing & cmap) > len(missing & best):
            best_name, best = entry.name, cmap
            if missing <= cmap:
                break
    covered = default | best
    family = [*rcParams["font.family"], best_name] if best_name is not None else None
    return family, [n <= covered for n in needed]


@contextmanager
def _quiet_glyphs() -> Iterator[None]:
    """Drawing and saving never reach the user with matplotlib's missing-glyph warnings (names are handled above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_GLYPH_WARNING, category=UserWarning)
        yield


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def _save_png(fig: Figure, path: str | os.PathLike[str]) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _short(label: str) -> str:
    """Shorten long class names in the middle, keeping both ends (names often differ only in a suffix)."""
    label = str(label)
    if len(label) <= _MAX_LABEL_CHARS:
        return label
    head = (_MAX_LABEL_CHARS - 1) // 2
    return label[:head] + "\u2026" + label[-(_MAX_LABEL_CHARS - 1 - head):]


def confusion_matrix_png(
    cm: Sequence[Sequence[int]] | np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "Confusion matrix",
    normalize: bool = True,
) -> None:
    """Draw a confusion matrix (rows = true class, columns = predicted class) and save it as a PNG at ``path``.

    Each cell shows its count; with ``normalize=True`` the colour is the row-normalised share (the per-class recall
    on the diagonal), so that rare classes are as visible as frequent ones, and the row's share is printed under the
    count. The figure grows with the number of classes (up to a cap); numbers are dropped above 30 classes and tick
    labels above 80, where they could no longer be read.

    Class names in any script are drawn with an installed font that has their glyphs (:func:`label_font`; e.g.
    Noto Sans CJK for Chinese names). When no installed font has them, those names are shown as ``#k`` (their index
    in ``classes``, which ``confusion_matrix.json`` lists in order) and the axis label says so, without a warning.

    Raises:
        ValueError: if ``cm`` is not a square ``C x C`` matrix of non-negative counts matching ``classes``.
    """
    m = np.asarray(cm, dtype=np.float64)
    n_classes = len(classes)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {m.shape}")
    if m.shape[0] != n_classes:
        raise ValueError(f"confusion matrix is {m.shape[0]}x{m.shape[0]} but there are {n_classes} classes")
    if n_classes == 0:
        raise ValueError("confusion matrix is empty; there are no classes to draw")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("confusion matrix must hold non-negative finite counts")

    row_sums = m.sum(axis=1, keepdims=True)
    share = np.divide(m, row_sums, out=np.zeros_like(m), where=row_sums > 0)
    colour = share if normalize else m
    vmax = 1.0 if normalize else max(float(m.max()), 1.0)

    side = min(3.0 + 0.55 * n_classes, 22.0)
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(colour, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of true class" if normalize else "count")

    font = 10 if n_classes <= 10 else 9 if n_classes <= 20 else 7
    numbered = ""
    if n_classes <= _MAX_LABELLED:
        labels = [_short(c) for c in classes]
        family, drawable = label_font(labels)
        if not all(drawable):  # no installed font has these characters: number them rather than draw empty boxes
            labels = [text if ok else f"#{k}" for k, (text, ok) in enumerate(zip(labels, drawable))]
            numbered = " (#k: the k-th class name, in the order of confusion_matrix.json)"
        tick = {"fontsize": font, **({"fontfamily": family} if family else {})}
        ax.set_xticks(np.arange(n_classes), labels=labels, rotation=45, ha="right", rotation_mode="anchor", **tick)
        ax.set_yticks(np.arange(n_classes), labels=labels, **tick)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("predicted class" + numbered)
    ax.set_ylabel("true class")
    total = int(m.sum())
    correct = int(np.trace(m))
    acc = f", accuracy {correct / total:.1%}" if total else ""
    ax.set_title(f"{title}\n(n = {total}{acc})", fontsize=11)

    if n_classes <= _MAX_ANNOTATED:
        for i in range(n_classes):
            for j in range(n_classes):
                count = int(round(m[i, j]))
                text = f"{count}\n{share[i, j]:.0%}" if normalize and n_classes <= 12 and count else f"{count}"
                dark = colour[i, j] / vmax > 0.55
                ax.text(j, i, text, ha="center", va="center", fontsize=font - 1 if normalize else font,
                        color="white" if dark else "black")
    with _quiet_glyphs():  # a title with such characters still must not warn: the names are handled above
        fig.tight_layout()
        _save_png(fig, path)


_SERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "train_loss": ("train loss", {"color": "tab:blue", "linestyle": "-"}),
    "val_loss": ("val loss", {"color": "tab:orange", "linestyle": "-"}),
    "train_accuracy": ("train accuracy", {"color": "tab:blue", "linestyle": "-"}),
    "val_accuracy": ("val accuracy", {"color": "tab:orange", "linestyle": "-"}),
    "val_macro_f1": ("val macro-F1", {"color": "tab:green", "linestyle": "--"}),
}


def _series(history: Sequence[dict[str, Any]], key: str, epochs: list[float]) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for x, row in zip(epochs, history):
        v = row.get(key)
        if v is None:
            continue
        try:
            fv = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(fv):
            xs.append(x)
            ys.append(fv)
    return xs, ys


def _best_epoch(
    history: Sequence[dict[str, Any]], epochs: list[float], monitor: str | None
) -> tuple[float, str] | None:
    """The epoch with the best monitored value: ``monitor`` if given, else val accuracy, val macro-F1, val loss."""
    order = [monitor] if monitor else ["val_accuracy", "val_macro_f1", "val_loss"]
    for key in order:
        xs, ys = _series(history, key, epochs)
        if not ys:
            continue
        idx = int(np.argmin(ys)) if key.endswith("loss") else int(np.argmax(ys))  # first best on ties
        return xs[idx], key
    return None


def learning_curves_png(
    history: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    best_epoch: int | None = None,
    monitor: str | None = None,
    title: str = "Learning curves",
) -> None:
    """Draw loss and accuracy / macro-F1 against epoch (train and val) and save them as a PNG at ``path``.

    ``history`` is one dict per epoch, as the training loop records it: ``epoch`` (1-based; the row's position is
    used when missing), ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``val_macro_f1``,
    ``lr``. Any key may be missing or ``None`` (e.g. no validation split): such points are skipped and a series
    with no point is left out. The best epoch is marked with a dashed vertical line in both panels: ``best_epoch``
    if given (the one whose weights were kept), otherwise the best value of ``monitor`` (default: val accuracy,
    then val macro-F1, then lowest val loss).

    Raises:
        ValueError: if ``history`` is empty.
    """
    rows = list(history)
    if not rows:
        raise ValueError("history is empty; there are no epochs to plot")
    epochs: list[float] = []
    for i, row in enumerate(rows):
        e = row.get("epoch")
        epochs.append(float(e) if isinstance(e, int | float) and not isinstance(e, bool) else float(i + 1))

    if best_epoch is not None:
        best: tuple[float, str] | None = (float(best_epoch), "kept")
    else:
        best = _best_epoch(rows, epochs, monitor)

    fig = _new_figure(10.0, 4.2)
    panels = [
        (fig.add_subplot(1, 2, 1), "loss", ["train_loss", "val_loss"]),
        (fig.add_subplot(1, 2, 2), "accuracy / macro-F1", ["train_accuracy", "val_accuracy", "val_macro_f1"]),
    ]
    marker = "o" if len(rows) <= 40 else None
    for ax, ylabel, keys in panels:
        drawn = 0
        for key in keys:
            xs, ys = _series(rows, key, epochs)
            if not ys:
                continue
            label, style = _SERIES[key]
            ax.plot(xs, ys, label=label, marker=marker, markersize=4, linewidth=1.6, **style)
            drawn += 1
        if best is not None:
            how = "" if best[1] == "kept" else f" ({best[1].replace('_', ' ')})"
            ax.axvline(best[0], color="tab:red", linestyle=":", linewidth=1.3,
                       label=f"best epoch {best[0]:g}{how}")
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center", color="grey")
        if ylabel.startswith("accuracy") and drawn:
            lo = min(min(_series(rows, k, epochs)[1] or [1.0]) for k in keys)
            ax.set_ylim(max(0.0, min(lo, 1.0) - 0.05), 1.02)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if drawn or best is not None:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    _save_png(fig, path)


def embedding_png(
    panels: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "Source and target features",
) -> None:
    """Scatter plots of 2-D embeddings of source and target features, one panel per model, saved as a PNG.

    Each panel is a dict with ``title``, ``source`` and ``target`` (``(n, 2)`` arrays) and optionally
    ``source_labels`` / ``target_labels`` (class indices: the marker colour follows the class, the marker shape the
    domain, so both alignment of the domains and separation of the classes are visible).
    """
    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _new_figure(4.2 * cols, 4.0 * rows + 0.4)
    cmap = "tab10"
    for i, p in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for key, marker, label in (("source", "o", "source"), ("target", "^", "target")):
            z = np.asarray(p[key])
            c = p.get(f"{key}_labels")
            if c is None:
                ax.scatter(z[:, 0], z[:, 1], s=6, marker=marker, alpha=0.5, label=label,
                           color="tab:blue" if key == "source" else "tab:orange")
            else:
                ax.scatter(z[:, 0], z[:, 1], s=6, marker=marker, alpha=0.5, label=label, c=np.asarray(c) % 10,
                           cmap=cmap, vmin=0, vmax=9)
        ax.set_title(str(p.get("title", "")), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.legend(loc="best", fontsize=7, markerscale=2)
    fig.suptitle(title + " (o source, \u25b2 target; colour = class)", fontsize=10)
    fig.tight_layout()
    _save_png(fig, path)
