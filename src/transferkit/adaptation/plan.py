"""The domain-adaptation plan of one fit: what the target adds to it, decided before any training.

Given the source training and validation splits, the target :class:`Splits` and the training settings, the plan
says which data the method gets (``extra``: the unlabelled target training split as ``"target"``, k labelled target
examples per class as ``"target_labelled"`` with ``train.target_labels_per_class``, and the whole labelled target
training split as ``"target_oracle"`` only to a method that declares that need), how the source is selected
(``train.source_selection``: weights, a filtered or a TrAdaBoost-extended training split, see
:mod:`transferkit.adaptation.selection`), and the label-free validators computed every epoch
(:func:`~transferkit.adaptation.validators.make_scorers`).

The importance-weighted validators (``iw_val_accuracy``, ``iw_val_loss``, ``dev_val_loss``) read the weights of the
source validation split from a cross-fitted source-vs-target classifier, which costs seconds to tens of seconds
(frozen features of both domains, five folds). It is fitted only when something reads it: a source selection, an
importance-weighted ``train.monitor``, or ``train.iw_validators: true`` (``transferkit compare`` sets it for its
validator table); otherwise the history has ``snd`` and ``im`` but no importance-weighted columns. The plan records
what the fit cost (``selection_seconds``; the run's ``summary.json`` has it as ``domain_classifier_seconds``).

It knows no method: the pipeline passes what it needs to know of one (its name, its ``needs``, whether it fits on
frozen features) as plain values.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import IW_MONITORS, TARGET_MONITORS, TrainConfig
from ..data.base import Dataset, Splits
from ..data.coerce import as_splits, concat, remap_labels
from ..errors import ConfigError, DataError

#: What each target-dependent monitor needs, for the sentence that refuses it.
MONITOR_NEEDS = {
    "iw_val_accuracy": "it needs a source validation split and target data.",
    "iw_val_loss": "it needs a source validation split and target data.",
    "dev_val_loss": "it needs a source validation split and target data.",
    "snd": "it needs target data.",
    "im": "it needs target data.",
    "target_accuracy": "it needs labelled target data.",
}

#: The data a method may declare in ``Method.needs``, and the sentence when a fit has no target to supply it.
NEED_SENTENCES = {
    "target": "Method '{name}' needs unlabelled target data; set `target:` in the config or pass target= to fit().",
    "target_oracle": "Method '{name}' trains on labelled target data; give a labelled `target:` section in the config "
                     "or fit(..., target=...).",
    "target_labelled": "Method '{name}' needs labelled target examples; give a labelled `target:` section and set "
                       "train.target_labels_per_class.",
}


@dataclass
class AdaptationPlan:
    """The training split after source selection, the method's extra data, weights, validators and the selection."""

    train: Dataset
    extra: dict[str, Dataset] = field(default_factory=dict)
    sample_weights: np.ndarray | None = None
    scorers: dict[str, Any] = field(default_factory=dict)
    selection: Any = None  # the SourceSelection when train.source_selection is not "none"
    selection_seconds: float | None = None  # what fitting the source-vs-target classifier cost; None: not fitted


def check_settings(cfg: TrainConfig, target: Splits | None, val: Dataset | None, *, method: str,
                   needs: frozenset[str], frozen: bool) -> None:
    """Refuse target-dependent settings and needs without a target, before any work is done.

    ``method``, ``needs`` and ``frozen`` describe the method: its name, the data it declares, and whether it fits
    its head on frozen features (it then chooses on the source validation split and cannot monitor the target).
    """
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
        for need in ("target_oracle", "target_labelled", "target"):
            if need in needs:
                raise ConfigError(NEED_SENTENCES[need].format(name=method))
        return
    if cfg.monitor in TARGET_MONITORS and frozen:
        raise ConfigError(f"Method '{method}' fits its head on cached features and chooses it on the source "
                          f"validation split, so it cannot monitor '{cfg.monitor}'; use a val_* monitor with it.")
    if cfg.monitor in ("iw_val_accuracy", "iw_val_loss", "dev_val_loss") and (val is None or not len(val)):
        raise ConfigError(f"train.monitor '{cfg.monitor}' needs a source validation split; give data with a val "
                          "split or fit(..., val=...).")
    if cfg.monitor == "target_accuracy" and not target.train.is_labelled:
        raise ConfigError("train.monitor 'target_accuracy' needs labelled target data; choose a label-free "
                          "validator (iw_val_accuracy, iw_val_loss, dev_val_loss, snd, im).")
    if "target_labelled" in needs and cfg.target_labels_per_class < 1:
        raise ConfigError(NEED_SENTENCES["target_labelled"].format(name=method))


def target_splits(target: Any, train: Dataset) -> Splits:
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
            ds = remap_labels(ds, list(train.classes))
        out.append(ds)
    if not len(out[0]):
        raise DataError("The target training split is empty; give target data to adapt to.")
    return Splits(*out)


def plan_adaptation(
    train: Dataset,
    val: Dataset | None,
    target: Splits,
    cfg: TrainConfig,
    *,
    model: Any,
    method: str,
    needs: frozenset[str],
    takes_weights: bool,
) -> AdaptationPlan:
    """The target data for the method, the source selection and the validators (see the module docstring).

    ``model`` gives the backbone the selection's domain classifier reads features from; ``takes_weights`` says
    whether the method's fit uses per-example weights (a head on cached features does not: a warning says so).
    """
    from ..data import subsample_train

    t_train = target.train
    extra: dict[str, Dataset] = {"target": t_train.unlabelled()}
    if "target_oracle" in needs:
        if not t_train.is_labelled:
            raise DataError(f"Method '{method}' trains on the labelled target but the target has no labels; give "
                            "labelled target data.")
        extra["target_oracle"] = t_train
    labelled = None
    if cfg.target_labels_per_class > 0:
        if not t_train.is_labelled:
            raise DataError("train.target_labels_per_class needs target data with labels; give a labelled target or "
                            "set it to 0.")
        labelled = subsample_train(t_train, per_class=cfg.target_labels_per_class, seed=cfg.seed)
        extra["target_labelled"] = labelled
    t0 = time.perf_counter()
    selection = _select(train, val, t_train, labelled, cfg, model)
    seconds = time.perf_counter() - t0 if selection is not None else None
    plan = AdaptationPlan(train, extra, selection=selection if cfg.source_selection != "none" else None,
                          selection_seconds=seconds)
    _apply_selection(plan, selection, labelled, cfg)
    if plan.sample_weights is not None and not takes_weights:
        warnings.warn(f"Method '{method}' fits its head on cached features and takes no sample weights; "
                      "use train.source_selection: keep with it.", stacklevel=4)
    plan.scorers = _scorers(val, selection, target, cfg)
    return plan


def wants_iw_validators(cfg: TrainConfig) -> bool:
    """Whether the fit computes the importance-weighted validators: ``train.iw_validators``, or when it is unset
    (``None``), whether ``train.monitor`` is one of them."""
    return cfg.iw_validators if cfg.iw_validators is not None else cfg.monitor in IW_MONITORS


def _select(train: Dataset, val: Dataset | None, t_train: Dataset, labelled: Dataset | None, cfg: TrainConfig,
            model: Any) -> Any:
    """The source selection: for ``train.source_selection``, or (as importance weights of the validation split) for
    the importance-weighted validators when they are wanted; ``None`` when nothing reads it."""
    from .selection import select_source

    if cfg.source_selection == "none" and (val is None or len(val) == 0 or not wants_iw_validators(cfg)):
        return None
    mode = "weight" if cfg.source_selection == "none" else cfg.source_selection
    return select_source(
        train, t_train, on=cfg.selection_on, backbone=model.backbone, image_size=model.image_size, mode=mode,
        clip=cfg.selection_clip, keep_fraction=cfg.selection_fraction, seed=cfg.seed, labelled_target=labelled,
    )


def _apply_selection(plan: AdaptationPlan, selection: Any, labelled: Dataset | None, cfg: TrainConfig) -> None:
    """Weigh, filter or (TrAdaBoost) extend the source training split as ``train.source_selection`` says."""
    if cfg.source_selection == "weight":
        plan.sample_weights = selection.weights
    elif cfg.source_selection == "keep":
        plan.train = kept = plan.train.subset(selection.keep)
        if (kept.class_counts() == 0).any():
            missing = [c for c, n in zip(kept.classes, kept.class_counts(), strict=True) if n == 0]
            warnings.warn(f"Keeping the most target-like {cfg.selection_fraction:.0%} of the source left no "
                          f"example of class(es) {', '.join(missing[:5])}; raise train.selection_fraction.",
                          stacklevel=5)
    elif cfg.source_selection == "tradaboost":
        assert labelled is not None and selection.target_weights is not None
        plan.train = concat(plan.train, labelled)
        plan.sample_weights = np.concatenate([selection.weights, selection.target_weights])


def _scorers(val: Dataset | None, selection: Any, target: Splits, cfg: TrainConfig) -> dict[str, Any]:
    """The label-free validators (and ``target_accuracy`` when the target has labels); refuses an impossible monitor."""
    from .validators import make_scorers

    t_train = target.train
    val_w = val_raw = None
    if selection is not None and val is not None and len(val):
        val_w = selection.weigh(val)
        val_raw = selection.weigh(val, normalise=False)
    oracle = target.val if target.val is not None and target.val.is_labelled else t_train
    scorers = make_scorers(
        val=val, val_weights=val_w, val_raw_weights=val_raw, target=t_train,
        target_labelled=oracle if oracle.is_labelled else None, seed=cfg.seed, batch_size=max(cfg.batch_size, 128),
    )
    if cfg.monitor in TARGET_MONITORS and cfg.monitor not in scorers:
        raise ConfigError(f"train.monitor '{cfg.monitor}' cannot be computed here: "
                          + MONITOR_NEEDS.get(cfg.monitor, "it needs target data."))
    return scorers
