"""Source-sample selection ("hindsight selection"): which source examples look like the target, and how much.

:func:`select_source` represents source and target (frozen backbone features, or raw inputs: tabular columns or
flattened pixels), then, by ``mode``:

* ``"weight"``: importance weights ``w(x) ~ p_t(x) / p_s(x)`` of every source example from the cross-fitted
  domain classifier of :mod:`transferkit.adaptation.importance` (mean 1, clipped), for weighted training;
* ``"keep"``: keeps the ``keep_fraction`` of source examples with the highest out-of-fold ``P(target|x)`` (the
  most target-like) and trains on them unweighted: a hard version of the same idea with a bounded variance;
* ``"tradaboost"``: the final source weights of TrAdaBoost (:mod:`transferkit.adaptation.tradaboost`), when a few
  labelled target examples exist.

The :class:`Selection` it returns carries the weights, the kept indices and the diagnostics (domain AUC, effective
sample size), and weighs further source examples (the validation split, for the label-free validators).

Why hand-written: skada 0.6 has no keep mode and no TrAdaBoost (see the two modules above for the rest).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.base import Dataset
from ..data.preprocessing import Preprocessing
from ..errors import ConfigError, DataError
from .importance import DomainClassifier, domain_probabilities, effective_sample_size, normalise_weights, odds_ratio
from .tradaboost import TrAdaBoostClassifier

INPUT_IMAGE_SIZE = 32  # on="inputs": images are compared as flattened pixels at most this many pixels a side
MODES = ("weight", "keep", "tradaboost")
ON = ("auto", "features", "inputs")


# --- representations of a Dataset --------------------------------------------------------------------------------
def resolve_on(on: str, modality: str) -> str:
    """``"auto"`` -> ``"inputs"`` for tabular data, ``"features"`` for images and text."""
    if on not in ON:
        raise ConfigError(f"Selection representation '{on}' is unknown; use one of: {', '.join(ON)}.")
    if on == "auto":
        return "inputs" if modality == "tabular" else "features"
    return on


def input_matrix(ds: Dataset, image_size: int | None = None) -> np.ndarray:
    """The raw inputs as rows: tabular arrays as they are, images as flattened RGB pixels in [0, 1].

    Images are resized to ``image_size`` (default: their own size, at most ``INPUT_IMAGE_SIZE``) so that two data
    sets of different sizes or colour (grey digits, RGB photos) give comparable rows. Text has no raw numeric form.
    """
    from ..data.loaders import make_loader

    if ds.modality == "tabular":
        return np.asarray(ds.inputs, dtype=np.float32).reshape(len(ds), -1)
    if ds.modality == "text":
        raise DataError("Text has no numeric raw inputs; select the source on backbone features (on='features').")
    size = image_size or default_input_size(ds)
    pre = Preprocessing("image", image_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    rows = [x.reshape(len(x), -1).numpy() for x, _ in make_loader(ds, pre, image_size=size, train=False,
                                                                      batch_size=512)]
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 3 * size * size), np.float32)


def default_input_size(*datasets: Dataset) -> int:
    """The common side for ``input_matrix``: the smallest in-memory image side, at most ``INPUT_IMAGE_SIZE``."""
    sides = [int(d.inputs.shape[1]) for d in datasets if isinstance(d.inputs, np.ndarray) and d.inputs.ndim >= 3]
    return min([INPUT_IMAGE_SIZE, *sides])


def make_representation(
    on: str,
    *,
    backbone: Any = None,
    image_size: int | None = None,
    engine: str = "auto",
    cache: Any = True,
) -> Callable[[Dataset], np.ndarray]:
    """A function ``Dataset -> (N, D) rows`` for the domain classifier: frozen backbone features or raw inputs."""
    if on == "features":
        if backbone is None:
            raise ConfigError("Selection on features needs a backbone (a name or a Backbone); or use on='inputs'.")

        def features(ds: Dataset) -> np.ndarray:
            from ..features import extract_features

            return np.asarray(extract_features(backbone, ds, image_size=image_size, engine=engine, cache=cache))

        return features
    if on == "inputs":
        return lambda ds: input_matrix(ds, image_size)
    raise ConfigError(f"Selection representation '{on}' is unknown; use features or inputs.")


# --- selection of a source Dataset -------------------------------------------------------------------------------
@dataclass
class Selection:
    """The outcome of :func:`select_source`.

    Attributes:
        mode: ``"weight"``, ``"keep"`` or ``"tradaboost"``.
        weights: one weight per source example, mean 1, at most ``clip`` (importance weights; for ``tradaboost``
            TrAdaBoost's final source weights).
        keep: indices of the source examples to train on (all of them except in ``keep`` mode), ascending.
        p_target: out-of-fold ``P(target|x)`` of each source example.
        domain_auc: out-of-fold ROC-AUC of the source-vs-target classifier (0.5: no detectable shift).
        ess: effective sample size of ``weights`` (``len(keep)`` in ``keep`` mode).
        target_weights: ``tradaboost`` only: final weights of the labelled target examples (same scale as
            ``weights``).
    """

    mode: str
    on: str
    weights: np.ndarray
    keep: np.ndarray
    p_target: np.ndarray
    domain_auc: float
    ess: float
    clip: float | None
    keep_fraction: float
    n_source: int
    n_target: int
    classifier: DomainClassifier | None = field(default=None, repr=False)
    target_weights: np.ndarray | None = None
    represent: Callable[[Dataset], np.ndarray] | None = field(default=None, repr=False)

    def weigh(self, source: Dataset, *, normalise: bool = True) -> np.ndarray:
        """Importance weights of further *source* examples (e.g. the validation split) from the fitted classifier.

        ``normalise=True``: mean 1 over ``source``, at most ``clip``; ``False``: the raw ratio estimates
        ``p_t/p_s`` (clipped at ``clip`` but not rescaled; what DEV's control variate needs).
        """
        if self.classifier is None or self.represent is None:
            raise DataError("This selection has no domain classifier to weigh further examples with.")
        ratio = self.classifier.ratio(self.represent(source))
        if normalise:
            return normalise_weights(ratio, self.clip)
        return np.minimum(ratio, self.clip) if self.clip is not None else ratio

    def summary(self) -> dict[str, Any]:
        """JSON-ready diagnostics (for ``summary.json`` and reports)."""
        w = self.weights
        return {
            "mode": self.mode, "on": self.on, "domain_auc": round(self.domain_auc, 4), "ess": round(self.ess, 1),
            "ess_fraction": round(self.ess / max(1, self.n_source), 4), "n_source": self.n_source,
            "n_target": self.n_target, "n_kept": len(self.keep), "clip": self.clip,
            "keep_fraction": self.keep_fraction if self.mode == "keep" else None,
            "weight_max": round(float(w.max()), 4), "weight_min": round(float(w.min()), 6),
            "clipped": int((w >= (self.clip or math.inf) * (1 - 1e-9)).sum()),
        }


def keep_most_target_like(p_target: np.ndarray, fraction: float) -> np.ndarray:
    """Indices (ascending) of the ``round(fraction * n)`` rows with the highest ``p_target`` (at least one)."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"The kept fraction must be in (0, 1], not {fraction}.")
    n = len(p_target)
    k = max(1, int(round(fraction * n)))
    order = np.argsort(-np.asarray(p_target), kind="stable")
    return np.sort(order[:k])


def select_source(
    source: Dataset,
    target: Dataset,
    *,
    on: str = "auto",
    backbone: Any = None,
    image_size: int | None = None,
    mode: str = "weight",
    clip: float | None = 10.0,
    keep_fraction: float = 0.5,
    seed: int = 0,
    labelled_target: Dataset | None = None,
    classifier: str | Any = "auto",
    folds: int = 5,
    C: float | str = "auto",
    engine: str = "auto",
    cache: Any = True,
    n_estimators: int = 10,
) -> Selection:
    """Weigh or filter the ``source`` examples by how target-like they are (see the module docstring).

    Args:
        source: the labelled source training split (labels are used only by ``tradaboost``).
        target: target inputs (labels, if any, are ignored).
        on: ``"features"`` (frozen ``backbone`` features, cached on disk), ``"inputs"`` (tabular columns or
            flattened pixels) or ``"auto"`` (inputs for tabular data, features otherwise).
        backbone: a Backbone or backbone name, for ``on="features"``.
        image_size: image side for features (the backbone's own by default) or raw pixels.
        mode: ``"weight"`` (importance weights), ``"keep"`` (the ``keep_fraction`` most target-like examples) or
            ``"tradaboost"`` (TrAdaBoost's final source weights; needs ``labelled_target``).
        clip: largest weight after normalising to mean 1 (``None``: no clipping).
        seed: fixes the folds, subsamples and TrAdaBoost's learners.
        labelled_target: a few labelled target examples (``tradaboost``).
        classifier: the domain classifier (see :func:`make_domain_classifier`).
        n_estimators: TrAdaBoost rounds.

    Raises:
        ConfigError: unknown mode / representation, a clip below 1, a fraction outside (0, 1], ``tradaboost``
            without labelled target examples.
        DataError: source and target of different modalities, too few examples.
    """
    if mode not in MODES:
        raise ConfigError(f"Selection mode '{mode}' is unknown; use one of: {', '.join(MODES)}.")
    if source.modality != target.modality:
        raise DataError(f"The source holds {source.modality} data but the target {target.modality}; "
                        "source and target must be the same kind of data.")
    if clip is not None and clip < 1.0:
        raise ConfigError(f"The weight clip must be at least 1 (weights have mean 1), not {clip}.")
    if mode == "keep" and not 0.0 < keep_fraction <= 1.0:
        raise ConfigError(f"The kept fraction must be in (0, 1], not {keep_fraction}.")
    on = resolve_on(on, source.modality)
    if on == "inputs" and image_size is None and source.modality == "image":
        image_size = default_input_size(source, target)
    represent = make_representation(on, backbone=backbone, image_size=image_size, engine=engine, cache=cache)
    xs, xt = represent(source), represent(target)
    ps, _, dc, auc = domain_probabilities(xs, xt, classifier=classifier, folds=folds, C=C, seed=seed)
    weights = normalise_weights(odds_ratio(ps, dc.prior_ratio), clip)
    keep = np.arange(len(source))
    target_weights = None
    if mode == "keep":
        keep = keep_most_target_like(ps, keep_fraction)
    elif mode == "tradaboost":
        if labelled_target is None or not labelled_target.is_labelled or len(labelled_target) == 0:
            raise ConfigError("TrAdaBoost needs a few labelled target examples; set train.target_labels_per_class.")
        if source.labels is None:
            raise DataError("TrAdaBoost needs a labelled source.")
        booster = TrAdaBoostClassifier(n_estimators=n_estimators, random_state=seed)
        booster.fit(xs, source.labels, represent(labelled_target), labelled_target.labels)
        both = normalise_weights(np.concatenate([booster.source_weights_, booster.target_weights_]), clip)
        weights, target_weights = both[: len(source)], both[len(source):]
    ess = float(len(keep)) if mode == "keep" else effective_sample_size(weights)
    if auc > 0.99:
        hint = "try on='features' with a pretrained backbone" if on == "inputs" else "try a backbone whose features " \
            "both domains share"
        warnings.warn(
            f"The source and target are almost perfectly separable (domain AUC {auc:.3f}), so the importance "
            f"weights rest on very few source examples; {hint}.",
            stacklevel=2,
        )
    return Selection(mode, on, weights, keep, ps, auc, ess, clip, keep_fraction, len(source), len(target), dc,
                     target_weights, represent)
