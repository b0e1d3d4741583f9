"""The run configuration: one typed schema shared by the YAML files, the CLI and the Python API.

A run is ``RunConfig(data, model, train, out)``, plus an optional ``target`` (a :class:`DataConfig` of the target
domain for domain adaptation: its training split is used without labels; its labels, when it has them, only feed
the ``target_accuracy`` report column and the final target metrics). YAML files and ``--set section.key=value``
overrides are checked against the dataclasses below: an unknown key is refused with the closest valid key as a
suggestion, and values are coerced to the declared type (so ``--set train.lr=3e-4`` works) or refused with a
sentence naming the key. What values a setting takes (a range, choices) is declared once, in its field's metadata
(``field(default=1e-3, metadata=param(gt=0))``), and :func:`check_fields` enforces it wherever settings are built:
config files, overrides, the estimator's hyperparameters and every method's ``Params`` (``model.method_params``).

The estimator :class:`transferkit.TransferClassifier` takes the fields of :class:`ModelConfig` and
:class:`TrainConfig` as its (flat) hyperparameters, which is what makes ``sklearn.base.clone`` work.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


# --- declared constraints: one home for every rule about one setting's value ---------------------------------------
@dataclass(frozen=True)
class Constraint:
    """What values one field of a settings dataclass takes, declared next to the field (see :func:`param`).

    A range (``ge``/``gt``/``le``/``lt``), a set of ``choices``, or a ``check`` callable that returns ``None`` for a
    good value and otherwise what the value must be ("a list of block indices"; it may also raise its own
    ConfigError). ``says`` replaces the generated description of a range when the field needs a word more ("0 (off)
    or positive"); ``required`` is the whole sentence for a field that must be given (``None`` or empty otherwise).
    ``None`` passes every other test: it means "off" or "the default" wherever a field allows it.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None
    says: str | None = None
    required: str | None = None

    def problem(self, value: Any, key: str) -> str | None:
        """The one-sentence ConfigError message for ``value`` of setting ``key``, or ``None`` when it is allowed."""
        if value is None or (self.required and value in ("", [], {})):
            return self.required
        if self.choices is not None and value not in self.choices:
            return f"'{key}' is '{value}' but must be one of: {', '.join(_word(c) for c in self.choices)}."
        if self.check is not None:
            wanted = self.check(value)
            return f"'{key}' must be {wanted}, not {value!r}." if wanted else None
        if not self._in_range(value):
            return f"'{key}' must be {self.says or self._range_words()}, not {value}."
        return None

    def _in_range(self, v: Any) -> bool:
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def _range_words(self) -> str:
        low = (f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None)
        high = (f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None)
        if low and high:
            return f"in {low}, {high}"
        if self.gt == 0 and high is None:
            return "a positive number"
        if self.ge == 0 and high is None:
            return "0 or positive"
        if low:
            return f"at least {self.ge:g}" if self.ge is not None else f"greater than {self.gt:g}"
        return f"at most {self.le:g}" if self.le is not None else f"less than {self.lt:g}"

    def violation(self) -> Any:
        """A value this constraint refuses (for tests that prove every declared rule is enforced)."""
        if self.required is not None:
            return None
        if self.choices is not None:
            return "not-one-of-the-choices"
        if self.check is not None:
            return object()
        for bound, step in ((self.ge, -1), (self.gt, 0), (self.le, 1), (self.lt, 0)):
            if bound is not None:
                return bound + step
        raise ValueError("a constraint without a rule")


def param(**rules: Any) -> dict[str, Constraint]:
    """Field metadata declaring what a setting accepts: ``field(default=1.0, metadata=param(ge=0))``.

    The rules are those of :class:`Constraint`; :func:`check_fields` applies them when the settings are built from
    a config file, ``--set`` overrides, estimator hyperparameters or ``method_params``.
    """
    return {_CONSTRAINT: Constraint(**rules)}


_CONSTRAINT = "transferkit.constraint"


def constraint_of(f: dataclasses.Field) -> Constraint | None:
    """The constraint declared on dataclass field ``f`` (``None`` when it declares none)."""
    return f.metadata.get(_CONSTRAINT)


def check_fields(obj: Any, prefix: str) -> None:
    """Refuse the first field of dataclass ``obj`` whose value breaks its declared constraint (one sentence).

    ``prefix`` names the section in messages (``train``, ``model.method_params``). A dataclass whose rules relate
    two of its fields declares them in a ``check_together(prefix)`` method, called after the per-field rules.
    """
    for f in dataclasses.fields(obj):
        c = constraint_of(f)
        message = c.problem(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name) if c else None
        if message:
            raise ConfigError(message)
    together = getattr(obj, "check_together", None)
    if together is not None:
        together(prefix)


def _word(choice: Any) -> str:
    """A choice as a config file spells it (``None`` is ``null``)."""
    return "null" if choice is None else str(choice)


POSITIVE = param(gt=0)
NON_NEGATIVE = param(ge=0)
FRACTION = param(ge=0, lt=1)  # in [0, 1)
OFF_OR_POSITIVE = param(ge=0, says="0 (off) or positive")

#: monitors that need target data (and, for the iw/dev ones, a source validation split)
TARGET_MONITORS = ("iw_val_accuracy", "iw_val_loss", "dev_val_loss", "snd", "im", "target_accuracy")
#: monitors read from importance weights of the source validation split (a cross-fitted source-vs-target classifier)
IW_MONITORS = ("iw_val_accuracy", "iw_val_loss", "dev_val_loss")


@dataclass
class DataConfig:
    """Where the data is and how it is split."""

    name: str | None = None  # a built-in data set (transferkit datasets lists them)
    path: str | None = None  # an image folder, or a CSV/TSV/JSONL file
    text_column: str = "text"
    label_column: str = "label"
    val_fraction: float = field(default=0.1, metadata=FRACTION)  # for sources without their own val split
    test_fraction: float = field(default=0.2, metadata=FRACTION)  # for sources without their own test split
    split_seed: int = 0
    # keep at most this many training examples (stratified, seeded)
    train_size: int | None = field(default=None, metadata=POSITIVE)
    # keep exactly k training examples per class (few-shot)
    per_class: int | None = field(default=None, metadata=POSITIVE)


@dataclass
class ModelConfig:
    """The source model, the new head and the transfer method."""

    backbone: str = "mobilenet_v2.imagenet"
    weights: str | None = None  # a local weights file (.safetensors, or a torch state dict) for the backbone
    pretrained: bool = True  # False: same architecture, random initialisation
    method: str = "finetune"
    method_params: dict[str, Any] = field(default_factory=dict)
    head: str = field(default="linear", metadata=param(choices=("linear", "mlp")))
    head_hidden: int = field(default=512, metadata=POSITIVE)
    head_dropout: float = field(default=0.0, metadata=FRACTION)
    image_size: int | None = field(default=None, metadata=POSITIVE)  # None: the backbone's own input size
    # stochastic depth (largest per-block drop rate) where the backbone has it (timm, some tv)
    drop_path: float = field(default=0.0, metadata=FRACTION)


@dataclass
class TrainConfig:
    """The optimisation recipe, shared by every method that trains through the loop."""

    epochs: int = field(default=3, metadata=POSITIVE)
    batch_size: int = field(default=64, metadata=POSITIVE)
    lr: float = field(default=1e-3, metadata=POSITIVE)
    # the new head learns this many times faster than the backbone
    head_lr_scale: float = field(default=10.0, metadata=POSITIVE)
    optimizer: str = field(default="adamw", metadata=param(choices=("adamw", "sgd")))
    momentum: float = field(default=0.9, metadata=FRACTION)
    weight_decay: float = field(default=1e-4, metadata=NON_NEGATIVE)
    schedule: str = field(default="cosine", metadata=param(choices=("cosine", "plateau", "constant")))
    warmup_fraction: float = field(default=0.05, metadata=FRACTION)  # share of all steps spent warming up linearly
    freeze_blocks: int = field(default=0, metadata=NON_NEGATIVE)  # keep the first k backbone blocks frozen
    # deprecated: freeze-unfreeze's own setting is model.method_params.head_epochs; when set, this one is used for
    # it (with a FutureWarning), so that old configs keep their meaning
    head_epochs: int | None = field(default=None, metadata=NON_NEGATIVE)
    # per-block LR multiplier, counted down from the top block (1.0: off)
    layer_decay: float = field(default=1.0, metadata=POSITIVE)
    label_smoothing: float = field(default=0.0, metadata=FRACTION)
    # mixup of the labelled batch with soft targets, Beta(alpha, alpha); 0: off
    mixup_alpha: float = field(default=0.0, metadata=OFF_OR_POSITIVE)
    # cutmix (images only), Beta(alpha, alpha); with mixup too, one of them per batch
    cutmix_alpha: float = field(default=0.0, metadata=OFF_OR_POSITIVE)
    augment: str = field(default="none", metadata=param(choices=("none", "light", "standard", "strong")))
    grad_clip: float | None = field(default=1.0, metadata=POSITIVE)
    # patience in epochs on `monitor`; None: off
    early_stopping: int | None = field(
        default=None, metadata=param(ge=1, says="at least 1 epoch (or null for no early stopping)"))
    # val_accuracy | val_macro_f1 | val_loss | last (keep the last epoch, the usual protocol of domain adaptation
    # papers), or with a target (see transferkit.adaptation.validators):
    # iw_val_accuracy | iw_val_loss | dev_val_loss | snd | im (no target labels) | target_accuracy (oracle, reports)
    monitor: str = field(default="val_accuracy", metadata=param(
        choices=("val_accuracy", "val_macro_f1", "val_loss", "last", *TARGET_MONITORS)))
    mixed_precision: str = field(default="auto", metadata=param(choices=("auto", "no", "fp16", "bf16")))
    device: str = field(default="auto", metadata=param(choices=("auto", "cpu", "cuda")))
    seed: int = 0
    deterministic: bool = True
    num_workers: int = field(default=0, metadata=NON_NEGATIVE)
    progress: bool = True
    # domain adaptation (with a target; see transferkit.adaptation.selection)
    # none | weight | keep | tradaboost: weigh / filter the source by target-likeness
    source_selection: str = field(default="none", metadata=param(choices=("none", "weight", "keep", "tradaboost")))
    # keep: the most target-like fraction of the source that is kept
    selection_fraction: float = field(default=0.5, metadata=param(gt=0, le=1))
    # weight / tradaboost: largest weight (weights have mean 1)
    selection_clip: float = field(default=10.0, metadata=param(ge=1, says="at least 1 (the weights have mean 1)"))
    # auto | features | inputs: what the source-vs-target classifier sees (auto: inputs for tabular data, frozen
    # backbone features otherwise)
    selection_on: str = field(default="auto", metadata=param(choices=("auto", "features", "inputs")))
    # 0: unsupervised; k > 0: k labelled target examples per class (seeded)
    target_labels_per_class: int = field(default=0, metadata=param(ge=0, says="0 (no target labels) or positive"))
    # the importance-weighted validators (iw_val_accuracy, iw_val_loss, dev_val_loss) need a cross-fitted
    # source-vs-target classifier (seconds to tens of seconds); null: only when train.monitor is one of them; true:
    # always (what `transferkit compare` uses for its validator table); false: never
    iw_validators: bool | None = None

    def check_together(self, section: str) -> None:
        """The rules that relate two settings: TrAdaBoost learns from a few labelled target examples; an
        importance-weighted monitor needs the importance-weighted validators."""
        if self.iw_validators is False and self.monitor in IW_MONITORS:
            raise ConfigError(
                f"'{section}.monitor' {self.monitor} is an importance-weighted validator but "
                f"{section}.iw_validators is false; set it to true or null, or choose another monitor."
            )
        if self.source_selection == "tradaboost" and self.target_labels_per_class == 0:
            raise ConfigError(
                f"'{section}.source_selection' tradaboost needs a few labelled target examples; set "
                f"{section}.target_labels_per_class to k > 0."
            )


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
    # the section that names the keys in messages: from the key path, or for a section built alone (the estimator's
    # flat hyperparameters go through split_hyperparameters) from its class
    check_fields(obj, path or _SECTION_OF.get(cls, ""))
    return obj


_SECTION_OF: dict[type, str] = {ModelConfig: "model", TrainConfig: "train", DataConfig: "data"}


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
