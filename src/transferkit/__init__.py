"""transferkit: transfer learning on PyTorch, offline and honest.

The public API is imported lazily so that ``transferkit --help`` and ``import transferkit`` stay fast (torch is
loaded only when a model is built).
"""

from __future__ import annotations

from typing import Any

from .version import __version__

__all__ = ["TransferClassifier", "RunConfig", "load_data", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "TransferClassifier":
        from .api import TransferClassifier

        return TransferClassifier
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    if name == "load_data":
        from .data import load_data

        return load_data
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
