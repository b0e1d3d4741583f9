"""The public Python API: :class:`TransferClassifier`, a scikit-learn-style estimator.

    clf = TransferClassifier(backbone="mobilenet_v2.imagenet", method="finetune", epochs=3, image_size=64)
    clf.fit(load_data(DataConfig(name="animal-mnist")))
    clf.evaluate(splits.test)["accuracy"]
    clf.save("model/"); TransferClassifier.load("model/").predict(paths)

Hyperparameters are the fields of :class:`~transferkit.config.ModelConfig` and
:class:`~transferkit.config.TrainConfig` (one schema with the YAML files and the CLI); ``get_params`` /
``set_params`` follow scikit-learn's contract, so ``sklearn.base.clone`` works.

The estimator is a thin shell: ``fit`` runs the one fit pipeline (:mod:`transferkit.pipeline`), which every other
entry point (``transferkit fit``, ``compare``) runs too; the estimator keeps its result and predicts, evaluates,
saves and loads.

Domain adaptation: ``clf.fit(source_splits, target=target_splits)``. The target's training split reaches the
method without labels (``ctx.extra["target"]``); with ``target_labels_per_class=k`` also k labelled target examples
per class (``ctx.extra["target_labelled"]``); only a method that declares the need ``"target_oracle"`` (the
``target-oracle`` baseline) gets the labelled target training split. ``source_selection`` weighs or filters the
source first (see :mod:`transferkit.adaptation.selection`), and the label-free validators of
:mod:`transferkit.adaptation.validators` are computed every epoch (history columns ``snd``, ``im``, and
``target_accuracy`` when the target has labels; ``iw_val_accuracy``, ``iw_val_loss``, ``dev_val_loss`` when
``monitor`` names one of them or ``iw_validators=True``, as they need a source-vs-target classifier), so
``monitor`` may name them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .config import ModelConfig, TrainConfig, hyperparameter_names, split_hyperparameters
from .data.base import Dataset
from .data.coerce import as_dataset, remap_labels
from .ensemble.folder import ENSEMBLE_KIND, FolderKind
from .errors import DataError, RunError

#: Kinds of model folder other than one TransferModel, tried in order by :meth:`TransferClassifier.load` (a hook:
#: each kind says whether it claims a folder and loads it, with this class's ``load`` for the models inside).
FOLDER_KINDS: list[FolderKind] = [ENSEMBLE_KIND]


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
        from .pipeline import fit_pipeline

        model_cfg, train_cfg = self.configs
        fitted = fit_pipeline(model_cfg, train_cfg, train, y, val=val, target=target, extra=extra,
                              checkpoint_dir=checkpoint_dir, resume=resume)
        return self._keep(fitted)

    @classmethod
    def from_fitted(cls, fitted: Any) -> TransferClassifier:
        """The estimator of a finished pipeline fit (a :class:`~transferkit.pipeline.FittedModel`), with its
        hyperparameters: what a command that ran the pipeline itself uses to evaluate and save."""
        params = {**dataclasses.asdict(fitted.model_config), **dataclasses.asdict(fitted.train_config)}
        return cls(**params)._keep(fitted)

    def _keep(self, fitted: Any) -> TransferClassifier:
        """Keep a pipeline fit's model and record as the fitted attributes (``model_``, ``history_`` ...)."""
        self.model_ = fitted.model
        self.classes_ = list(fitted.classes)
        self.history_ = fitted.history
        self.fit_result_ = fitted.result
        self.method_ = fitted.method
        self.selection_ = fitted.selection
        return self

    @property
    def frozen_backbone_(self) -> bool:
        """Whether the fitted model's backbone stayed frozen (it then predicts through the fast feature engine)."""
        model = getattr(self, "model_", None)
        return bool(model is not None and model.inference.get("frozen_backbone"))

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
        if model.inference.get("frozen_backbone"):
            return softmax(self._frozen_logits(ds, batch_size=batch_size, progress=progress, cache=cache))
        device = _inference_device()
        model.to(device)
        return softmax(predict_logits(model, ds, batch_size=batch_size, device=device, progress=progress))

    def _frozen_logits(self, ds: Dataset, *, batch_size: int, progress: bool, cache: bool) -> np.ndarray:
        import torch

        from .features import extract_features

        model = self._fitted()
        engine = model.inference.get("engine", "auto")
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
            ds = remap_labels(ds, self.classes_)
        proba = self.predict_proba(ds, batch_size=batch_size, cache=True)
        return classification_metrics(ds.labels, proba, self.classes_)

    # --- persistence ------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` + ``model.json`` (and the hyperparameters) into ``folder``."""
        from .model import save_model

        model = self._fitted()
        params = self.get_params()
        if isinstance(params.get("method_params"), dict):  # a Python object given as a parameter (a kd teacher, say)
            params["method_params"] = {k: v if _jsonable(v) else f"<{type(v).__name__}>"
                                       for k, v in params["method_params"].items()}
        save_model(model, folder, extra={"hyperparameters": params, "method": getattr(self, "method_", None)})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path, *, trust_code: bool = False) -> TransferClassifier:
        """Rebuild a fitted estimator from a folder written by :meth:`save` or a finished run folder.

        A folder of another kind in :data:`FOLDER_KINDS` (an ensemble folder) loads as that kind's estimator, which
        predicts, evaluates and saves like this one.

        A model folder is data and may come from anyone: loading it never imports or runs code it names. A model
        whose backbone is your own ``module:`` factory needs ``trust_code=True``, which imports and calls that
        factory (and lets a later ``fit()`` of the loaded estimator do so); pass it only for a folder from a
        source you trust. The built-in backbones need no opt-in.

        Raises:
            RunError: the folder is not a saved model, or it names code and ``trust_code`` is false.
        """
        import json

        from .model import MODEL_META, load_model

        for kind in FOLDER_KINDS:
            if kind.claims(folder):
                return kind.load(folder, cls.load, trust_code=trust_code)
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


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def _inference_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _jsonable(value: Any) -> bool:
    """Whether ``value`` is plain JSON data (what a saved model's ``model.json`` may hold)."""
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
