"""The run configuration: one typed schema shared by the YAML files, the CLI and the Python API.

A run is ``RunConfig(data, model, train, out)``, plus an optional ``target`` (a :class:`DataConfig` of the target
domain for domain adaptation: its training split is used without labels; its labels, when it has them, only feed
the ``target_accuracy`` report column and the final target metrics). YAML files and ``--set section.key=value``
overrides are checked against the dataclasses below: an unknown key is refused with the closest valid key as a
suggestion, and values are coerced to the declared type (so ``--set train.lr=3e-4`` works) or refused with a
sentence naming the key.

The estimator :class:`transferkit.TransferClassifier` takes the fields of :class:`ModelConfig` and
:class:`TrainConfig` as its (flat) hyperparameters, which is what makes ``sklearn.base.clone`` work.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass
class DataConfig:
    """Where the data is and how it is split."""

    name: str | None = None  # a built-in data set (transferkit datasets lists them)
    path: str | None = None  # an image folder, or a CSV/TSV/JSONL file
    text_column: str = "text"
    label_column: str = "label"
    val_fraction: float = 0.1  # for sources without their own val split
    test_fraction: float = 0.2  # for sources without their own test split
    split_seed: int = 0
    train_size: int | None = None  # keep at most this many training examples (stratified, seeded)
    per_class: int | None = None  # keep exactly k training examples per class (few-shot)


@dataclass
class ModelConfig:
    """The source model, the new head and the transfer method."""

    backbone: str = "mobilenet_v2.imagenet"
    weights: str | None = None  # a local weights file (.safetensors, or a torch state dict) for the backbone
    pretrained: bool = True  # False: same architecture, random initialisation
    method: str = "finetune"
    method_params: dict[str, Any] = field(default_factory=dict)
    head: str = "linear"  # linear | mlp
    head_hidden: int = 512
    head_dropout: float = 0.0
    image_size: int | None = None  # None: the backbone's own input size
    drop_path: float = 0.0  # stochastic depth (largest per-block drop rate) where the backbone has it (timm, some tv)


@dataclass
class TrainConfig:
    """The optimisation recipe, shared by every method that trains through the loop."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    head_lr_scale: float = 10.0  # the new head learns this many times faster than the backbone
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | plateau | constant
    warmup_fraction: float = 0.05  # share of all steps spent warming up linearly
    freeze_blocks: int = 0  # keep the first k backbone blocks frozen
    head_epochs: int = 1  # freeze-unfreeze: epochs with only the head training
    layer_decay: float = 1.0  # per-block LR multiplier, counted down from the top block (1.0: off)
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # mixup of the labelled batch with soft targets, Beta(alpha, alpha); 0: off
    cutmix_alpha: float = 0.0  # cutmix (images only), Beta(alpha, alpha); with mixup too, one of them per batch
    augment: str = "none"  # none | light | standard | strong
    grad_clip: float | None = 1.0
    early_stopping: int | None = None  # patience in epochs on `monitor`; None: off
    # val_accuracy | val_macro_f1 | val_loss | last (keep the last epoch, the usual protocol of domain adaptation
    # papers), or with a target (see transferkit.adaptation.validators):
    # iw_val_accuracy | iw_val_loss | dev_val_loss | snd | im (no target labels) | target_accuracy (oracle, reports)
    monitor: str = "val_accuracy"
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    deterministic: bool = True
    num_workers: int = 0
    progress: bool = True
    # domain adaptation (with a target; see transferkit.adaptation.selection)
    source_selection: str = "none"  # none | weight | keep | tradaboost: weigh / filter the source by target-likeness
    selection_fraction: float = 0.5  # keep: the most target-like fraction of the source that is kept
    selection_clip: float = 10.0  # weight / tradaboost: largest weight (weights have mean 1)
    selection_on: str = "auto"  # auto | features | inputs: what the source-vs-target classifier sees (auto: inputs
    #                             for tabular data, frozen backbone features otherwise)
    target_labels_per_class: int = 0  # 0: unsupervised; k > 0: k labelled target examples per class (seeded)


@dataclass
class RunConfig:
    """Everything one ``transferkit fit`` needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    target: DataConfig | None = None  # domain adaptation: the (unlabelled) target data
    out: str = "runs/latest"
    overwrite: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> RunConfig:
        return _build(cls, d, where)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "target": DataConfig}

#: monitors that need target data (and, for the iw/dev ones, a source validation split)
TARGET_MONITORS = ("iw_val_accuracy", "iw_val_loss", "dev_val_loss", "snd", "im", "target_accuracy")

CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("model", "head"): ("linear", "mlp"),
    ("train", "optimizer"): ("adamw", "sgd"),
    ("train", "schedule"): ("cosine", "plateau", "constant"),
    ("train", "augment"): ("none", "light", "standard", "strong"),
    ("train", "monitor"): ("val_accuracy", "val_macro_f1", "val_loss", "last", *TARGET_MONITORS),
    ("train", "source_selection"): ("none", "weight", "keep", "tradaboost"),
    ("train", "selection_on"): ("auto", "features", "inputs"),
    ("train", "mixed_precision"): ("auto", "no", "fp16", "bf16"),
    ("train", "device"): ("auto", "cpu", "cuda"),
}


def hyperparameter_names() -> list[str]:
    """The flat estimator hyperparameters: every field of ModelConfig and TrainConfig."""
    return [f.name for f in dataclasses.fields(ModelConfig)] + [f.name for f in dataclasses.fields(TrainConfig)]


def split_hyperparameters(params: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """Turn flat estimator keyword arguments into a validated (ModelConfig, TrainConfig) pair."""
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    m: dict[str, Any] = {}
    t: dict[str, Any] = {}
    for k, v in params.items():
        if k in model_keys:
            m[k] = v
        elif k in train_keys:
            t[k] = v
        else:
            raise ConfigError(f"Unknown hyperparameter '{k}'{_suggest(k, model_keys | train_keys)}.")
    return _build(ModelConfig, m, "model"), _build(TrainConfig, t, "train")


def load_yaml(path: str | Path) -> RunConfig:
    """Read a YAML run configuration and validate it.

    Every way the file itself can be wrong (missing, a folder, unreadable, not text, not YAML, empty, not a
    mapping) is a :class:`ConfigError` with one sentence; an empty file is refused rather than silently meaning
    "all defaults", which is what ``transferkit fit`` without a config file is for.
    """
    p = Path(path)
    raw = _parse_yaml(_read_config_text(p), p)
    if raw is None or raw == {}:
        raise ConfigError(
            f"Config file '{p}' is empty; write at least one section (data, model, train, target, out), or leave "
            "the file out and use --data/--backbone/--method to train with the defaults."
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"Config file '{p}' holds a {_yaml_kind(raw)} at the top, but it must hold a mapping of sections "
            "(data, model, train, target, out)."
        )
    return _build(RunConfig, raw, p.name)


def _read_config_text(p: Path) -> str:
    """The text of config file ``p`` (UTF-8, a byte-order mark allowed), or a ConfigError saying why not."""
    if p.is_dir():
        raise ConfigError(f"Config file '{p}' is a folder; give the path of a YAML file.")
    if not p.exists():
        raise ConfigError(f"Config file '{p}' does not exist; check the path.")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"Config file '{p}' cannot be read ({e.strerror or e}); check its permissions.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"Config file '{p}' is not a text file (byte {e.start} is not UTF-8); give a YAML run configuration."
        ) from None


def _parse_yaml(text: str, p: Path) -> Any:
    """``yaml.safe_load`` of a config file's text; a syntax error is one sentence with its line."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"Config file '{p}' is not valid YAML{where}; fix the syntax and try again.") from None
    except RecursionError:
        raise ConfigError(f"Config file '{p}' is nested too deeply to be a run configuration.") from None


def _yaml_kind(value: Any) -> str:
    """A plain word for the type of a parsed YAML value, for messages."""
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "text value"
    if isinstance(value, bool):
        return "true/false value"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def apply_overrides(cfg: RunConfig, overrides: list[str | tuple[str, Any]]) -> RunConfig:
    """Apply overrides and re-validate.

    An override is a ``"section.key=value"`` string (``--set``; the value is parsed as a YAML scalar, so
    ``train.lr=3e-4`` is a number) or a ``(key, value)`` pair whose value is taken as it is (the CLI's own flags:
    ``--out 0x10`` is the folder name ``0x10``, not the number 16).
    """
    d = cfg.to_dict()
    for item in overrides:
        key, value = item if isinstance(item, tuple) else _parse_override(item)
        parts = key.strip().split(".")
        if len(parts) > 1 and parts[0] in _OPTIONAL_SECTIONS and d.get(parts[0]) is None:
            d[parts[0]] = dataclasses.asdict(_OPTIONAL_SECTIONS[parts[0]]())  # first key set (target.name) creates it
        node = _override_parent(d, parts)
        node[parts[-1]] = value
    return _build(RunConfig, d, "--set")


def _parse_override(item: str) -> tuple[str, Any]:
    """Split ``section.key=value`` and parse the value as YAML (text that is not YAML stays text)."""
    import yaml

    key, eq, value = item.partition("=")
    if not eq or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"Override '{item}' must look like section.key=value (e.g. train.lr=3e-4).")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except (yaml.YAMLError, RecursionError):
        parsed = value
    return key, parsed


def _override_parent(d: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """The mapping of ``d`` that holds the key ``parts`` names; an unknown key gets the closest valid one."""
    node: Any = d
    for i, part in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        if part in node and not isinstance(node[part], dict):
            raise ConfigError(f"'{here}' is a single value, not a section; set it with --set {here}=VALUE.")
        if part not in node and _is_free_dict(parts[: i + 1]):
            raise ConfigError(f"'{here}' is a method parameter, which holds a value; set it with --set {here}=VALUE.")
        if part not in node:
            raise ConfigError(f"Unknown config key '{here}'{_suggest(part, set(node), '.'.join(parts[:i]))}.")
        node = node[part]
    last = parts[-1]
    if last not in node and not _is_free_dict(parts):
        key = ".".join(parts)
        raise ConfigError(f"Unknown config key '{key}'{_suggest(last, set(node), prefix='.'.join(parts[:-1]))}.")
    return node


_OPTIONAL_SECTIONS: dict[str, type] = {"target": DataConfig}


def _is_free_dict(parts: list[str]) -> bool:
    return len(parts) == 3 and parts[0] == "model" and parts[1] == "method_params"


def _suggest(key: str, options: set[str] | list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, sorted(options), n=1, cutoff=0.5)
    if close:
        full = f"{prefix}.{close[0]}" if prefix else close[0]
        return f"; did you mean '{full}'?"
    if options:
        return f"; valid keys are: {', '.join(sorted(options))}"
    return ""


def _build(cls: type, raw: dict[str, Any], where: str, path: str = "") -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"'{path or where}' must be a mapping of keys to values.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in fields:
            prefix = path
            raise ConfigError(f"Unknown config key '{full}' in {where}{_suggest(str(key), set(fields), prefix)}.")
        hint = hints[key]
        sub = _dataclass_in(hint)
        if sub is not None and value is None and _optional(hint):
            kwargs[key] = None
        elif sub is not None:
            kwargs[key] = value if isinstance(value, sub) else _build(sub, value or {}, where, full)
        else:
            kwargs[key] = _coerce(value, hint, full)
    obj = cls(**kwargs)
    # the section whose CHOICES apply: from the key path, or for a section built alone (the estimator's flat
    # hyperparameters go through split_hyperparameters) from its class
    section = path.split(".")[0] if path else _SECTION_OF.get(cls, "")
    for (sec, name), allowed in CHOICES.items():
        if sec == section and hasattr(obj, name) and getattr(obj, name) not in allowed:
            raise ConfigError(
                f"'{sec}.{name}' is '{getattr(obj, name)}' but must be one of: {', '.join(allowed)}."
            )
    if cls is DataConfig or cls is TrainConfig or cls is ModelConfig:
        _check_ranges(obj, section or cls.__name__.replace("Config", "").lower())
    return obj


_SECTION_OF: dict[type, str] = {ModelConfig: "model", TrainConfig: "train"}


#: the allowed range of every numeric field of the data, model and train sections: (test, what the sentence says).
#: ``None`` always passes (it means "off" or "the default"); booleans and text never reach these tests.
_RANGES: dict[str, tuple[Any, str]] = {
    **{name: (lambda v: v > 0, "a positive number") for name in (
        "epochs", "batch_size", "head_hidden", "image_size", "train_size", "per_class", "lr", "head_lr_scale",
        "layer_decay", "grad_clip")},
    **{name: (lambda v: v >= 0, "0 or positive") for name in (
        "weight_decay", "freeze_blocks", "head_epochs", "num_workers")},
    **{name: (lambda v: 0.0 <= v < 1.0, "in [0, 1)") for name in (
        "val_fraction", "test_fraction", "warmup_fraction", "head_dropout", "label_smoothing", "drop_path",
        "momentum")},
    **{name: (lambda v: v >= 0, "0 (off) or positive") for name in ("mixup_alpha", "cutmix_alpha")},
    "early_stopping": (lambda v: v >= 1, "at least 1 epoch (or null for no early stopping)"),
}


def _check_ranges(obj: Any, section: str) -> None:
    """Refuse a value outside its field's range in :data:`_RANGES`, naming the key, the range and the value."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        test = _RANGES.get(f.name)
        if test is not None and v is not None and not test[0](v):
            raise ConfigError(f"'{section}.{f.name}' must be {test[1]}, not {v}.")
    if isinstance(obj, TrainConfig):
        _check_selection(obj, section)


def _check_selection(obj: TrainConfig, section: str) -> None:
    if not 0.0 < obj.selection_fraction <= 1.0:
        raise ConfigError(f"'{section}.selection_fraction' must be in (0, 1], not {obj.selection_fraction}.")
    if obj.selection_clip < 1.0:
        raise ConfigError(
            f"'{section}.selection_clip' must be at least 1 (the weights have mean 1), not {obj.selection_clip}."
        )
    if obj.target_labels_per_class < 0:
        raise ConfigError(
            f"'{section}.target_labels_per_class' must be 0 (no target labels) or positive, not "
            f"{obj.target_labels_per_class}."
        )
    if obj.source_selection == "tradaboost" and obj.target_labels_per_class == 0:
        raise ConfigError(
            f"'{section}.source_selection' tradaboost needs a few labelled target examples; set "
            f"{section}.target_labels_per_class to k > 0."
        )


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass of a field typed ``SomeConfig`` or ``SomeConfig | None``; ``None`` for other fields."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        subs = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a) and isinstance(a, type)]
        if len(subs) == 1:
            return subs[0]
    return None


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if hint is Any:
        return value
    if origin is dict or hint is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping (key: value), not {value!r}.")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"'{key}' must be true or false, not {value!r}.")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"'{key}' must be a whole number, not {value!r}.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"'{key}' must be a whole number, not {value!r}.")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"'{key}' must be a number, not {value!r}.")
        number = _as_float(value)
        if number is None:
            raise ConfigError(f"'{key}' must be a number, not {value!r}.")
        if not math.isfinite(number):
            raise ConfigError(f"'{key}' must be a finite number, not {value!r}.")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"'{key}' must be a text value, not {value!r}.")
    return value


def _as_float(value: Any) -> float | None:
    """``value`` as a float (numbers and numeric text), or ``None`` when it is not a number."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
