"""``report.html``: a self-contained, offline page a person reads after a run, a comparison or an ensemble.

* :func:`write_report` / :func:`build_report`: the report of a folder from its files alone (``transferkit report
  FOLDER`` rebuilds it, also for folders written before reports existed: what is missing is left out with a note);
* :func:`finish_run_folder` / :func:`finish_compare_folder`: the hooks the app layer calls before a folder is
  renamed into place: they record what the report needs (predictions of the evaluated split with a few thumbnails,
  the environment) and write the report;
* :mod:`.registry`: folder kinds and their sections (small functions), so another kind of folder adds its own.

Layer: above ``api`` (it may read what the pipeline writes), below ``app`` (which calls the hooks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .builder import REPORT, ReportContext, build_report, write_report
from .record import record_environment, record_predictions
from .registry import register_kind, section

__all__ = ["REPORT", "ReportContext", "build_report", "write_report", "finish_run_folder", "finish_compare_folder",
           "finish_ensemble_folder",
           "record_environment", "record_predictions", "register_kind", "section"]


def finish_run_folder(folder: str | os.PathLike[str], *, split: str | None = None, dataset: Any = None,
                      proba: Any = None, classes: Sequence[str] | None = None, device: str = "auto") -> Path:
    """Record the predictions of ``split`` (when given) and the environment in ``folder``, then write its report."""
    if split is not None and dataset is not None and proba is not None and dataset.is_labelled:
        record_predictions(folder, split, dataset, proba, classes if classes is not None else dataset.classes)
    record_environment(folder, device)
    return write_report(folder)


def finish_ensemble_folder(folder: str | os.PathLike[str], *, device: str = "auto") -> Path:
    """Record the environment in an ensemble folder and write its report."""
    record_environment(folder, device)
    return write_report(folder)


def finish_compare_folder(folder: str | os.PathLike[str], *, device: str = "auto") -> Path:
    """Record the environment in a comparison folder and write its report."""
    record_environment(folder, device)
    return write_report(folder)
