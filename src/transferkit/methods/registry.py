"""The method registry: name -> :class:`~transferkit.methods.base.Method` subclass.

A method file registers itself with ``@register``; :func:`get_method` imports the built-in method modules on first
use, so adding a method is one file plus one line in ``_BUILTIN_MODULES``.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from ..errors import ConfigError

_REGISTRY: dict[str, type] = {}
_BUILTIN_MODULES = (
    "finetune", "feature_heads", "l2sp", "delta", "bss", "lwf", "lora", "bitfit", "soft_targets",
    "domain_baselines", "dann", "cdan", "dan", "coral", "mcc", "self_training",
)
_loaded = False


def register(cls: type) -> type:
    """Class decorator: add a Method subclass under its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for mod in _BUILTIN_MODULES:
            importlib.import_module(f"{__package__}.{mod}")
        _loaded = True


def available_methods() -> dict[str, str]:
    """Registered method names and their one-line summaries."""
    _load_builtins()
    return {name: cls.summary for name, cls in sorted(_REGISTRY.items())}


def get_method_class(name: str) -> type:
    """The Method subclass registered as ``name``; a ConfigError with the closest name otherwise."""
    _load_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, sorted(_REGISTRY), n=1, cutoff=0.4)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"Unknown method '{name}'; {hint}available methods: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def create_method(name: str, params: dict[str, Any] | None = None) -> Any:
    """Instantiate method ``name`` with validated ``params``."""
    from .base import build_params

    cls = get_method_class(name)
    return cls(build_params(cls, params or {}))
