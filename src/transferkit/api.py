"""The public Python API: :class:`TransferClassifier`, a scikit-learn-style estimator.

    clf = TransferClassifier(backbone="mobilenet_v2.imagenet", method="finetune", epochs=3, image_size=64)
    clf.fit(load_data(DataConfig(name="animal-mnist")))
    clf.evaluate(splits.test)["accuracy"]
    clf.save("model/"); TransferClassifier.load("model/").predict(paths)

Hyperparameters are the fields of :class:`~transferkit.config.ModelConfig` and
:class:`~transferkit.config.TrainConfig` (one schema with the YAML files and the CLI); ``get_params`` /
``set_params`` follow scikit-learn's contract, so ``sklearn.base.clone`` works.

Domain adaptation: ``clf.fit(source_splits, target=target_splits)``. The target's training split reaches the
method without labels (``ctx.extra["target"]``); with ``target_labels_per_class=k`` also k labelled target examples
per class (``ctx.extra["target_labelled"]``); only a method flagged ``uses_target_labels`` (the ``target-oracle``
baseline) gets the labelled target training split. ``source_selection`` weighs or filters the source first (see
:mod:`transferkit.adaptation.selection`), and the label-free validators of :mod:`transferkit.adaptation.validators`
are computed every epoch (history columns ``iw_val_accuracy``, ``iw_val_loss``, ``dev_val_loss``, ``snd``, ``im``,
and ``target_accuracy`` when the target has labels), so ``monitor`` may name them.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .config import (
    TARGET_MONITORS,
    ModelConfig,
    TrainConfig,
    hyperparameter_names,
    split_hyperparameters,
)
from .data.base import Dataset, Splits
from .data.coerce import as_dataset, as_splits
from .data.coerce import expand_image_paths as _expand_image_paths  # noqa: F401 - used by the CLI
from .errors import ConfigError, DataError, RunError


class TransferClassifier:
    """Transfer a pretrained backbone to a new classification task with any registered method."""

    def __init__(self, **params: Any) -> None:
        defaults = {**_defaults(ModelConfig), **_defaults(TrainConfig)}
        split_hyperparameters(params)  # validates names and types now, not at fit time
        for name in hyperparameter_names():
            setattr(self, name, params[name] if name in params else defaults[name])

    # --- scikit-learn estimator contract ------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """All hyperparameters, as given to (or defaulted by) the constructor."""
        return {name: getattr(self, name) for name in hyperparameter_names()}

    def set_params(self, **params: Any) -> TransferClassifier:
        """Change hyperparameters (validated like the constructor's); returns ``self``."""
        split_hyperparameters({**self.get_params(), **params})
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        defaults = {**_defaults(ModelConfig), **_defaults(TrainConfig)}
        changed = {k: v for k, v in self.get_params().items() if v != defaults[k]}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"TransferClassifier({args})"

    @property
    def configs(self) -> tuple[ModelConfig, TrainConfig]:
        """The validated (ModelConfig, TrainConfig) of the current hyperparameters."""
        return split_hyperparameters(self.get_params())

    # --- training ---------------------------------------------------------------------------------------
    def fit(
        self,
        train: Any,
        y: Any = None,
        *,
        val: Any = None,
        target: Any = None,
        extra: dict[str, Any] | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> TransferClassifier:
        """Train on ``train`` (a Dataset, Splits, data set name, path, or arrays ``X, y``); returns ``self``.

        With a :class:`Splits` its ``val`` split chooses the best epoch (early stopping, best checkpoint) unless
        ``val`` is given. ``target`` (a Dataset, Splits, name or path) is the target domain of domain adaptation:
        its training split is used without labels; its labels (when present) only give the ``target_accuracy``
        report column (on its val split, else its train split), and the oracle method's training data. ``extra``
        holds further data sets a method needs.
        """
        prepared = self._prepare_fit(train, y, val=val, target=target, extra=extra)
        return self._fit_prepared(prepared, checkpoint_dir=checkpoint_dir, resume=resume)

    def _prepare_fit(self, train: Any, y: Any = None, *, val: Any = None, target: Any = None,
                     extra: dict[str, Any] | None = None) -> _PreparedFit:
        """Everything of :meth:`fit` that can fail on the user's input, before any training or output.

        Validates the data, the settings, the method and its parameters; builds the backbone (loading
        ``model.weights`` into it) and the model; selects the source for domain adaptation. ``transferkit fit``
        calls this before it creates the run folder, so a mistake leaves nothing behind.
        """
        from .methods import create_method, get_method_class
        from .model import TransferModel
        from .train.seeding import seed_everything

        splits = as_splits(train, y)
        val_ds = as_dataset(val) if val is not None else splits.val
        train_ds = splits.train
        if not train_ds.is_labelled:
            raise DataError("The training data has no labels; give labelled data to fit().")
        model_cfg, train_cfg = self.configs
        _check_label_set(train_ds, val_ds)
        extra_ds = {k: as_dataset(v) for k, v in (extra or {}).items()}
        if target is None and "target" in extra_ds:
            target = extra_ds.pop("target")
        target_splits = _target_splits(target, train_ds) if target is not None else None
        method_cls = get_method_class(model_cfg.method)
        _check_adaptation_settings(train_cfg, target_splits, val_ds, method_cls)
        seed_everything(train_cfg.seed)
        method = create_method(model_cfg.method, model_cfg.method_params)
        backbone = method.build_backbone(model_cfg)
        if backbone.preprocessing.modality != train_ds.modality:
            raise DataError(
                f"Backbone '{model_cfg.backbone}' takes {backbone.preprocessing.modality} inputs but the data is "
                f"{train_ds.modality}; choose a {train_ds.modality} backbone (see `transferkit backbones`)."
            )
        model = TransferModel(
            backbone, train_ds.classes, head=model_cfg.head, head_hidden=model_cfg.head_hidden,
            head_dropout=model_cfg.head_dropout, image_size=model_cfg.image_size,
        )
        fit_kwargs: dict[str, Any] = {}
        self.selection_ = None
        if target_splits is not None:
            train_ds, fit_kwargs = self._prepare_adaptation(
                model, train_ds, val_ds, target_splits, train_cfg, method_cls, extra_ds
            )
        return _PreparedFit(model, method, method_cls, train_ds, val_ds, extra_ds, fit_kwargs, model_cfg, train_cfg)

    def _fit_prepared(self, p: _PreparedFit, *, checkpoint_dir: str | Path | None = None,
                      resume: bool = False) -> TransferClassifier:
        """Train what :meth:`_prepare_fit` built (the loop, or the method's own fit) and keep the chosen epoch."""
        import torch

        from .methods.base import FitContext
        from .train.loop import fit as fit_loop

        model, method, model_cfg, train_cfg = p.model, p.method, p.model_cfg, p.train_cfg
        ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        ctx = FitContext(model, p.train, model_cfg, train_cfg, make_loader=None, extra=p.extra,
                         options={"checkpoint_dir": ckpt, "resume": resume})
        custom_kwargs = dict(p.fit_kwargs)
        if p.method_cls.uses_target_labels:
            custom_kwargs.pop("sample_weights", None)  # the oracle trains on the target, not on the weighted source
        result = method.custom_fit(ctx, p.val, **custom_kwargs)
        if result is None:
            result = fit_loop(model, method, p.train, p.val, model_cfg, train_cfg, checkpoint_dir=ckpt,
                              resume=resume, extra=p.extra, **p.fit_kwargs)
        if (train_cfg.monitor in TARGET_MONITORS and result.history
                and train_cfg.monitor not in result.history[-1]):
            warnings.warn(f"Method '{model_cfg.method}' does not report '{train_cfg.monitor}' (it chooses its result "
                          "its own way), so train.monitor was not used.", stacklevel=3)
        model.load_state_dict(result.best_state)
        model.to("cpu").eval()
        torch.set_grad_enabled(True)
        self.model_ = model
        self.classes_ = list(p.train.classes)
        self.history_ = result.history
        self.fit_result_ = result
        self.method_ = method.describe()
        self.frozen_backbone_ = bool(method.frozen_backbone)
        return self

    def _prepare_adaptation(
        self,
        model: Any,
        train_ds: Dataset,
        val_ds: Dataset | None,
        target: Splits,
        cfg: TrainConfig,
        method_cls: type,
        extra_ds: dict[str, Dataset],
    ) -> tuple[Dataset, dict[str, Any]]:
        """Fill ``extra_ds`` with the target data, select the source, build the validators.

        Returns the (possibly filtered or extended) training split and the keyword arguments for ``loop.fit``.
        """
        from .adaptation.selection import select_source
        from .adaptation.validators import make_scorers
        from .data import subsample_train

        t_train = target.train
        extra_ds["target"] = t_train.unlabelled()
        if method_cls.uses_target_labels:
            if not t_train.is_labelled:
                raise DataError(f"Method '{method_cls.name}' trains on the labelled target but the target has no "
                                "labels; give labelled target data.")
            extra_ds["target_oracle"] = t_train
        labelled = None
        if cfg.target_labels_per_class > 0:
            if not t_train.is_labelled:
                raise DataError("train.target_labels_per_class needs target data with labels; give a labelled "
                                "target or set it to 0.")
            labelled = subsample_train(t_train, per_class=cfg.target_labels_per_class, seed=cfg.seed)
            extra_ds["target_labelled"] = labelled
        selection = None
        needs_classifier = cfg.source_selection != "none" or (val_ds is not None and len(val_ds) > 0)
        if needs_classifier:
            mode = "weight" if cfg.source_selection == "none" else cfg.source_selection
            image_size = model.image_size
            selection = select_source(
                train_ds, t_train, on=cfg.selection_on, backbone=model.backbone, image_size=image_size, mode=mode,
                clip=cfg.selection_clip, keep_fraction=cfg.selection_fraction, seed=cfg.seed,
                labelled_target=labelled,
            )
        kwargs: dict[str, Any] = {}
        if cfg.source_selection == "weight":
            kwargs["sample_weights"] = selection.weights
        elif cfg.source_selection == "keep":
            train_ds = train_ds.subset(selection.keep)
            if (train_ds.class_counts() == 0).any():
                missing = [c for c, n in zip(train_ds.classes, train_ds.class_counts(), strict=True) if n == 0]
                warnings.warn(f"Keeping the most target-like {cfg.selection_fraction:.0%} of the source left no "
                              f"example of class(es) {', '.join(missing[:5])}; raise train.selection_fraction.",
                              stacklevel=3)
        elif cfg.source_selection == "tradaboost":
            assert labelled is not None and selection.target_weights is not None
            train_ds = _concat(train_ds, labelled)
            kwargs["sample_weights"] = np.concatenate([selection.weights, selection.target_weights])
        if "sample_weights" in kwargs and method_cls.frozen_backbone:
            warnings.warn(f"Method '{method_cls.name}' fits its head on cached features and takes no sample weights; "
                          "use train.source_selection: keep with it.", stacklevel=3)
        self.selection_ = selection if cfg.source_selection != "none" else None
        val_w = val_raw = None
        if selection is not None and val_ds is not None and len(val_ds):
            val_w = selection.weigh(val_ds)
            val_raw = selection.weigh(val_ds, normalise=False)
        oracle = target.val if target.val is not None and target.val.is_labelled else t_train
        kwargs["scorers"] = make_scorers(
            val=val_ds, val_weights=val_w, val_raw_weights=val_raw, target=t_train,
            target_labelled=oracle if oracle.is_labelled else None, seed=cfg.seed,
            batch_size=max(cfg.batch_size, 128),
        )
        if cfg.monitor in TARGET_MONITORS and cfg.monitor not in kwargs["scorers"]:
            raise ConfigError(f"train.monitor '{cfg.monitor}' cannot be computed here: "
                              + _MONITOR_NEEDS.get(cfg.monitor, "it needs target data."))
        return train_ds, kwargs

    # --- inference --------------------------------------------------------------------------------------
    def predict_proba(self, X: Any, *, batch_size: int = 256, progress: bool = False, cache: bool = False
                      ) -> np.ndarray:
        """Class probabilities ``(N, C)`` in the order of ``classes_``.

        A model whose backbone stayed frozen (``probe``, ``mlp-head``) runs it through the fast frozen-inference
        engine (ONNX Runtime on CPU) and its head on the features; ``cache=True`` also keeps those features on disk.
        """
        from .train.inference import predict_logits, softmax

        model = self._fitted()
        ds = as_dataset(X, modality=model.preprocessing.modality, classes=self.classes_)
        if getattr(self, "frozen_backbone_", False):
            return softmax(self._frozen_logits(ds, batch_size=batch_size, progress=progress, cache=cache))
        device = _inference_device()
        model.to(device)
        return softmax(predict_logits(model, ds, batch_size=batch_size, device=device, progress=progress))

    def _frozen_logits(self, ds: Dataset, *, batch_size: int, progress: bool, cache: bool) -> np.ndarray:
        import torch

        from .features import extract_features

        model = self._fitted()
        engine = ((getattr(self, "method_", None) or {}).get("params") or {}).get("engine", "auto")
        feats = extract_features(model.backbone, ds, image_size=model.image_size, engine=engine, cache=cache,
                                 batch_size=min(batch_size, 128), progress=progress)
        model.head.eval()
        with torch.no_grad():
            return model.head(torch.from_numpy(np.array(feats, dtype=np.float32))).numpy()

    def predict(self, X: Any, **kw: Any) -> np.ndarray:
        """Predicted class names."""
        proba = self.predict_proba(X, **kw)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(1)]

    def evaluate(self, data: Any, *, batch_size: int = 256) -> dict[str, Any]:
        """Accuracy, macro-F1, per-class precision/recall, top-k and the confusion matrix on labelled data."""
        from .evaluate.metrics import classification_metrics

        ds = as_dataset(data, modality=self._fitted().preprocessing.modality, classes=self.classes_)
        if not ds.is_labelled:
            raise DataError("evaluate() needs labelled data; use predict() for unlabelled inputs.")
        if list(ds.classes) != list(self.classes_):
            ds = _remap_labels(ds, self.classes_)
        proba = self.predict_proba(ds, batch_size=batch_size, cache=True)
        return classification_metrics(ds.labels, proba, self.classes_)

    # --- persistence ------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` + ``model.json`` (and the hyperparameters) into ``folder``."""
        from .model import save_model

        model = self._fitted()
        params = self.get_params()
        save_model(model, folder, extra={"hyperparameters": params, "method": getattr(self, "method_", None),
                                         "frozen_backbone": bool(getattr(self, "frozen_backbone_", False))})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path, *, trust_code: bool = False) -> TransferClassifier:
        """Rebuild a fitted estimator from a folder written by :meth:`save` or a finished run folder.

        A model folder is data and may come from anyone: loading it never imports or runs code it names. A model
        whose backbone is your own ``module:`` factory needs ``trust_code=True``, which imports and calls that
        factory (and lets a later ``fit()`` of the loaded estimator do so); pass it only for a folder from a
        source you trust. The built-in backbones need no opt-in.

        Raises:
            RunError: the folder is not a saved model, or it names code and ``trust_code`` is false.
        """
        import json

        from .model import MODEL_META, load_model

        model = load_model(folder, trust_code=trust_code)
        meta = json.loads((Path(folder) / MODEL_META).read_text())
        known = set(hyperparameter_names())
        params = {k: v for k, v in (meta.get("hyperparameters") or {}).items() if k in known}
        if not trust_code:
            _refuse_code_in_hyperparameters(params, folder)
        est = cls(**params)
        est.model_ = model
        est.classes_ = list(model.classes)
        est.method_ = meta.get("method")
        est.frozen_backbone_ = bool(meta.get("frozen_backbone", False))
        return est

    def _fitted(self) -> Any:
        if not hasattr(self, "model_"):
            raise RunError("This TransferClassifier is not fitted yet; call fit() or TransferClassifier.load().")
        return self.model_


def _code_names(value: Any) -> list[str]:
    """Every ``module:`` backbone name, or opt-in to code (``trust_code: true``), inside saved hyperparameters."""
    if isinstance(value, str):
        return [value.strip()] if value.strip().lower().startswith("module:") else []
    if isinstance(value, dict):
        own = ["trust_code: true"] if value.get("trust_code") is True else []
        return own + [n for v in value.values() for n in _code_names(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _code_names(v)]
    return []


def _refuse_code_in_hyperparameters(params: dict[str, Any], folder: str | Path) -> None:
    """A loaded estimator refits from its saved hyperparameters: they must not name code the caller did not trust."""
    names = _code_names(params)
    if names:
        raise RunError(
            f"The model folder '{folder}' has hyperparameters that name code ('{names[0]}'), which fit() would "
            "import and run; pass trust_code=True (command line: --trust-code) only if it comes from a source you "
            "trust."
        )


@dataclasses.dataclass
class _PreparedFit:
    """What :meth:`TransferClassifier._prepare_fit` validated and built, ready to train."""

    model: Any
    method: Any
    method_cls: type
    train: Dataset
    val: Dataset | None
    extra: dict[str, Dataset]
    fit_kwargs: dict[str, Any]
    model_cfg: ModelConfig
    train_cfg: TrainConfig


_MONITOR_NEEDS = {
    "iw_val_accuracy": "it needs a source validation split and target data.",
    "iw_val_loss": "it needs a source validation split and target data.",
    "dev_val_loss": "it needs a source validation split and target data.",
    "snd": "it needs target data.",
    "im": "it needs target data.",
    "target_accuracy": "it needs labelled target data.",
}


def _check_adaptation_settings(cfg: TrainConfig, target: Splits | None, val: Dataset | None, method_cls: type) -> None:
    """Refuse target-dependent settings without a target, before any work is done."""
    if target is None:
        if cfg.monitor in TARGET_MONITORS:
            raise ConfigError(f"train.monitor '{cfg.monitor}' needs target data; give a `target:` section in the "
                              "config or fit(..., target=...).")
        if cfg.source_selection != "none":
            raise ConfigError(f"train.source_selection '{cfg.source_selection}' needs target data; give a `target:` "
                              "section in the config or fit(..., target=...).")
        if cfg.target_labels_per_class > 0:
            raise ConfigError("train.target_labels_per_class needs target data; give a `target:` section in the "
                              "config or fit(..., target=...).")
        if method_cls.uses_target_labels:
            raise ConfigError(f"Method '{method_cls.name}' trains on labelled target data; give a labelled `target:` "
                              "section in the config or fit(..., target=...).")
        return
    if cfg.monitor in TARGET_MONITORS and method_cls.frozen_backbone:
        raise ConfigError(f"Method '{method_cls.name}' fits its head on cached features and chooses it on the source "
                          f"validation split, so it cannot monitor '{cfg.monitor}'; use a val_* monitor with it.")
    if cfg.monitor in ("iw_val_accuracy", "iw_val_loss", "dev_val_loss") and (val is None or not len(val)):
        raise ConfigError(f"train.monitor '{cfg.monitor}' needs a source validation split; give data with a val "
                          "split or fit(..., val=...).")
    if cfg.monitor == "target_accuracy" and not target.train.is_labelled:
        raise ConfigError("train.monitor 'target_accuracy' needs labelled target data; choose a label-free "
                          "validator (iw_val_accuracy, iw_val_loss, dev_val_loss, snd, im).")


def _target_splits(target: Any, train: Dataset) -> Splits:
    """The target as :class:`Splits` with the source's modality and label order (labels remapped by name)."""
    t = as_splits(target)
    if t.modality != train.modality:
        raise DataError(f"The target holds {t.modality} data but the source {train.modality}; domain adaptation "
                        "needs the same kind of data on both sides.")
    out = []
    for ds in (t.train, t.val, t.test):
        if ds is None or not ds.is_labelled:
            out.append(ds)
            continue
        if list(ds.classes) != list(train.classes):
            extra = sorted(set(ds.classes) - set(train.classes))
            if extra:
                raise DataError(f"The target has classes the source lacks ({', '.join(extra[:5])}); domain "
                                "adaptation needs the same label set on both sides.")
            ds = _remap_labels(ds, list(train.classes))
        out.append(ds)
    if not len(out[0]):
        raise DataError("The target training split is empty; give target data to adapt to.")
    return Splits(*out)


def _concat(a: Dataset, b: Dataset) -> Dataset:
    """Rows of ``a`` then ``b`` (same modality and classes)."""
    arrays = isinstance(a.inputs, np.ndarray) and isinstance(b.inputs, np.ndarray)
    if arrays and a.inputs.shape[1:] == b.inputs.shape[1:]:
        inputs: Any = np.concatenate([a.inputs, b.inputs])
    elif arrays:
        raise DataError("Source and labelled target images differ in shape; give images of one size and colour.")
    else:
        inputs = list(a.inputs) + list(b.inputs)
    labels = np.concatenate([a.labels, b.labels]) if a.labels is not None and b.labels is not None else None
    return Dataset(a.modality, inputs, labels, list(a.classes), a.name, dict(a.meta))


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def _inference_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_label_set(train: Dataset, val: Dataset | None) -> None:
    counts = train.class_counts()
    if (counts > 0).sum() < 2:
        raise DataError("The training data has fewer than two classes; a classifier needs at least two.")
    if val is not None and val.is_labelled and list(val.classes) != list(train.classes):
        raise DataError("The validation data has a different label set from the training data; use the same classes.")


def _remap_labels(ds: Dataset, classes: list[str]) -> Dataset:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(ds.classes) - set(index))
    if unknown:
        raise DataError(
            f"The data has labels the model was not trained on ({', '.join(unknown[:5])}); "
            "evaluate on data with the model's label set."
        )
    mapping = np.array([index[c] for c in ds.classes], dtype=np.int64)
    return Dataset(ds.modality, ds.inputs, mapping[ds.labels], list(classes), ds.name, dict(ds.meta))
