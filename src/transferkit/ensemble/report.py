"""The evaluation every ensemble folder carries (``ensemble.json``'s ``evaluation``, and ``ensemble.md``).

Per member and for the ensemble: accuracy, macro-F1 and expected calibration error (15 bins) on one labelled split,
plus the members' mean pairwise disagreement (how often two members' top classes differ: an ensemble of members
that always agree cannot beat its best member). Computed from the members' probabilities once, so building the
report costs one prediction pass per member.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .combine import disagreement


def scores(labels: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Accuracy, macro-F1, ECE and log loss of ``proba`` against ``labels``."""
    from ..evaluate.metrics import classification_metrics, expected_calibration_error

    m = classification_metrics(labels, proba, list(classes), top_k=())
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": expected_calibration_error(labels, proba),
            "loss": m["loss"]}


def ensemble_report(names: Sequence[str], probas: Sequence[np.ndarray], ensemble_proba: np.ndarray,
                    labels: np.ndarray, classes: Sequence[str], *, split: str, how: str,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation dict: ``{"split", "n", "how", "members": [{name, accuracy, macro_f1, ece, loss}],
    "ensemble": {...}, "best_member", "gain_over_best_member", "disagreement"}`` (plus ``extra``)."""
    members = [{"name": str(n), **scores(labels, p, classes)} for n, p in zip(names, probas, strict=True)]
    ens = scores(labels, ensemble_proba, classes)
    best = max(members, key=lambda r: r["accuracy"])
    out = {"split": split, "n": int(len(labels)), "how": how, "members": members, "ensemble": ens,
           "best_member": best["name"], "gain_over_best_member": ens["accuracy"] - best["accuracy"],
           "disagreement": disagreement(probas) if len(probas) > 1 else 0.0}
    out.update(extra or {})
    return out


def report_markdown(report: dict[str, Any]) -> str:
    """The evaluation as Markdown: one row per member and one for the ensemble."""
    lines = [f"# Ensemble ({report['how']}) on the {report['split']} split ({report['n']} examples)", "",
             "| model | accuracy % | macro-F1 % | ECE % | log loss |", "|---|---|---|---|---|"]
    for r in [*report["members"], {"name": f"**ensemble ({report['how']})**", **report["ensemble"]}]:
        lines.append(f"| {r['name']} | {100 * r['accuracy']:.2f} | {100 * r['macro_f1']:.2f} | "
                     f"{100 * r['ece']:.2f} | {r['loss']:.4f} |")
    lines += ["", f"Members' mean pairwise disagreement: {100 * report['disagreement']:.2f} % of examples.",
              f"Gain over the best member ({report['best_member']}): "
              f"{100 * report['gain_over_best_member']:+.2f} accuracy points."]
    rows = [(k, v) for k, v in report.items() if k not in {"split", "n", "how", "members", "ensemble", "best_member",
                                                           "gain_over_best_member", "disagreement"}]
    for key, value in rows:
        title = key.replace("_", " ").capitalize()
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            cols = list(value[0])
            lines += ["", f"{title}:", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_cell(v.get(c)) for c in cols) + " |" for v in value]
            lines.append("")
        else:
            lines.append(f"{title}: {_cell(value)}")
    return "\n".join(lines).rstrip("\n") + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)
