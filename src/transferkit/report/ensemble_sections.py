"""The sections of an ensemble folder's report (``transferkit ensemble``): the ensemble against its best member, and
per member and for the ensemble accuracy, macro-F1, expected calibration error and log loss, with the members'
disagreement and what the strategy recorded (the greedy soup's trace, the boosting weights...).

All read ``ensemble.json``'s ``evaluation`` (see :mod:`transferkit.ensemble.report`); the configuration and
environment sections are shared with run folders (:mod:`transferkit.report.run_sections`).
"""

from __future__ import annotations

from typing import Any

from .html import esc, fmt, name, pct, table
from .registry import register_kind, section

register_kind("ensemble", lambda f: (f / "ensemble.json").is_file(), priority=20, title="Ensemble")

_KNOWN = {"split", "n", "how", "members", "ensemble", "best_member", "gain_over_best_member", "disagreement"}


def _evaluation(ctx: Any) -> dict[str, Any] | None:
    meta = ctx.json("ensemble.json")
    ev = meta.get("evaluation") if isinstance(meta, dict) else None
    if not isinstance(ev, dict) or not isinstance(ev.get("members"), list) or not isinstance(ev.get("ensemble"), dict):
        ctx.note("ensemble.json has no evaluation to show.")
        return None
    return ev


def _card(value: str, label: str) -> str:
    return f'<div class="card"><div class="v">{esc(value)}</div><div class="k">{esc(label)}</div></div>'


@section("Ensemble against its members", kinds=("ensemble",), order=10, anchor="metrics")
def headline(ctx: Any) -> str | None:
    ev = _evaluation(ctx)
    if ev is None:
        return None
    e = ev["ensemble"]
    gain = ev.get("gain_over_best_member")
    cards = [_card(pct(e.get("accuracy"), 2), f"{ev.get('split', '')} accuracy ({ev.get('how', '')})"),
             _card(fmt(e.get("macro_f1")), "macro-F1"), _card(pct(e.get("ece"), 2), "ECE"),
             _card("—" if gain is None else f"{100 * gain:+.2f}",
                   f"points over the best member ({ev.get('best_member')})"),
             _card(pct(ev.get("disagreement"), 1), "members' disagreement")]
    return f'<div class="cards">{"".join(cards)}</div><p>On the {esc(ev.get("split", "?"))} split ' \
           f'({esc(ev.get("n", "?"))} examples).</p>'


@section("Members", kinds=("ensemble",), order=20, anchor="members")
def members(ctx: Any) -> str | None:
    ev = _evaluation(ctx)
    if ev is None:
        return None
    rows = [[name(m.get("name")), pct(m.get("accuracy"), 2), pct(m.get("macro_f1"), 2), pct(m.get("ece"), 2),
             fmt(m.get("loss"))] for m in ev["members"] if isinstance(m, dict)]
    e = ev["ensemble"]
    rows.append([name(f"ensemble ({ev.get('how', '')})"), pct(e.get("accuracy"), 2), pct(e.get("macro_f1"), 2),
                 pct(e.get("ece"), 2), fmt(e.get("loss"))])
    return table(["model", "accuracy", "macro-F1", "ECE", "log loss"], rows)


@section("What the strategy recorded", kinds=("ensemble",), order=30, anchor="strategy")
def strategy(ctx: Any) -> str | None:
    ev = _evaluation(ctx)
    if ev is None:
        return None
    rows = [[name(k.replace("_", " ")), name(v if isinstance(v, str | int | float) else str(v))]
            for k, v in ev.items() if k not in _KNOWN]
    return table(["", ""], rows, row_headers=True, cls="facts") if rows else None
