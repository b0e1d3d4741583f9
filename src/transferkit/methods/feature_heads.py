"""Heads on frozen, cached features: ``probe`` (logistic regression) and ``mlp-head``.

The backbone never trains, so its features are computed once per (backbone, weights, layers, pooling,
preprocessing, data) and kept on disk by :mod:`transferkit.features`; a second run on the same data reads them back
and only fits the head. Forward passes run through the fastest engine for the device (ONNX Runtime on CPU, PyTorch
on GPU). Feature transfer from several sources is feature fusion: ``layers`` picks layers of the backbone, block
indices or module paths such as ``"features.7"`` (:mod:`transferkit.backbones.taps`; their outputs globally pooled
and concatenated) and ``fuse`` adds more backbones, whose features are concatenated too.

* ``probe``: multinomial logistic regression (scikit-learn, L-BFGS) on standardised features,

      min_W,b  (1/2) ||W||^2 + C * sum_i w_{y_i} * (-log softmax(W z_i + b)_{y_i}),  z = (f - mu) / sigma,

  with ``C`` chosen on the validation split from a small grid (warm-started along the path) when not given, and
  class weights ``w_y = N / (K * N_y)`` with ``class_weight: balanced``. The standardisation is folded into the
  linear head (``W' = W / sigma``, ``b' = b - W' mu``), so the saved model is an ordinary backbone + linear head.
* ``mlp-head``: the ``model.head: mlp`` head (Linear-GELU-Dropout-Linear) trained by the one training loop on the
  cached features (they are a tabular data set to it), with early stopping, schedules and checkpoints as usual;
  ``train.lr`` is the head's learning rate. ``class_weight: balanced`` weights the cross-entropy the same way.

Both are ``frozen_backbone`` methods: the pipeline extracts the features (:meth:`FeatureHeadMethod.features`) and
hands the method a :class:`FitContext` whose model is the head on those features and whose splits are the features
as tabular data. The probe replaces the loop through :meth:`Method.fit_closed_form`; the mlp-head is trained by it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ModelConfig, TrainConfig, param
from ..data.base import Dataset
from ..errors import ConfigError
from ..features.cache import default_cache
from ..model import TransferModel
from ..version import __version__
from .base import FitContext, FitResult, Method
from .registry import register

C_GRID = (0.01, 0.1, 1.0, 10.0)
HEAD_FORMAT = "transferkit-probe-head/1"


@dataclass
class FeatureParams:
    """Where the features come from (shared by ``probe`` and ``mlp-head``)."""

    layers: list[int | str] | None = None  # block indices (negative from the end) or module paths; None: final features
    pooling: str = "avg"  # avg | max for image blocks; mean | cls for text blocks
    fuse: list[str] = field(default_factory=list)  # more backbones whose features are concatenated
    engine: str = field(default="auto", metadata=param(choices=("auto", "onnx", "torch")))
    cache: bool = True  # keep features on disk and reuse them
    class_weight: str | None = field(default=None, metadata=param(choices=(None, "balanced")))


@dataclass
class ProbeParams(FeatureParams):
    # inverse L2 strength; None: chosen on val from 0.01, 0.1, 1, 10
    C: float | None = field(default=None, metadata=param(gt=0))
    max_iter: int = field(default=500, metadata=param(gt=0))
    # L-BFGS stops when the largest gradient entry of the mean loss is below this
    tol: float = field(default=1e-3, metadata=param(gt=0))


class FeatureHeadMethod(Method):
    """Base of the methods that train only a head on frozen, cached features."""

    frozen_backbone: ClassVar[bool] = True
    Params: ClassVar[type] = FeatureParams

    def build_backbone(self, model_cfg: ModelConfig) -> Any:
        """The frozen feature extractor: the backbone tapped at ``layers``, fused with ``fuse`` backbones."""
        from ..backbones import feature_backbone

        p = self.params
        names = [model_cfg.backbone, *p.fuse]
        cards = default_cache().cards_dir if p.cache else None  # a cached re-run need not build the backbone
        return feature_backbone(names if p.fuse else model_cfg.backbone, layers=p.layers, pooling=p.pooling,
                                weights=model_cfg.weights, pretrained=model_cfg.pretrained, cards=cards)

    def inference(self) -> dict[str, Any]:
        return {"frozen_backbone": True, "engine": self.params.engine}

    def features(self, model: TransferModel, ds: Dataset, cfg: TrainConfig) -> np.ndarray:
        """Features of ``ds`` through the chosen engine, cached on disk unless ``cache: false``."""
        from ..features import extract_features

        return extract_features(model.backbone, ds, image_size=model.image_size, engine=self.params.engine,
                                cache=self.params.cache, progress=cfg.progress,
                                batch_size=max(cfg.batch_size, 64))


def _class_weights(labels: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return np.where(counts > 0, len(labels) / (k * np.maximum(counts, 1)), 0.0)


def _head_metrics(logits: np.ndarray, ds: Dataset, prefix: str) -> dict[str, float]:
    from ..evaluate.metrics import classification_metrics
    from ..train.inference import softmax

    m = classification_metrics(ds.labels, softmax(logits), ds.classes, top_k=())
    return {f"{prefix}_loss": m["loss"], f"{prefix}_accuracy": m["accuracy"], f"{prefix}_macro_f1": m["macro_f1"]}


@register
class Probe(FeatureHeadMethod):
    name: ClassVar[str] = "probe"
    summary: ClassVar[str] = "logistic regression on frozen, cached (fused) features; C chosen on val"
    Params: ClassVar[type] = ProbeParams

    def fit_closed_form(self, ctx: FitContext, val: Dataset | None) -> FitResult:
        """L-BFGS on the features (``ctx.train``, ``val``: tabular), C chosen on ``val``; the head is set in place.

        With ``cache: true`` the fitted head is kept in the feature cache (:func:`head_key`): a fit on the same
        features, labels and settings reads it back instead of fitting again, with the same weights and record.
        """
        t0 = time.perf_counter()
        model = ctx.model
        key = head_key(self, ctx, val) if self.params.cache else None
        history = _read_head(key, model.head[-1]) if key is not None else None
        if history is None:
            x_val = np.asarray(val.inputs) if val is not None and len(val) else None
            history = self.fit_head(model, np.asarray(ctx.train.inputs), ctx.train, x_val, val, ctx)
            if key is not None:
                _write_head(key, model.head[-1], history, self.name)
        best = max(range(len(history)), key=lambda i: history[i]["_score"])
        for row in history:
            row.pop("_score")
        model.eval()
        return FitResult(
            history=history, best_epoch=best + 1, best_state=model.state_dict(), seconds=time.perf_counter() - t0,
            trainable_params=sum(p.numel() for p in model.head.parameters()),
            total_params=sum(p.numel() for p in model.parameters()),
        )

    def fit_head(self, model: TransferModel, x_train: np.ndarray, train: Dataset, x_val: np.ndarray | None,
                 val: Dataset | None, ctx: FitContext) -> list[dict[str, Any]]:
        """Fit ``model.head`` on the features; returns history rows (``_score`` marks the chosen one)."""
        from sklearn.linear_model import LogisticRegression

        if model.head_kind != "linear":
            raise ConfigError("method 'probe' trains a linear head; set model.head: linear or use method 'mlp-head'.")
        p = self.params
        mu = x_train.mean(0, dtype=np.float64)
        sigma = x_train.std(0, dtype=np.float64)
        sigma = np.where(sigma > 1e-8, sigma, 1.0)
        z_train = ((x_train - mu) / sigma).astype(np.float32)
        z_val = ((x_val - mu) / sigma).astype(np.float32) if x_val is not None else None
        grid = [p.C] if p.C is not None else list(C_GRID) if z_val is not None else [1.0]
        k = len(train.classes)
        weights = dict(enumerate(_class_weights(train.labels, k))) if p.class_weight == "balanced" else None
        clf = LogisticRegression(max_iter=p.max_iter, class_weight=weights, warm_start=True, tol=p.tol)
        history: list[dict[str, Any]] = []
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        for c in grid:  # small C first: each fit starts from the last solution (warm start along the path)
            t0 = time.perf_counter()
            clf.set_params(C=c)
            clf.fit(z_train, train.labels)
            w, b = _full_coef(clf, k)
            row: dict[str, Any] = {"epoch": len(history) + 1, "C": c, "fit_seconds": round(time.perf_counter() - t0,
                                                                                           3)}
            row.update(_head_metrics(z_train @ w.T + b, train, "train"))
            score = row["train_accuracy"]
            if z_val is not None and val is not None:
                row.update(_head_metrics(z_val @ w.T + b, val, "val"))
                monitor = ctx.train_config.monitor
                score = -row[monitor] if monitor == "val_loss" else row[monitor]
            row["_score"] = score
            history.append(row)
            if best is None or score > best[0] + 1e-12:
                best = (score, w, b)
        assert best is not None
        _, w, b = best
        linear = model.head[-1]
        with torch.no_grad():
            w_raw = w / sigma[None, :]
            linear.weight.copy_(torch.from_numpy(w_raw.astype(np.float32)))
            linear.bias.copy_(torch.from_numpy((b - w_raw @ mu).astype(np.float32)))
        return history


def head_key(method: Method, ctx: FitContext, val: Dataset | None) -> dict[str, Any]:
    """What a closed-form head fit depends on, and only that: the result is a pure function of these parts.

    The training and validation features with their labels and classes (:meth:`Dataset.fingerprint` hashes their
    bytes, so any change of backbone, weights, layers, preprocessing, data or labels gives other parts), the
    method and its parameters, the seed, the monitor that picks C, the head, and the versions of transferkit,
    scikit-learn and numpy that compute it.
    """
    from importlib.metadata import version

    return {
        "format": HEAD_FORMAT, "transferkit": __version__, "scikit-learn": version("scikit-learn"),
        "numpy": np.__version__, "method": method.describe(), "seed": ctx.train_config.seed,
        "monitor": ctx.train_config.monitor, "head": ctx.model.head_kind,
        "train": ctx.train.fingerprint(), "val": val.fingerprint() if val is not None and len(val) else None,
    }


def _read_head(parts: dict[str, Any], linear: torch.nn.Linear) -> list[dict[str, Any]] | None:
    """Set ``linear`` from the cached head of ``parts`` and return its history; ``None`` (nothing set) on a miss.

    An entry whose arrays do not fit ``linear``, hold non-finite values, or whose history is not a list of rows
    marking the chosen one is treated as a miss, so a damaged entry is fitted again (and replaced).
    """
    cache = default_cache()
    found = cache.get_head(cache.key(parts))
    if found is None:
        return None
    arrays, meta = found
    w, b, history = arrays.get("weight"), arrays.get("bias"), meta.get("history")
    if (w is None or b is None or w.dtype != np.float32 or b.dtype != np.float32
            or tuple(w.shape) != tuple(linear.weight.shape) or tuple(b.shape) != tuple(linear.bias.shape)
            or not (np.isfinite(w).all() and np.isfinite(b).all()) or not isinstance(history, list) or not history
            or not all(isinstance(r, dict) and isinstance(r.get("_score"), float) for r in history)):
        return None
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w))
        linear.bias.copy_(torch.from_numpy(b))
    return history


def _write_head(parts: dict[str, Any], linear: torch.nn.Linear, history: list[dict[str, Any]], name: str) -> None:
    """Keep the fitted ``linear`` head and its ``history`` in the feature cache under ``parts``."""
    cache = default_cache()
    arrays = {"weight": linear.weight.detach().cpu().numpy(), "bias": linear.bias.detach().cpu().numpy()}
    rows = [{k: float(v) if isinstance(v, np.floating) else v for k, v in row.items()} for row in history]
    cache.put_head(cache.key(parts), arrays, {"method": name, "key_parts": parts, "history": rows})


def _full_coef(clf: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, D) weights and (K,) biases for every class (sklearn keeps one row for a binary problem)."""
    coef, bias = clf.coef_.astype(np.float64), clf.intercept_.astype(np.float64)
    if coef.shape[0] == 1 and k == 2:
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        bias = np.array([0.0, bias[0]])
    if coef.shape[0] != k:  # a class absent from the training data: it gets no score of its own
        full_w, full_b = np.zeros((k, coef.shape[1])), np.full(k, -1e4)
        full_w[clf.classes_], full_b[clf.classes_] = coef, bias
        return full_w, full_b
    return coef, bias


@register
class MLPHead(FeatureHeadMethod):
    """Trained by the loop on the features: plain cross-entropy, class-weighted with ``class_weight: balanced``."""

    name: ClassVar[str] = "mlp-head"
    summary: ClassVar[str] = "MLP head trained by the loop on frozen, cached (fused) features"

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self.register_buffer("class_weight", torch.ones(0), persistent=False)

    def setup(self, ctx: FitContext) -> None:
        super().setup(ctx)
        if self.params.class_weight == "balanced":
            k = len(ctx.train.classes)
            self.class_weight = torch.tensor(_class_weights(ctx.train.labels, k), dtype=torch.float32)

    def classification_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.class_weight.to(logits.device) if self.class_weight.numel() else None
        return F.cross_entropy(logits, y, weight=w, label_smoothing=self.train_config.label_smoothing)
