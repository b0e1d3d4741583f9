"""The public Python API: :class:`TransferClassifier`, a scikit-learn-style estimator.

    clf = TransferClassifier(backbone="mobilenet_v2.imagenet", method="finetune", epochs=3, image_size=64)
    clf.fit(load_data(DataConfig(name="animal-mnist")))
    clf.evaluate(splits.test)["accuracy"]
    clf.save("model/"); TransferClassifier.load("model/").predict(paths)

Hyperparameters are the fields of :class:`~transferkit.config.ModelConfig` and
:class:`~transferkit.config.TrainConfig` (one schema with the YAML files and the CLI); ``get_params`` /
``set_params`` follow scikit-learn's contract, so ``sklearn.base.clone`` works.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .config import DataConfig, ModelConfig, TrainConfig, hyperparameter_names, split_hyperparameters
from .data.base import Dataset, Splits
from .errors import DataError, RunError


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
        extra: dict[str, Any] | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> TransferClassifier:
        """Train on ``train`` (a Dataset, Splits, data set name, path, or arrays ``X, y``); returns ``self``.

        With a :class:`Splits` its ``val`` split chooses the best epoch (early stopping, best checkpoint) unless
        ``val`` is given. ``extra`` holds further data sets a method needs (e.g. ``target`` for adaptation).
        """
        import torch

        from .methods import create_method
        from .methods.base import FitContext
        from .model import TransferModel
        from .train.loop import fit as fit_loop
        from .train.seeding import seed_everything

        splits = as_splits(train, y)
        val_ds = as_dataset(val) if val is not None else splits.val
        train_ds = splits.train
        if not train_ds.is_labelled:
            raise DataError("The training data has no labels; give labelled data to fit().")
        model_cfg, train_cfg = self.configs
        _check_label_set(train_ds, val_ds)
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
        extra_ds = {k: as_dataset(v) for k, v in (extra or {}).items()}
        ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        ctx = FitContext(model, train_ds, model_cfg, train_cfg, make_loader=None, extra=extra_ds,
                         options={"checkpoint_dir": ckpt, "resume": resume})
        result = method.custom_fit(ctx, val_ds)
        if result is None:
            result = fit_loop(model, method, train_ds, val_ds, model_cfg, train_cfg, checkpoint_dir=ckpt,
                              resume=resume, extra=extra_ds)
        model.load_state_dict(result.best_state)
        model.to("cpu").eval()
        torch.set_grad_enabled(True)
        self.model_ = model
        self.classes_ = list(train_ds.classes)
        self.history_ = result.history
        self.fit_result_ = result
        self.method_ = method.describe()
        self.frozen_backbone_ = bool(method.frozen_backbone)
        return self

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
    def load(cls, folder: str | Path) -> TransferClassifier:
        """Rebuild a fitted estimator from a folder written by :meth:`save` or a finished run folder."""
        import json

        from .model import MODEL_META, load_model

        model = load_model(folder)
        meta = json.loads((Path(folder) / MODEL_META).read_text())
        known = set(hyperparameter_names())
        params = {k: v for k, v in (meta.get("hyperparameters") or {}).items() if k in known}
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


def as_splits(data: Any, y: Any = None) -> Splits:
    """Coerce what a user passes to ``fit`` into :class:`Splits`."""
    if isinstance(data, Splits):
        return data
    if isinstance(data, str | Path) and y is None:
        from .data import load_data

        p = Path(data)
        cfg = DataConfig(path=str(p)) if p.exists() else DataConfig(name=str(data))
        return load_data(cfg)
    return Splits(train=as_dataset(data, y))


def as_dataset(data: Any, y: Any = None, *, modality: str | None = None, classes: list[str] | None = None) -> Dataset:
    """Coerce a Dataset, a file/folder path, a list of paths or texts, or arrays into a :class:`Dataset`."""
    from .data import from_arrays

    if isinstance(data, Dataset):
        return data
    if isinstance(data, Splits):
        raise DataError("Pass one split here (e.g. splits.test), not the whole Splits object.")
    labels = None
    if y is not None:
        y_arr = np.asarray(y)
        classes_found = sorted({str(v) for v in y_arr}) if classes is None else list(classes)
        index = {c: i for i, c in enumerate(classes_found)}
        try:
            labels = np.array([index[str(v)] for v in y_arr], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"Label {e.args[0]!r} is not one of the model's classes; check the labels.") from None
        classes = classes_found
    if isinstance(data, str | Path):
        data = [data]
    if isinstance(data, list | tuple) and data and all(isinstance(v, str | Path) for v in data):
        if modality == "text" or (modality is None and not all(Path(str(v)).exists() for v in data)):
            return Dataset("text", [str(v) for v in data], labels, classes or ["?"], "texts")
        return Dataset("image", _expand_image_paths(data), labels, classes or ["?"], "files")
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim in (3, 4) and modality != "tabular":
        return Dataset("image", data, labels, classes or ["?"], "arrays")
    if y is None:
        arr = np.asarray(data, dtype=np.float32)
        return Dataset("tabular", arr, None, classes or ["?"], "arrays")
    return from_arrays(data, y, classes=classes)


def _expand_image_paths(items: Any) -> list[str]:
    from .data.sources import IMAGE_SUFFIXES

    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(str(f) for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            out.append(str(p))
        else:
            raise DataError(f"'{p}' does not exist; give existing image files or folders.")
    if not out:
        raise DataError("No image files were found in the given paths; check the paths and file types.")
    return out
