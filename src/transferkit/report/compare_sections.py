"""The sections of a comparison folder's report (``transferkit compare``): the methods' mean +- std table, the runs,
the proxy A-distance, which epoch each label-free validator would pick against the oracle, and the embedding plot.

All read ``compare.json`` and ``embedding.png`` (see :mod:`transferkit.app.compare`); the config and environment
sections are shared with run folders (:mod:`transferkit.report.run_sections`).
"""

from __future__ import annotations

import math
from typing import Any

from .html import data_uri, esc, fmt, image, name, table
from .registry import register_kind, section

register_kind("compare", lambda f: (f / "compare.json").is_file(), priority=10,
              title="Domain-adaptation comparison")


def _pm(s: dict[str, Any], key: str, scale: float = 100.0, digits: int = 1, sign: str = "") -> str:
    """``mean ± std`` of ``key`` over seeds (the std only with two or more seeds)."""
    m, sd = s.get(f"{key}_mean"), s.get(f"{key}_std")
    if not isinstance(m, int | float) or not math.isfinite(m):
        return "—"
    text = f"{m * scale:{sign}.{digits}f}"
    if isinstance(sd, int | float) and math.isfinite(sd):
        text += f" ± {sd * scale:.{digits}f}"
    return text


def _compare(ctx: Any) -> dict[str, Any] | None:
    data = ctx.json("compare.json")
    return data if isinstance(data, dict) else None


@section("Methods (mean ± std over seeds)", kinds=("compare",), order=10, anchor="methods")
def methods(ctx: Any) -> str | None:
    data = _compare(ctx)
    summary = (data or {}).get("summary")
    if not summary:
        ctx.note("compare.json is missing or has no summary.")
        return None
    rows = [[name(s.get("method")), s.get("seeds"), _pm(s, "target_accuracy"), _pm(s, "gain_vs_source_only", sign="+"),
             _pm(s, "source_accuracy"), _pm(s, "a_distance", 1.0, 2), _pm(s, "seconds", 1.0, 0)] for s in summary]
    scored = [s for s in summary if isinstance(s.get("target_accuracy_mean"), int | float)]
    best = max(scored, key=lambda s: s["target_accuracy_mean"]) if scored else None
    lead = (f"<p>Highest mean target accuracy: <b>{name(best['method'])}</b> "
            f"({esc(_pm(best, 'target_accuracy'))} %). Target labels score the models only; they never chose "
            "them.</p>") if best else ""
    return lead + table(["method", "seeds", "target acc %", "Δ vs source-only (paired, points)", "source acc %",
                         "A-distance", "s / run"], rows)


@section("Runs", kinds=("compare",), order=15, anchor="runs")
def runs(ctx: Any) -> str | None:
    data = _compare(ctx)
    rows = (data or {}).get("runs")
    if not rows:
        return None
    return table(["method", "seed", "target accuracy", "source accuracy", "A-distance", "best epoch", "seconds"],
                 [[name(r.get("method")), r.get("seed"), r.get("target_accuracy"), r.get("source_accuracy"),
                   r.get("a_distance"), r.get("best_epoch"), fmt(r.get("seconds"), 1)] for r in rows])


@section("A-distance", kinds=("compare",), order=20, anchor="a-distance")
def a_distance(ctx: Any) -> str | None:
    summary = (_compare(ctx) or {}).get("summary") or []
    rows = [[name(s.get("method")), _pm(s, "a_distance", 1.0, 3)] for s in summary if "a_distance_mean" in s]
    if not rows:
        ctx.note("No A-distance was recorded.")
        return None
    return ("<p>Proxy A-distance 2(1 − 2ε) between the source and target test features of each trained model "
            "(ε: the error of a classifier telling the domains apart): 0 when the domains cannot be told apart, 2 when "
            "they are fully separable. Lower means better aligned features; it says nothing about the classes.</p>"
            + table(["method", "A-distance (mean ± std)"], rows))


@section("Choosing the epoch without target labels", kinds=("compare",), order=30, anchor="validators")
def validators(ctx: Any) -> str | None:
    summary = (_compare(ctx) or {}).get("summary") or []
    rows = []
    for s in summary:
        for v_name, v in (s.get("validators") or {}).items():
            rows.append([name(s.get("method")), v_name, fmt(v.get("epoch"), 1), fmt(v.get("oracle_epoch"), 1),
                         fmt(100 * v["target_accuracy"], 1) if "target_accuracy" in v else "—",
                         fmt(100 * v["gap"], 1) if "gap" in v else "—"])
    if not rows:
        ctx.note("No validator choices were recorded (they need a labelled target test split and a history).")
        return None
    return ("<p>The epoch each label-free validator would pick, the epoch the oracle (best target accuracy) picks, "
            "and what the choice costs in target accuracy (mean over seeds; epochs are 1-based).</p>"
            + table(["method", "validator", "chosen epoch", "oracle epoch", "target acc % at chosen",
                     "gap to oracle (points)"], rows))


@section("Embedding of source and target features", kinds=("compare",), order=40, anchor="embedding")
def embedding(ctx: Any) -> str | None:
    png = ctx.bytes("embedding.png")
    if png is None:
        ctx.note("embedding.png is missing (the comparison ran with --embedding none, or before it existed).")
        return None
    uri = data_uri(png)
    if uri is None:
        ctx.note("embedding.png is not a PNG image.")
        return None
    return image(uri, "2-D embedding of source and target features per method",
                 caption="One panel per method (first seed); the source-only panel is before adaptation.")
