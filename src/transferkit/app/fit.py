"""``transferkit fit`` as a function: data -> the fit pipeline -> a complete, reloadable run folder.

The run folder holds: ``config.yaml`` (resolved), ``metrics.json`` (``{"val": {...}, "test": {...}}``, each with at
least accuracy and macro_f1; with a labelled ``target:`` also ``"target_val"`` / ``"target_test"``),
``history.json`` and ``history.csv`` (per epoch), ``confusion_matrix.png`` and ``confusion_matrix.json`` (on the
source test split, else val), ``learning_curves.png``, ``model.safetensors`` + ``model.json``
(enough to rebuild the model with no training config) and ``summary.json`` (timings, parameter counts, method, and
with ``train.source_selection`` the selection's diagnostics; ``domain_classifier_seconds`` when the source-vs-target
classifier was fitted). With a target, the history also holds the label-free validators of every epoch (see
:mod:`transferkit.adaptation.validators`; the importance-weighted ones only when something reads them, see
:mod:`transferkit.adaptation.plan`).

Launched in several processes (``torchrun ... -m transferkit fit``, or any launcher that sets ``RANK``), every
process trains (the gradient exchange needs them all) but only rank 0 logs, evaluates and writes the run folder; the
others return an empty :class:`RunResult` for the same folder.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig


@dataclass
class RunResult:
    """Where the run folder is and what it measured."""

    out: Path
    metrics: dict[str, dict[str, Any]]
    summary: dict[str, Any]


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a multi-process launch (torchrun / accelerate set ``RANK``)."""
    return int(os.environ.get("RANK", "0")) == 0


def log(msg: str) -> None:
    if is_main_process():
        print(msg, file=sys.stderr, flush=True)


#: ``after_write(work, est, splits, metrics) -> dict | None``: a command's own files, written into the partial run
#: folder after the usual ones (so they appear atomically with it); its dict joins ``summary.json``. ``distil`` uses it.
AfterWrite = Callable[[Path, Any, Any, dict[str, dict[str, Any]]], "dict[str, Any] | None"]


def run_fit(cfg: RunConfig, *, resume: bool = False, after_write: AfterWrite | None = None, model: Any = None
            ) -> RunResult:
    """Train as ``cfg`` says and write the run folder atomically (see the module docstring).

    ``model``: a built :class:`~transferkit.model.TransferModel` to go on training instead of one built from
    ``cfg.model.backbone`` (how ``transferkit compress`` recovers a pruned model; see ``FitPipeline.prepare``).

    The run folder is locked for the whole run (a second run into it is refused), and everything that can be
    checked (the folder's state, the data, the method and its parameters, the backbone and its weights file) is
    checked before the ``.partial`` folder exists; a user error after that removes it unless it holds a
    checkpoint to resume from (see :class:`~transferkit.app.runs.RunFolder`).
    """
    from .runs import RunFolder

    folder = RunFolder(cfg.out, overwrite=cfg.overwrite, resume=resume)
    if not is_main_process():
        # rank 0 alone owns (locks, writes) the folder
        return _fit_in(folder, cfg, resume=resume, main=False, model=model)
    with folder.hold():
        return _fit_in(folder, cfg, resume=resume, main=True, after_write=after_write, model=model)


def _fit_in(folder: Any, cfg: RunConfig, *, resume: bool, main: bool, after_write: AfterWrite | None = None,
            model: Any = None) -> RunResult:
    """The run itself, inside ``folder``'s lock on the main process (see :func:`run_fit`)."""
    from ..api import TransferClassifier
    from ..data import load_data
    from ..pipeline import FitPipeline

    t0 = time.perf_counter()
    config = cfg.to_dict()
    if main:
        folder.check(config)  # refuse a clash with an existing or interrupted run before any work
    splits = load_data(cfg.data)
    sizes = {k: len(v) for k, v in splits.items()}
    log(f"data: {cfg.data.name or cfg.data.path} ({splits.modality}, {len(splits.classes)} classes, "
        + ", ".join(f"{k} {n}" for k, n in sizes.items()) + ")")
    target = load_data(cfg.target) if cfg.target is not None else None
    if target is not None:
        sizes.update({f"target_{k}": len(v) for k, v in target.items()})
        log(f"target: {cfg.target.name or cfg.target.path} ("
            + ", ".join(f"{k} {len(v)}" for k, v in target.items()) + "; train used without labels)")
    pipeline = FitPipeline(cfg.model, cfg.train)
    prepared = pipeline.prepare(splits, target=target, model=model)  # every check passes before the folder exists
    work = folder.start(config) if main else folder.partial

    log(prepared.describe(resume=resume))
    est = TransferClassifier.from_fitted(pipeline.run(prepared, checkpoint_dir=folder.checkpoint_dir, resume=resume))
    t_train = time.perf_counter() - t0
    if not main:
        return RunResult(folder.out, {}, {})

    metrics, probas = _evaluate_splits(est, splits, target)
    summary = _write_run_files(work, est, metrics, cfg, sizes, t0)
    if after_write is not None:
        extra = after_write(work, est, splits, metrics)
        if extra:
            from ..io import write_json

            summary.update(extra)
            write_json(work / "summary.json", summary)
    _write_report(work, est, splits, probas, cfg)
    out = folder.finalize()
    log(f"trained in {t_train:.0f} s; run folder: {out}")
    compact = {k: {m: v for m, v in d.items() if m != "confusion_matrix"} for k, d in metrics.items()}
    return RunResult(out, compact, summary)


def _evaluate_splits(est: Any, splits: Any, target: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Metrics on the source val/test splits (train when neither exists) and the labelled target val/test, and the
    predicted probabilities of the source splits (the report keeps the evaluated split's)."""
    from ..evaluate.metrics import classification_metrics

    metrics: dict[str, dict[str, Any]] = {}
    probas: dict[str, Any] = {}
    present = [(n, d) for n, d in (("val", splits.val), ("test", splits.test)) if d is not None and len(d)]
    for name, ds in present or [("train", splits.train)]:
        # what est.evaluate(ds) does (the splits share the model's classes), keeping the probabilities
        probas[name] = est.predict_proba(ds, cache=True)
        metrics[name] = classification_metrics(ds.labels, probas[name], est.classes_)
    if target is not None:
        for name, ds in (("target_val", target.val), ("target_test", target.test)):
            if ds is not None and len(ds) and ds.is_labelled:
                metrics[name] = est.evaluate(ds)
        if "target_test" in metrics:
            log(f"target test accuracy: {metrics['target_test']['accuracy']:.4f}")
    return metrics, probas


def _write_report(work: Path, est: Any, splits: Any, probas: dict[str, Any], cfg: RunConfig) -> None:
    """The report hook: record the shown split's predictions (a few thumbnails) and the environment, write
    ``report.html`` (see :mod:`transferkit.report`)."""
    from ..report import finish_run_folder

    shown = "test" if "test" in probas else next(iter(probas))
    finish_run_folder(work, split=shown, dataset=getattr(splits, shown), proba=probas[shown], classes=est.classes_,
                      device=cfg.train.device)


def _write_run_files(work: Path, est: Any, metrics: dict[str, dict[str, Any]], cfg: RunConfig,
                     sizes: dict[str, int], t0: float) -> dict[str, Any]:
    """Write the model, history, metrics, plots and summary into the partial folder; returns the summary."""
    from ..evaluate import confusion_matrix_png, learning_curves_png
    from ..io import write_json, write_text

    shown = "test" if "test" in metrics else next(iter(metrics))
    est.save(work)
    history = est.history_
    write_json(work / "history.json", history)
    write_text(work / "history.csv", _history_csv(history))
    compact = {k: {m: v for m, v in d.items() if m != "confusion_matrix"} for k, d in metrics.items()}
    write_json(work / "metrics.json", compact)
    cm = metrics[shown]["confusion_matrix"]
    write_json(work / "confusion_matrix.json", {"split": shown, "classes": est.classes_, "matrix": cm})
    confusion_matrix_png(cm, est.classes_, work / "confusion_matrix.png", title=f"Confusion matrix ({shown})")
    learning_curves_png(history, work / "learning_curves.png", best_epoch=est.fit_result_.best_epoch,
                        monitor=cfg.train.monitor)
    fr = est.fit_result_
    summary = {
        "method": est.method_, "backbone": cfg.model.backbone, "best_epoch": fr.best_epoch,
        "epochs_run": len(history), "stopped_early": fr.stopped_early, "train_seconds": round(fr.seconds, 2),
        "total_seconds": round(time.perf_counter() - t0, 2), "trainable_params": fr.trainable_params,
        "total_params": fr.total_params, "data_sizes": sizes,
    }
    if getattr(est, "selection_", None) is not None:
        summary["selection"] = est.selection_.summary()
    if "domain_classifier_seconds" in fr.extra:  # the source-vs-target classifier ran (selection, iw validators)
        summary["domain_classifier_seconds"] = round(fr.extra["domain_classifier_seconds"], 2)
    write_json(work / "summary.json", summary)
    return summary


def _history_csv(history: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    lines = [",".join(keys)]
    for row in history:
        lines.append(",".join("" if row.get(k) is None else f"{row[k]:.6g}" if isinstance(row[k], float)
                              else str(row[k]) for k in keys))
    return "\n".join(lines) + "\n"
