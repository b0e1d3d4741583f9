"""``transferkit compare``: run several domain-adaptation methods over seeds on one source/target pair and report.

For every method and seed the run configuration is trained once (``model.method = m``, ``train.seed = s``, everything
else shared), with the source as labelled training data and the target's training split WITHOUT labels. Then:

* target accuracy on the target's test split (the target labels are used here and for the per-epoch
  ``target_accuracy`` curve only: they never reach training or model selection unless you monitor that oracle);
* source accuracy on the source test split (adaptation should not forget the task);
* the proxy A-distance between source-test and target-test features of the trained model
  (:func:`~transferkit.adaptation.divergence.a_distance`);
* for every target-label-free validator in the history (source ``val_accuracy``, ``iw_val_accuracy``,
  ``iw_val_loss``, ``dev_val_loss``, ``snd``,
  ``im``): the epoch it would choose and that epoch's target accuracy, beside the epoch the
  oracle (best per-epoch target accuracy) would choose: the gap says what choosing without labels costs.

The run folder (written atomically, like a fit's) holds ``runs.csv`` (one row per method and seed),
``summary.csv`` and ``summary.md`` (mean +- sample std over seeds and the paired difference to ``source-only``),
``validators.csv`` (validator vs oracle epochs), ``embedding.png`` (t-SNE or PCA of source and target features of
each method's first-seed model; the ``source-only`` panel is "before adaptation"), ``compare.json`` (everything)
and ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError, DataError
from .parallel import check_backend, run_parallel

#: Target-label-free validators looked for in the history; keys with "loss" are minimised.
VALIDATORS = ("val_accuracy", "iw_val_accuracy", "iw_val_loss", "dev_val_loss", "snd", "im")
BASELINE = "source-only"


@dataclass
class CompareResult:
    """Where the comparison was written, the per-run rows and the Markdown summary table."""

    out: Path
    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    table: str


def _log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def validator_choices(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each validator in ``history``: the epoch it picks and the target accuracy there, vs the oracle's pick.

    Epochs are 1-based. Needs the per-epoch ``target_accuracy`` (the oracle) in the history; returns ``{}`` without.
    """
    if not history or "target_accuracy" not in history[0]:
        return {}
    target = [float(r["target_accuracy"]) for r in history]
    oracle = int(np.argmax(target))
    out = {}
    for key in VALIDATORS:
        values = [r.get(key) for r in history]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            continue
        arr = np.asarray(values, dtype=float)
        pick = int(np.argmin(arr) if "loss" in key else np.argmax(arr))
        out[key] = {"epoch": pick + 1, "target_accuracy": target[pick], "oracle_epoch": oracle + 1,
                    "oracle_target_accuracy": target[oracle], "gap": target[oracle] - target[pick]}
    return out


def run_compare(
    cfg: RunConfig,
    methods: list[str],
    seeds: list[int],
    *,
    embedding: str = "tsne",
    max_points: int = 400,
    progress: bool = True,
    jobs: int = 1,
    backend: str = "local",
) -> CompareResult:
    """Train every method with every seed on ``cfg``'s source/target pair and write the comparison run folder.

    The methods x seeds fits are independent: ``jobs > 1`` runs them in that many processes (``backend`` local or
    ray, see :mod:`transferkit.app.parallel`); the results are the same as one after the other.

    The folder is locked for the whole comparison and created only after the settings and the data passed their
    checks; a user error later removes it (see :class:`~transferkit.app.runs.RunFolder`).
    """
    from .runs import RunFolder

    if cfg.target is None:
        raise ConfigError("compare needs a target data set; add a `target:` section (e.g. target: {name: mnist-m}).")
    if not methods:
        raise ConfigError("Give at least one method to compare, e.g. --methods source-only,dann.")
    if embedding not in ("tsne", "pca", "none"):
        raise ConfigError(f"Unknown embedding '{embedding}'; use tsne, pca or none.")
    check_backend(backend, jobs)
    folder = RunFolder(cfg.out, overwrite=cfg.overwrite)
    with folder.hold():
        return _compare_in(folder, cfg, methods, seeds, embedding=embedding, max_points=max_points,
                           progress=progress, jobs=jobs, backend=backend)


def _compare_in(folder: Any, cfg: RunConfig, methods: list[str], seeds: list[int], *, embedding: str,
                max_points: int, progress: bool, jobs: int = 1, backend: str = "local") -> CompareResult:
    """:func:`run_compare` inside the folder's lock: check, load, create the folder, train, write."""
    from ..adaptation.divergence import embed_2d
    from ..data import load_data
    from ..io import write_json, write_text
    from ..methods import create_method

    config = {**cfg.to_dict(), "compare": {"methods": methods, "seeds": seeds, "embedding": embedding}}
    folder.check(config)
    for m in methods:  # unknown names and parameters fail now, with a suggestion, not after hours of training
        create_method(m, cfg.model.method_params)
    source, target = load_data(cfg.data), load_data(cfg.target)
    if list(source.classes) != list(target.classes):
        raise DataError("The source and target data have different label sets; domain adaptation needs the same "
                        "classes on both sides.")
    target_eval = target.test if target.test is not None and target.test.is_labelled else None
    if target_eval is None:
        _log("note: the target has no labelled test split, so target accuracy cannot be reported")
    work = folder.start(config)
    base_params = {**dataclasses.asdict(cfg.model), **dataclasses.asdict(cfg.train), "progress": False}
    if base_params.get("iw_validators") is None:  # the validator table reads them (unless the config says false)
        base_params["iw_validators"] = True

    runs: list[dict[str, Any]] = []
    panels: list[dict[str, Any]] = []
    total = len(methods) * len(seeds)
    calls = [{"params": {**base_params, "method": method, "seed": seed}, "source": source, "target": target,
              "target_eval": target_eval, "max_points": max_points} for method in methods for seed in seeds]

    finished: list[int] = []

    def done(i: int, result: tuple[dict[str, Any], Any]) -> None:
        row = result[0]
        finished.append(i)
        shown = f"target {row['target_accuracy']:.4f}" if "target_accuracy" in row else "no target labels"
        if progress:
            _log(f"[{len(finished)}/{total}] {row['method']} seed {row['seed']}: {shown}, A-distance "
                 f"{row['a_distance']:.2f} ({row['seconds']:.0f} s)")

    for row, (fs, ft, ys, yt) in run_parallel(compare_one, calls, jobs=jobs, backend=backend, on_done=done):
        runs.append(row)
        method, seed = row["method"], row["seed"]
        if embedding != "none" and seed == seeds[0]:
            zs, zt = embed_2d(fs, ft, method=embedding, seed=seed)
            what = "before adaptation: " if method == BASELINE else ""
            panels.append({"title": f"{what}{method} (A-dist {row['a_distance']:.2f})", "source": zs,
                           "target": zt, "source_labels": ys, "target_labels": yt})

    summary = summarise(runs)
    table = summary_markdown(summary, cfg.train.monitor)
    write_text(work / "runs.csv", _csv([_flat(r) for r in runs]))
    write_text(work / "summary.csv", _csv([{k: v for k, v in s.items() if k != "validators"} for s in summary]))
    write_text(work / "summary.md", table + "\n")
    write_text(work / "validators.csv", _csv(_validator_rows(runs)))
    write_json(work / "compare.json", {"runs": runs, "summary": summary})
    if panels:
        from ..evaluate.plots import embedding_png

        embedding_png(panels, work / "embedding.png",
                      title=f"{embedding.upper()} of {cfg.data.name or cfg.data.path} -> "
                            f"{cfg.target.name or cfg.target.path} features")
    from ..report import finish_compare_folder

    finish_compare_folder(work, device=cfg.train.device)  # the report hook: environment.json, report.html
    out = folder.finalize()
    return CompareResult(out, runs, summary, table)


def compare_one(params: dict[str, Any], source: Any, target: Any, target_eval: Any, max_points: int
                ) -> tuple[dict[str, Any], tuple[Any, Any, Any, Any]]:
    """One method and seed of a comparison (a parallel worker's job): fit, score, and the features of the plot."""
    from ..adaptation.divergence import a_distance, model_features
    from ..api import TransferClassifier

    t0 = time.perf_counter()
    method, seed = params["method"], params["seed"]
    est = TransferClassifier(**params)
    est.fit(source, target=target)
    row: dict[str, Any] = {"method": method, "seed": seed}
    if target_eval is not None:
        row["target_accuracy"] = est.evaluate(target_eval)["accuracy"]
    if source.test is not None:
        row["source_accuracy"] = est.evaluate(source.test)["accuracy"]
    fs, ys = model_features(est.model_, source.test or source.train, max_samples=max_points, seed=seed)
    ft, yt = model_features(est.model_, target.test or target.train, max_samples=max_points, seed=seed)
    row["a_distance"] = a_distance(fs, ft, seed=seed)
    row["best_epoch"] = est.fit_result_.best_epoch
    row["validators"] = validator_choices(est.history_)
    row["seconds"] = time.perf_counter() - t0
    return row, (fs, ft, ys, yt)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds per method, and the paired target-accuracy difference to source-only."""
    by_method: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        by_method.setdefault(r["method"], {})[r["seed"]] = r
    base = by_method.get(BASELINE, {})
    out = []
    for method, by_seed in by_method.items():
        rows = list(by_seed.values())
        s: dict[str, Any] = {"method": method, "seeds": len(rows)}
        for key in ("target_accuracy", "source_accuracy", "a_distance", "seconds"):
            vals = [r[key] for r in rows if key in r]
            if vals:
                s[f"{key}_mean"], s[f"{key}_std"] = _mean_std(vals)
        common = sorted(set(by_seed) & set(base))
        if method != BASELINE and common and all("target_accuracy" in by_seed[k] for k in common):
            d = [by_seed[k]["target_accuracy"] - base[k]["target_accuracy"] for k in common]
            s["gain_vs_source_only_mean"], s["gain_vs_source_only_std"] = _mean_std(d)
        names = sorted({n for r in rows for n in (r.get("validators") or {})})
        s["validators"] = {
            n: {k: statistics.fmean(r["validators"][n][k] for r in rows if n in (r.get("validators") or {}))
                for k in ("epoch", "oracle_epoch", "target_accuracy", "gap")}
            for n in names
        }
        out.append(s)
    return out


def summary_markdown(summary: list[dict[str, Any]], monitor: str) -> str:
    """The summary as a Markdown table (percentages, mean +- std over seeds)."""
    def pm(s: dict[str, Any], key: str, scale: float = 100.0, digits: int = 1, sign: str = "") -> str:
        if f"{key}_mean" not in s:
            return "—"
        m, sd = s[f"{key}_mean"] * scale, s[f"{key}_std"] * scale
        return f"{m:{sign}.{digits}f} ± {sd:.{digits}f}" if not math.isnan(sd) else f"{m:{sign}.{digits}f}"

    lines = ["| method | seeds | target acc % | Δ vs source-only (paired) | source acc % | A-distance | s / run |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        gain = pm(s, "gain_vs_source_only", sign="+")
        lines.append(f"| {s['method']} | {s['seeds']} | {pm(s, 'target_accuracy')} | {gain} | "
                     f"{pm(s, 'source_accuracy')} | {pm(s, 'a_distance', 1.0, 2)} | {pm(s, 'seconds', 1.0, 0)} |")
    vrows = [(s["method"], name, v) for s in summary for name, v in (s.get("validators") or {}).items()]
    if vrows:
        lines += ["", "Choosing the epoch without target labels (mean over seeds; epochs are 1-based):", "",
                  "| method | validator | chosen epoch | oracle epoch | target acc % at chosen | gap to oracle |",
                  "|---|---|---|---|---|---|"]
        for method, name, v in vrows:
            lines.append(f"| {method} | {name} | {v['epoch']:.1f} | {v['oracle_epoch']:.1f} | "
                         f"{100 * v['target_accuracy']:.1f} | {100 * v['gap']:.1f} |")
    lines.append("")
    lines.append(f"Model kept per run: the epoch chosen by `train.monitor = {monitor}`; target labels are used only "
                 "for scoring.")
    return "\n".join(lines)


def _validator_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        for name, v in (r.get("validators") or {}).items():
            rows.append({"method": r["method"], "seed": r["seed"], "validator": name, **v})
    return rows


def _flat(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in r.items() if k != "validators"}
    for name, v in (r.get("validators") or {}).items():
        out[f"{name}_epoch"] = v["epoch"]
        out[f"{name}_gap"] = v["gap"]
    return out


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()
