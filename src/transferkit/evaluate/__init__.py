"""Evaluation: metrics from predicted probabilities, report figures, and the files a person reads after a run.

Pure numpy / scikit-learn / matplotlib (no torch), so it also scores predictions made elsewhere. Submodules are
imported lazily: the training loop needs only :mod:`.metrics`, and importing matplotlib for it would slow every
``import`` of the loop for nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .metrics import classification_metrics, validate_predictions
    from .plots import confusion_matrix_png, embedding_png, learning_curves_png
    from .predictions import format_metrics_table, write_metrics_json, write_predictions_csv

__all__ = [
    "classification_metrics",
    "validate_predictions",
    "confusion_matrix_png",
    "embedding_png",
    "learning_curves_png",
    "write_predictions_csv",
    "write_metrics_json",
    "format_metrics_table",
]

_WHERE = {
    "classification_metrics": "metrics",
    "validate_predictions": "metrics",
    "embedding_png": "plots",
    "confusion_matrix_png": "plots",
    "learning_curves_png": "plots",
    "write_predictions_csv": "predictions",
    "write_metrics_json": "predictions",
    "format_metrics_table": "predictions",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
