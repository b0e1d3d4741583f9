"""Files and text a person reads after a run: predictions CSV, metrics JSON, and the CLI's metrics table.

All files are written atomically through :mod:`transferkit.io`, so a run folder never holds a half-written file.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..io import write_json, write_text

__all__ = ["write_predictions_csv", "write_metrics_json", "format_metrics_table"]


def write_predictions_csv(
    path: str | os.PathLike[str],
    ids: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    top_k: int = 1,
) -> None:
    """Write one row per example: ``input, predicted, probability`` (+ ``top2, top2_probability``, ...).

    ``predicted`` is the arg-max class (ties go to the lower class index, as in the metrics), ``probability`` its
    probability; with ``top_k > 1`` the next most likely classes follow in decreasing order. Probabilities are
    written with full float precision so that the file round-trips exactly.

    Raises:
        ValueError: if shapes do not match, ``top_k`` is not in ``[1, C]``, or ``proba`` is not finite.
    """
    p = np.asarray(proba, dtype=np.float64)
    ids = list(ids)
    classes = list(classes)
    if p.ndim != 2:
        raise ValueError(f"proba must be a 2-D array (N, C), got shape {p.shape}")
    if p.shape[1] != len(classes):
        raise ValueError(f"proba has {p.shape[1]} columns but there are {len(classes)} classes")
    if p.shape[0] != len(ids):
        raise ValueError(f"there are {len(ids)} ids but proba has {p.shape[0]} rows")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or not 1 <= top_k <= len(classes):
        raise ValueError(f"top_k must be an integer between 1 and the number of classes ({len(classes)}), "
                         f"got {top_k!r}")

    # A stable sort of -p keeps the lower index first on ties, matching argmax (the `predicted` in the metrics).
    order = np.argsort(-p, axis=1, kind="stable")[:, :top_k]
    header = ["input", "predicted", "probability"]
    for r in range(2, top_k + 1):
        header += [f"top{r}", f"top{r}_probability"]

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i, ident in enumerate(ids):
        row: list[str] = [str(ident)]
        for j in order[i]:
            row += [str(classes[j]), repr(float(p[i, j]))]
        writer.writerow(row)
    write_text(path, buf.getvalue())


def write_metrics_json(path: str | os.PathLike[str], metrics: Mapping[str, Any]) -> None:
    """Write a metrics dict (e.g. ``{"val": {...}, "test": {...}}``) as indented JSON, atomically."""
    write_json(path, dict(metrics))


_COLUMNS = [("accuracy", "accuracy", "{:.4f}"), ("macro_f1", "macro-F1", "{:.4f}"), ("loss", "loss", "{:.4f}"),
            ("n", "n", "{:d}")]


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        if fmt == "{:d}":
            return fmt.format(int(value))
        fv = float(value)
    except (TypeError, ValueError):
        return "-"
    return fmt.format(fv) if math.isfinite(fv) else str(fv)


def format_metrics_table(metrics_by_split: Mapping[str, Mapping[str, Any]]) -> str:
    """A short plain-text table, one row per split: accuracy, macro-F1, loss and n (``-`` where missing).

    Example::

        split  accuracy  macro-F1    loss    n
        val      0.9350    0.9312  0.2114  200
        test     0.9275    0.9240  0.2307  400
    """
    header = ["split"] + [title for _, title, _ in _COLUMNS]
    rows = [[str(split)] + [_cell(m.get(key), fmt) for key, _, fmt in _COLUMNS]
            for split, m in metrics_by_split.items()]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
