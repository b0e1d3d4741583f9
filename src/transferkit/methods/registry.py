"""The method registry: name -> :class:`~transferkit.methods.base.Method` subclass.

Built-in methods are a static table, name -> ``"module:Class"`` inside this package, so looking one method up
imports its module and what that module needs, not every method (and with them torchvision transforms,
scikit-learn, peft ...): a ``probe`` fit does not pay for DANN. Adding a built-in method is one file plus one line in
:data:`BUILTIN_METHODS`. A third-party method registers itself at run time with ``@register``; listing every method
(:func:`available_methods`) imports them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any

from ..errors import ConfigError

#: Built-in methods: name -> "module:Class", the module relative to this package.
BUILTIN_METHODS: dict[str, str] = {
    "finetune": "finetune:FineTune",
    "linear-probe": "finetune:LinearProbe",
    "freeze-unfreeze": "finetune:FreezeUnfreeze",
    "probe": "feature_heads:Probe",
    "mlp-head": "feature_heads:MLPHead",
    "l2-sp": "l2sp:L2SP",
    "delta": "delta:Delta",
    "bss": "bss:BSS",
    "lwf": "lwf:LwF",
    "lora": "lora:LoRA",
    "bitfit": "bitfit:BitFit",
    "soft-targets": "soft_targets:SoftTargets",
    "kd": "kd:KD",
    "fitnets": "fitnets:FitNets",
    "attention": "attention_transfer:AttentionTransfer",
    "rkd": "rkd:RKD",
    "dist": "dist:DIST",
    "seed-distil": "seed_distil:SEEDDistil",
    "source-only": "domain_baselines:SourceOnly",
    "target-oracle": "domain_baselines:TargetOracle",
    "dann": "dann:DANN",
    "cdan": "cdan:CDAN",
    "cdan-e": "cdan:CDANE",
    "dan": "dan:DAN",
    "coral": "coral:CORAL",
    "mcc": "mcc:MCC",
    "mdd": "mdd:MDD",
    "mcd": "mcd:MCD",
    "self-training": "self_training:SelfTraining",
}

_REGISTRY: dict[str, type] = {}  # the classes imported so far: built-in ones looked up, third-party ones registered


def register(cls: type) -> type:
    """Class decorator: add a Method subclass under its ``name`` (built-in modules use it too, harmlessly)."""
    builtin = BUILTIN_METHODS.get(cls.name)
    if builtin is not None and f"{__package__}.{builtin}" != f"{cls.__module__}:{cls.__qualname__}":
        raise ValueError(f"method name {cls.name!r} is a built-in method's; choose another name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    """Every method name, built-in or registered, without importing any method module."""
    return sorted(set(BUILTIN_METHODS) | set(_REGISTRY))


def available_methods() -> dict[str, str]:
    """Every method name and its one-line summary (imports every method module)."""
    return {name: get_method_class(name).summary for name in method_names()}


def get_method_class(name: str) -> type:
    """The Method subclass called ``name``, importing only its module; a ConfigError with the closest name otherwise."""
    cls = _REGISTRY.get(name)
    if cls is None and name in BUILTIN_METHODS:
        module, _, attr = BUILTIN_METHODS[name].partition(":")
        cls = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
        _REGISTRY[name] = cls
    if cls is None:
        names = method_names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.4)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"Unknown method '{name}'; {hint}available methods: {', '.join(names)}.")
    return cls


def create_method(name: str, params: dict[str, Any] | None = None) -> Any:
    """Instantiate method ``name`` with ``params`` checked once: keys, types and each field's declared constraint."""
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
