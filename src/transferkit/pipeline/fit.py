"""THE fit pipeline: every entry point that trains a model (the Python estimator, ``transferkit fit`` and
``compare``, and the coming ``distil``, ``ensemble`` and ``compress``) goes through :class:`FitPipeline`.

Two steps, so that a command can validate everything before it creates its run folder:

1. :meth:`FitPipeline.prepare` does everything that can fail on the user's input: coerces the data (via
   :mod:`transferkit.data.coerce`), checks the labels and the settings, builds the method (checking its parameters)
   and the model (loading ``model.weights``), and plans the domain adaptation (via
   :mod:`transferkit.adaptation.plan`: target data, source selection, validators).
2. :meth:`FitPipeline.run` builds the fit's one :class:`~transferkit.train.contract.FitContext`, then runs the
   method's closed-form fit or the training loop on the method's training data, loads the chosen epoch, calls the
   method's end-of-fit work, and records how the model predicts (``model.inference``, saved in ``model.json``).

A ``frozen_backbone`` method fits its head on cached features: the context it gets is that problem (the head on the
features as a tabular data set, see :mod:`transferkit.pipeline.features`). The pipeline is the one place besides
the methods that reads a method's class flags.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TARGET_MONITORS, ModelConfig, TrainConfig
from ..data.base import Dataset
from ..data.coerce import as_dataset, as_splits, check_label_set
from ..errors import DataError
from ..train.contract import FitContext, FitResult


@dataclass
class PreparedFit:
    """What :meth:`FitPipeline.prepare` validated and built, ready to train."""

    model: Any
    method: Any
    train: Dataset
    val: Dataset | None
    extra: dict[str, Dataset]
    sample_weights: Any
    scorers: dict[str, Any]
    selection: Any
    model_config: ModelConfig
    train_config: TrainConfig
    selection_seconds: float | None = None  # the source-vs-target classifier's cost; None: it was not fitted

    def describe(self, *, resume: bool = False) -> str:
        """What the fit will do, in a few words for the log (e.g. "training dann on resnet18 for 10 epochs")."""
        name, backbone = self.model_config.method, self.model_config.backbone
        if self.method.frozen_backbone:
            return f"fitting {name} on frozen {backbone} features (cached on disk)"
        return f"training {name} on {backbone} for {self.train_config.epochs} epochs" + (" (resuming)" if resume
                                                                                          else "")


@dataclass
class FittedModel:
    """A finished fit: the model at its chosen epoch (on the CPU, in eval mode) and its record."""

    model: Any
    classes: list[str]
    history: list[dict[str, Any]]
    result: FitResult
    method: dict[str, Any]  # the method's name and resolved parameters (``Method.describe``)
    selection: Any  # the source selection (``train.source_selection``), or None
    model_config: ModelConfig
    train_config: TrainConfig


class FitPipeline:
    """One fit under one (ModelConfig, TrainConfig): :meth:`prepare`, then :meth:`run` (see the module docstring)."""

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig) -> None:
        self.model_config = model_config
        self.train_config = train_config

    def prepare(self, train: Any, y: Any = None, *, val: Any = None, target: Any = None,
                extra: dict[str, Any] | None = None, model: Any = None) -> PreparedFit:
        """Validate the data, the settings, the method and its parameters; build the model; plan the adaptation.

        ``train`` is anything :func:`~transferkit.data.coerce.as_splits` takes (with ``y`` for arrays); ``val``
        overrides its val split; ``target`` is the target domain of domain adaptation; ``extra`` holds further
        data sets a method needs (``extra["target"]`` is taken as the target when ``target`` is not given).
        ``model`` is a :class:`~transferkit.model.TransferModel` to go on training instead of building a new one
        from ``model_config.backbone`` (a pruned model's recovery, :mod:`transferkit.compress`); it must have been
        trained on the data's classes, in the same order.
        """
        from ..adaptation.plan import check_settings, plan_adaptation, target_splits
        from ..methods import create_method, get_method_class
        from ..train.seeding import seed_everything

        model_cfg, train_cfg = self.model_config, self.train_config
        splits = as_splits(train, y)
        val_ds = as_dataset(val) if val is not None else splits.val
        train_ds = splits.train
        if not train_ds.is_labelled:
            raise DataError("The training data has no labels; give labelled data to fit().")
        check_label_set(train_ds, val_ds)
        extra_ds = {k: as_dataset(v) for k, v in (extra or {}).items()}
        if target is None and "target" in extra_ds:
            target = extra_ds.pop("target")
        t_splits = target_splits(target, train_ds) if target is not None else None
        method_cls = get_method_class(model_cfg.method)
        check_settings(train_cfg, t_splits, val_ds, method=method_cls.name, needs=method_cls.needs,
                       frozen=method_cls.frozen_backbone)
        seed_everything(train_cfg.seed)
        method = create_method(model_cfg.method, model_cfg.method_params)
        if model is None:
            model = _build_model(method, model_cfg, train_ds)
        elif list(model.classes) != list(train_ds.classes):
            raise DataError(f"The model to train was fitted on the classes {list(model.classes)[:5]} but the data "
                            f"has {list(train_ds.classes)[:5]}; give data with the model's label set.")
        prepared = PreparedFit(model, method, train_ds, val_ds, extra_ds, None, {}, None, model_cfg, train_cfg)
        if t_splits is not None:
            plan = plan_adaptation(train_ds, val_ds, t_splits, train_cfg, model=model, method=method.name,
                                   needs=method_cls.needs, takes_weights=not method_cls.frozen_backbone)
            extra_ds.update(plan.extra)
            prepared.train, prepared.sample_weights = plan.train, plan.sample_weights
            prepared.scorers, prepared.selection = plan.scorers, plan.selection
            prepared.selection_seconds = plan.selection_seconds
        return prepared

    def run(self, p: PreparedFit, *, checkpoint_dir: str | Path | None = None, resume: bool = False,
            on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> FittedModel:
        """Train what :meth:`prepare` built and return the model at its chosen epoch (see the module docstring).

        ``on_epoch_end(row)`` is the loop's hook after every epoch (``p.model`` then holds that epoch's weights:
        snapshot ensembles and SWA read them); a closed-form fit has no epochs and never calls it.
        """
        import torch

        model, method = p.model, p.method
        ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        if method.frozen_backbone:
            from .features import feature_context

            ctx, stage = feature_context(p, checkpoint_dir=ckpt, resume=resume)
        else:
            ctx = FitContext(model, p.train, p.model_config, p.train_config, extra=p.extra, val=p.val,
                             sample_weights=p.sample_weights, scorers=p.scorers, checkpoint_dir=ckpt, resume=resume)
            stage = None
        result = method.fit_closed_form(ctx, ctx.val)
        if result is None:
            from ..train.loop import run as run_loop  # imported only by fits that train: a probe needs none of it

            result = run_loop(ctx, method, method.training_data(ctx), on_epoch_end=on_epoch_end)
        ctx.model.load_state_dict(result.best_state)
        if p.selection_seconds is not None:
            result.extra["domain_classifier_seconds"] = p.selection_seconds
        if stage is not None:
            stage.record(result, model)
        method.finish(model, result)
        model.to("cpu").eval()
        torch.set_grad_enabled(True)
        result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        model.inference = dict(method.inference())
        _warn_unused_monitor(p.train_config, p.model_config.method, result)
        return FittedModel(model, list(p.train.classes), result.history, result, method.describe(), p.selection,
                           p.model_config, p.train_config)


def fit_pipeline(model_config: ModelConfig, train_config: TrainConfig, train: Any, y: Any = None, *,
                 val: Any = None, target: Any = None, extra: dict[str, Any] | None = None,
                 checkpoint_dir: str | Path | None = None, resume: bool = False) -> FittedModel:
    """Prepare and run one fit (:class:`FitPipeline`) in one call."""
    pipe = FitPipeline(model_config, train_config)
    prepared = pipe.prepare(train, y, val=val, target=target, extra=extra)
    return pipe.run(prepared, checkpoint_dir=checkpoint_dir, resume=resume)


def _build_model(method: Any, model_cfg: ModelConfig, train: Dataset) -> Any:
    """The method's backbone (modality checked against the data) under a new head for ``train``'s classes."""
    from ..model import TransferModel

    backbone = method.build_backbone(model_cfg)
    if backbone.preprocessing.modality != train.modality:
        raise DataError(
            f"Backbone '{model_cfg.backbone}' takes {backbone.preprocessing.modality} inputs but the data is "
            f"{train.modality}; choose a {train.modality} backbone (see `transferkit backbones`)."
        )
    return TransferModel(
        backbone, train.classes, head=model_cfg.head, head_hidden=model_cfg.head_hidden,
        head_dropout=model_cfg.head_dropout, image_size=model_cfg.image_size,
    )


def _warn_unused_monitor(cfg: TrainConfig, method: str, result: FitResult) -> None:
    """A target monitor the fit did not report (a method choosing its result its own way) was not used: say so."""
    if cfg.monitor in TARGET_MONITORS and result.history and cfg.monitor not in result.history[-1]:
        warnings.warn(f"Method '{method}' does not report '{cfg.monitor}' (it chooses its result its own way), so "
                      "train.monitor was not used.", stacklevel=4)


__all__ = ["FitPipeline", "FittedModel", "PreparedFit", "fit_pipeline"]
