"""The method registry: name -> :class:`~transferkit.methods.base.Method` subclass.

A method file registers itself with ``@register``; :func:`get_method` imports the built-in method modules on first
use, so adding a method is one file plus one line in ``_BUILTIN_MODULES``.
"""

from __future__ import annotations

import dataclasses
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
    check_param_keys(cls, params or {})
    return cls(build_params(cls, params or {}))


def check_param_keys(cls: type, params: dict[str, Any]) -> None:
    """Refuse a ``method_params`` key the method does not have: one sentence with its valid keys and the closest.

    The one place every method's parameters pass through, so every method gets the same remedy; the values are
    then checked by the method's ``Params`` dataclass (types and ranges).
    """
    if not isinstance(params, dict):
        return  # not a mapping at all: build_params says so
    valid = sorted(f.name for f in dataclasses.fields(cls.Params))
    unknown = [str(k) for k in params if k not in valid]
    if not unknown:
        return
    given = ", ".join(f"'model.method_params.{k}'" for k in unknown)
    if not valid:
        were, them = ("was", "it") if len(unknown) == 1 else ("were", "them")
        raise ConfigError(f"Method '{cls.name}' takes no method_params, but {given} {were} given; remove {them}.")
    key = unknown[0]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5) or [v for v in valid if v.lower() == key.lower()]
    hint = f"; did you mean 'model.method_params.{close[0]}'?" if close else "."
    raise ConfigError(
        f"Unknown config key 'model.method_params.{key}' for method '{cls.name}' "
        f"(its keys are: {', '.join(valid)}){hint}"
    )
