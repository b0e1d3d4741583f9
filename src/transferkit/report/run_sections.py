"""The sections of a run folder's report (``transferkit fit``): metrics, confusion matrix, per-class scores, learning
curves, the most confidently wrong examples, the config and the environment.

Every section reads the run folder's files (see :mod:`transferkit.app.fit` and :mod:`transferkit.report.record`)
and returns ``None`` with a note when they are missing, so a folder written before reports existed still gets a
report of what it has.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate.metrics import calibration_error
from .html import Raw, RawCell, data_uri, esc, fmt, image, name, pct, table
from .record import ENVIRONMENT, PREDICTIONS, WRONG_EXAMPLES
from .registry import register_kind, section

__all__ = ["shown_split", "MAX_CM_TABLE"]

#: above this many classes the confusion matrix is shown as the run's figure, not as tables of C x C cells
MAX_CM_TABLE = 40
_SPLIT_ORDER = ("test", "val", "target_test", "target_val", "train")

register_kind("run", lambda f: (f / "metrics.json").is_file() or (f / "model.json").is_file(), priority=0,
              title="Run folder")


def shown_split(ctx: Any) -> str | None:
    """The split the report's details are about: the confusion matrix's, else test, else val."""
    cm = ctx.json("confusion_matrix.json")
    if isinstance(cm, dict) and cm.get("split"):
        return str(cm["split"])
    metrics = ctx.json("metrics.json") or {}
    return next((s for s in _SPLIT_ORDER if s in metrics), None)


def _card(value: str, label: str) -> str:
    return f'<div class="card"><div class="v">{esc(value)}</div><div class="k">{esc(label)}</div></div>'


@section("Headline metrics", kinds=("run",), order=10, anchor="metrics")
def headline(ctx: Any) -> str | None:
    metrics = ctx.json("metrics.json")
    if not isinstance(metrics, dict) or not metrics:
        ctx.note("metrics.json is missing: this folder has no evaluation to show.")
        return None
    split = shown_split(ctx) or next(iter(metrics))
    m = metrics.get(split, {})
    cards = [_card(pct(m.get("accuracy"), 2), f"{split} accuracy"), _card(fmt(m.get("macro_f1")), f"{split} macro-F1")]
    if m.get("top5_accuracy") is not None:
        cards.append(_card(pct(m.get("top5_accuracy"), 2), f"{split} top-5 accuracy"))
    cards.append(_card(fmt(m.get("loss")), f"{split} log-loss"))
    preds = ctx.npz(PREDICTIONS.format(split=split))
    if preds is not None and {"top_index", "top_proba", "label"} <= set(preds):
        correct = preds["top_index"][:, 0] == preds["label"]
        cards.append(_card(fmt(calibration_error(preds["top_proba"][:, 0], correct)), f"{split} ECE"))
    if m.get("n") is not None:
        cards.append(_card(str(m.get("n")), f"{split} examples"))
    rows = [[s, d.get("accuracy"), d.get("macro_f1"), d.get("top5_accuracy"), d.get("loss"), d.get("n")]
            for s, d in metrics.items() if isinstance(d, dict)]
    out = f'<div class="cards">{"".join(cards)}</div>'
    out += table(["split", "accuracy", "macro-F1", "top-5 accuracy", "log-loss", "n"], rows, row_headers=True)
    summary = ctx.json("summary.json")
    if isinstance(summary, dict):
        method = summary.get("method")
        params = method.get("params") if isinstance(method, dict) else None
        method = method.get("name") if isinstance(method, dict) else method
        facts = [("method", method), ("method parameters", _inline(params) if params else None),
                 ("backbone", summary.get("backbone")), ("best epoch (kept)", summary.get("best_epoch")),
                 ("epochs run", summary.get("epochs_run")), ("stopped early", summary.get("stopped_early")),
                 ("training seconds", summary.get("train_seconds")), ("total seconds", summary.get("total_seconds")),
                 ("trainable / total parameters", _params(summary)),
                 ("data sizes", _inline(summary.get("data_sizes")) if summary.get("data_sizes") else None)]
        out += "<h3>Run</h3>" + table(["", ""], [[k, _text(v)] for k, v in facts if v is not None], row_headers=True,
                                       cls="facts")
    else:
        ctx.note("summary.json is missing: method, timings and parameter counts are not shown.")
    return out


def _text(v: Any) -> str:
    """A fact as text (left-aligned in a facts table): floats with two decimals."""
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _params(summary: dict[str, Any]) -> str | None:
    t, n = summary.get("trainable_params"), summary.get("total_params")
    if t is None or n is None:
        return None
    return f"{t:,} / {n:,} ({100 * t / n:.2f} %)" if n else f"{t:,} / {n:,}"


def _inline(d: Any) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items()) if isinstance(d, dict) else str(d)


def _cm_cell(count: int, share: float, diagonal: bool, text: str) -> RawCell:
    rgb = "31,95,168" if diagonal else "190,40,40"
    alpha = min(max(share, 0.0), 1.0)
    colour = "#fff" if alpha > 0.55 else "inherit"
    style = f"background:rgba({rgb},{alpha:.3f});color:{colour}" if count else ""
    return RawCell(f'<td style="{style}">{esc(text)}</td>')


@section("Confusion matrix", kinds=("run",), order=20, anchor="confusion")
def confusion(ctx: Any) -> str | None:
    cm = ctx.json("confusion_matrix.json")
    if not isinstance(cm, dict) or "matrix" not in cm:
        ctx.note("confusion_matrix.json is missing: the confusion matrix is not shown.")
        return None
    classes = [str(c) for c in cm.get("classes") or []]
    m = np.asarray(cm["matrix"], dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(classes):
        raise ValueError(f"the matrix is {m.shape} for {len(classes)} classes")
    rows_sum = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows_sum, out=np.zeros(m.shape), where=rows_sum > 0)
    split = cm.get("split", "?")
    out = (f"<p>On the {esc(split)} split, {int(m.sum())} examples: rows are the true class, columns the predicted "
           "class (numbered as the rows). Blue: correct, red: mistakes; the shade is the share of the true class."
           "</p>")
    n = len(classes)
    if n <= MAX_CM_TABLE:
        head = ["true \\ predicted"] + [Raw(f'<span title="{esc(c)}">{k}</span>') for k, c in enumerate(classes)]
        for title, as_share in (("Counts", False), ("Row-normalised (share of the true class, %)", True)):
            rows = []
            for i in range(n):
                cells = [Raw(f"{i} · {name(classes[i])}")]
                for j in range(n):
                    text = f"{100 * share[i, j]:.0f}" if as_share else str(int(m[i, j]))
                    cells.append(_cm_cell(int(m[i, j]), float(share[i, j]), i == j, text))
                rows.append(cells)
            out += f"<h3>{esc(title)}</h3>" + table(head, rows, cls="cm", row_headers=True)
    else:
        png = ctx.bytes("confusion_matrix.png")
        uri = data_uri(png) if png else None
        if uri:
            out += image(uri, f"confusion matrix on the {split} split", caption="counts; colour: row share")
        else:
            ctx.note(f"{n} classes are too many for a table and confusion_matrix.png is missing.")
    off = m.copy()
    np.fill_diagonal(off, 0)
    pairs = [(int(i), int(j)) for i, j in zip(*np.unravel_index(np.argsort(-off, axis=None, kind="stable"),
                                                                 off.shape)) if off[i, j] > 0][:10]
    if pairs:
        rows = [[name(classes[i]), name(classes[j]), int(m[i, j]), pct(share[i, j])] for i, j in pairs]
        out += "<h3>Most frequent mistakes</h3>" + table(["true class", "predicted as", "count", "share of true"],
                                                          rows)
    return out


@section("Per-class precision, recall and F1 (worst first)", kinds=("run",), order=30, anchor="per-class")
def per_class(ctx: Any) -> str | None:
    metrics = ctx.json("metrics.json") or {}
    split = shown_split(ctx)
    per = (metrics.get(split) or {}).get("per_class") if split else None
    if not isinstance(per, dict) or not per:
        ctx.note("metrics.json has no per-class scores.")
        return None
    items = sorted(per.items(), key=lambda kv: (kv[1].get("f1", 0.0), kv[1].get("recall", 0.0), str(kv[0])))
    rows = [[name(c), d.get("precision"), d.get("recall"), d.get("f1"), d.get("support")] for c, d in items]
    return f"<p>On the {esc(split)} split, sorted by F1, lowest first.</p>" + table(
        ["class", "precision", "recall", "F1", "support"], rows)


@section("Learning curves", kinds=("run",), order=40, anchor="curves")
def curves(ctx: Any) -> str | None:
    png = ctx.bytes("learning_curves.png")
    if png is None:
        history = ctx.json("history.json")
        if not isinstance(history, list) or not history:
            ctx.note("Neither learning_curves.png nor history.json is in the folder.")
            return None
        from ..evaluate.plots import learning_curves_png

        summary = ctx.json("summary.json") or {}
        with tempfile.TemporaryDirectory() as tmp:
            learning_curves_png(history, Path(tmp) / "curves.png", best_epoch=summary.get("best_epoch"))
            png = (Path(tmp) / "curves.png").read_bytes()
    uri = data_uri(png)
    if uri is None:
        ctx.note("learning_curves.png is not a PNG image.")
        return None
    out = image(uri, "loss and accuracy per epoch", caption="Per epoch (for probe: per value of C on the path); "
                "the dotted line marks the epoch whose weights were kept.")
    history = ctx.json("history.json")
    if isinstance(history, list) and history and len(history) <= 60:
        keys = [k for k in ("epoch", "C", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1",
                            "target_accuracy", "lr") if any(k in r for r in history)]
        rows = [[r.get(k) for k in keys] for r in history if isinstance(r, dict)]
        out += table([k.replace("_", " ") for k in keys], rows)
    return out


@section("Most confidently wrong examples", kinds=("run",), order=50, anchor="wrong")
def wrong(ctx: Any) -> str | None:
    data = ctx.json(WRONG_EXAMPLES)
    if not isinstance(data, dict):
        ctx.note("This folder has no wrong_examples.json (it was written before runs recorded their predictions); "
                 "fit again to see the examples.")
        return None
    examples = data.get("examples") or []
    head = (f"<p>{int(data.get('n_wrong', 0))} of {int(data.get('n', 0))} {esc(data.get('split', ''))} examples "
            f"are wrong; the {len(examples)} the model was most sure of:</p>")
    if not examples:
        return head
    cards = []
    for ex in examples:
        body = ""
        if "thumbnail" in ex:
            uri = data_uri(str(ex["thumbnail"]))
            body = (f'<img src="{esc(uri)}" alt="example {int(ex.get("index", -1))}">' if uri
                    else '<p class="note">thumbnail not readable</p>')
        elif "text" in ex:
            body = f'<div class="snippet" dir="auto">“{esc(ex["text"])}”</div>'
        elif "values" in ex:
            more = " …" if ex.get("n_values", 0) > len(ex["values"]) else ""
            body = f'<div class="snippet">[{esc(", ".join(fmt(v, 3) for v in ex["values"]))}{more}]</div>'
        elif "unavailable" in ex:
            body = f'<p class="note">input not available: {esc(ex["unavailable"])}</p>'
        src = f'<div>{esc(ex["source"])}</div>' if ex.get("source") else ""
        cards.append(
            f'<div class="example">{body}<div>true: {name(ex.get("true"))}</div>'
            f'<div class="bad">predicted: {name(ex.get("predicted"))} ({esc(pct(ex.get("confidence")))})</div>'
            f'<div>p(true) = {esc(pct(ex.get("true_probability")))}</div>'
            f'<div>{esc(data.get("split", ""))} #{int(ex.get("index", -1))}</div>{src}</div>')
    wide = " wide" if any("thumbnail" not in ex for ex in examples) else ""  # text snippets need the width
    return head + f'<div class="examples{wide}">{"".join(cards)}</div>'


@section("Configuration", kinds=("run", "compare", "ensemble"), order=80, anchor="config")
def config(ctx: Any) -> str | None:
    text = ctx.text("config.yaml")
    if text is None:
        ctx.note("config.yaml is missing.")
        return None
    return "<p>The resolved configuration (config.yaml); rerun it with <code>transferkit fit</code>.</p>" + \
        f"<pre>{esc(text)}</pre>"


@section("Environment", kinds=("run", "compare", "ensemble"), order=90, anchor="environment")
def environment(ctx: Any) -> str | None:
    env = ctx.json(ENVIRONMENT)
    if not isinstance(env, dict):
        ctx.note("This folder has no environment.json (written before runs recorded where they ran).")
        return None
    keys = ("device", "cpu", "cpu_count", "torch_threads", "python", "platform", "transferkit", "written")
    rows = [[k.replace("_", " "), str(env[k])] for k in keys if env.get(k) is not None]
    rows += [[pkg, str(v)] for pkg, v in (env.get("packages") or {}).items()]
    return "<p>Where the run ran (recorded when it finished).</p>" + table(["", ""], rows, row_headers=True,
                                                                           cls="facts")
