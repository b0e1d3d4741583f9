"""Source-sample selection ("hindsight selection"): which source examples look like the target, and how much.

**Importance weights from a domain classifier.** Under covariate shift the labelling rule is shared,
``p_s(y|x) = p_t(y|x)``, and only the input distributions differ; the target risk is then a re-weighted source
risk, ``E_t[l(h(x), y)] = E_s[w(x) l(h(x), y)]`` with the density ratio ``w(x) = p_t(x) / p_s(x)`` (Shimodaira
2000). The ratio is estimated without densities (Bickel et al. 2007/2009): pool ``n_s`` source and ``n_t`` target
inputs, label them by domain ``d`` (1 = target) and fit a probabilistic classifier ``g(x) ~ P(d=1|x)``. By Bayes'
rule ``p_t(x) / p_s(x) = [P(d=1|x) / P(d=0|x)] * (n_s / n_t)``, so

    w(x) = g(x) / (1 - g(x)) * n_s / n_t.

* The classifier is a logistic regression on standardised inputs (or frozen backbone features), its L2 strength
  chosen by 3-fold log-loss (so that a classifier that finds nothing is shrunk to the constant and identical domains
  get weights of ~1, not fitted noise). For low-dimensional inputs (at most ``QUADRATIC_MAX_DIM`` columns) the
  default (``classifier="auto"``) adds all degree-2 products first: the log-ratio of two Gaussians is quadratic in
  ``x``, so a linear logit is misspecified for the simplest shifts (on skada's covariate-shift pair, whose target
  is a Gaussian bump of the source, the linear model's weights correlate ~0.02 with the true ratio, the quadratic
  one's ~0.9). Wide features (a CNN's 768-d) are projected on
  their top ``PCA_DIM`` principal components (whitened) first: on MNIST vs MNIST-M features of ``digits-cnn`` the
  domain AUC is the same (0.987 vs 0.986 on all 768) and each fit ~20x faster. All fits run on one BLAS thread
  (the solver's many small steps lose more to thread hand-offs than they gain: 5-10x slower with 2 threads on a
  busy 2-core machine, measured).
* **Cross-fitting.** Each example's ``g(x)`` comes from a model fitted on the other ``folds - 1`` folds (stratified
  k-fold over the pooled set), so an example's weight never reflects a classifier that memorised it (in-sample
  probabilities of a flexible classifier push every weight towards 0 or infinity). New examples (the source
  validation split) get the mean of the fold models' probabilities.
* **Clipping and normalisation.** Ratios are heavy-tailed, so the weights are rescaled to mean 1 with none above
  ``clip``: ``w_i = min(c * r_i, clip)`` with the one ``c > 0`` that makes ``mean(w) = 1`` (found exactly by sorting;
  a clip below 1 is impossible with mean 1 and is refused).
* **Diagnostics.** The domain classifier's out-of-fold ROC-AUC (0.5: the domains are indistinguishable and all weights
  are ~1; near 1: they barely overlap and weighting cannot help much) and Kish's effective sample size
  ``ESS = (sum w)^2 / sum w^2`` (``n`` for equal weights; a small ESS means a few source examples carry the fit).

``mode="keep"`` instead keeps the ``keep_fraction`` of source examples with the highest ``g(x)`` (the most
target-like) and trains on them unweighted: a hard version of the same idea with a bounded variance.

**TrAdaBoost** (Dai, Yang, Xue, Yu 2007, "Boosting for transfer learning") is for when a few labelled target
examples exist. Boosting runs on source + labelled target with weights ``w``; each round fits the base learner with
sample weights ``w / sum(w)`` and measures its weighted error on the *target* part,
``eps_t = sum_{target} w_i [h_t(x_i) != y_i] / sum_{target} w_i`` (clipped to ``[1e-10, 0.499]``). With
``beta_t = eps_t / (1 - eps_t)`` and ``beta = 1 / (1 + sqrt(2 ln n_s / N))``, misclassified source examples shrink,
``w_i <- w_i * beta^[h_t(x_i) != y_i]`` (they disagree with the target), and misclassified target examples grow,
``w_i <- w_i * beta_t^-[h_t(x_i) != y_i]`` (AdaBoost). The prediction is the vote of the second half of the rounds,
``argmax_c sum_{t >= ceil(N/2)} ln(1/beta_t) [h_t(x) = c]`` (Dai et al.'s binary rule, read as a weighted vote so
that it covers several classes). The final source weights (``source_weights_``, mean 1) are usable as sample weights
of any other learner: this is how ``train.source_selection: tradaboost`` feeds the training loop.

One choice the paper leaves open is the initial ``w^1``: here the labelled target starts with the same total weight
as the source (``balance=True``; each target example ``n_s / n_t``). With equal per-example weights and
``n_s >> n_t`` the first learner hardly sees the target, its target error then stays at the 0.5 clip, ``beta_t ~ 1``
and the target weights stop growing; measured on skada's covariate shift with 2 labelled target examples per class
(5 noise-free draws of 1,600 rows), uniform initial weights ended *below* plain logistic regression on the pooled
data (0.85 vs 0.91 target accuracy) and balanced ones above it (0.99).

Why hand-written: skada 0.6 has domain-classifier re-weighting (``DiscriminatorReweight``) but fits and predicts on
the same examples (no cross-fitting), has no clipping to a bound with mean 1, no ESS/AUC diagnostics and no keep
mode, and it has no TrAdaBoost; ADAPT (which has one) is not installed. The pieces used are scikit-learn's
(``cross_validate`` with the fold estimators and indices, ``LogisticRegression``, ``PolynomialFeatures``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

from ..data.base import Dataset
from ..errors import ConfigError, DataError

QUADRATIC_MAX_DIM = 20  # "auto" domain classifier: degree-2 features up to this many input columns (<= 230 terms)
PCA_DIM = 64  # "auto" domain classifier: wider inputs are first projected on their top PCA_DIM components
MAX_FIT_PER_DOMAIN = 10_000  # examples per domain the domain classifier is fitted on (seeded subsample beyond)
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # candidate inverse regularisation strengths (C="auto")
C_SEARCH_ROWS = 4000  # rows the choice of C is made on
INPUT_IMAGE_SIZE = 32  # on="inputs": images are compared as flattened pixels at most this many pixels a side
MODES = ("weight", "keep", "tradaboost")
ON = ("auto", "features", "inputs")


# --- the domain classifier ---------------------------------------------------------------------------------------
def make_domain_classifier(dim: int, kind: str | Any = "auto", C: float = 1.0, seed: int = 0) -> Any:
    """The source-vs-target classifier: a scikit-learn pipeline ending in a logistic regression.

    ``kind``: ``"auto"`` (degree-2 features when ``dim <= QUADRATIC_MAX_DIM``; a whitened PCA to ``PCA_DIM``
    components first when ``dim > PCA_DIM``; else plain), ``"linear"`` (standardise, logistic regression),
    ``"quadratic"``, or any scikit-learn classifier with ``predict_proba`` (used as given).
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    if not isinstance(kind, str):
        return clone(kind)
    if kind not in ("auto", "linear", "quadratic"):
        raise ConfigError(
            f"Domain classifier '{kind}' is unknown; use auto, linear, quadratic or an sklearn classifier."
        )
    steps: list[Any] = []
    if kind == "quadratic" or (kind == "auto" and dim <= QUADRATIC_MAX_DIM):
        steps.append(PolynomialFeatures(2, include_bias=False))
    steps.append(StandardScaler())
    if kind == "auto" and dim > PCA_DIM:
        steps.append(PCA(PCA_DIM, whiten=True, random_state=int(seed)))
    steps.append(LogisticRegression(C=C, max_iter=2000))
    return make_pipeline(*steps)


@dataclass
class DomainClassifier:
    """Fitted fold models of the source-vs-target classifier; turns inputs into ``P(target|x)`` and ratios."""

    models: list[Any]
    prior_ratio: float  # n_s / n_t of the examples it was fitted on

    def p_target(self, x: np.ndarray) -> np.ndarray:
        """Mean over the fold models of ``P(target | x)``."""
        x = np.asarray(x, dtype=np.float64)
        return np.mean([m.predict_proba(x)[:, 1] for m in self.models], axis=0)

    def ratio(self, x: np.ndarray) -> np.ndarray:
        """Raw density-ratio estimates ``p_t(x) / p_s(x)`` (not clipped, not normalised)."""
        return odds_ratio(self.p_target(x), self.prior_ratio)


def odds_ratio(p_target: np.ndarray, prior_ratio: float) -> np.ndarray:
    """``p / (1 - p) * n_s / n_t``, with ``p`` kept inside ``[1e-12, 1 - 1e-12]``."""
    p = np.clip(np.asarray(p_target, dtype=np.float64), 1e-12, 1 - 1e-12)
    return p / (1 - p) * prior_ratio


def domain_probabilities(
    xs: np.ndarray,
    xt: np.ndarray,
    *,
    classifier: str | Any = "auto",
    folds: int = 5,
    C: float | str = "auto",
    seed: int = 0,
    max_fit: int = MAX_FIT_PER_DOMAIN,
) -> tuple[np.ndarray, np.ndarray, DomainClassifier, float]:
    """Cross-fitted ``P(target|x)`` of every source and target row, the fold models and the out-of-fold AUC.

    At most ``max_fit`` rows per domain (a seeded subsample) fit the classifier; those rows get out-of-fold
    probabilities, the others the mean of the fold models (they were never fitted on, so they are out of sample too).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_validate

    xs = _as_matrix(xs, "source")
    xt = _as_matrix(xt, "target")
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"Source rows have {xs.shape[1]} columns but target rows {xt.shape[1]}; use the same features.")
    if folds < 2:
        raise ConfigError(f"Cross-fitting needs at least 2 folds, not {folds}.")
    if min(len(xs), len(xt)) < folds:
        raise DataError(f"Source and target need at least {folds} examples each to weigh the source, "
                        f"not {len(xs)} and {len(xt)}.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E1]))
    fit_s = _subsample(len(xs), max_fit, rng)
    fit_t = _subsample(len(xt), max_fit, rng)
    x = np.concatenate([xs[fit_s], xt[fit_t]])
    d = np.concatenate([np.zeros(len(fit_s), dtype=np.int64), np.ones(len(fit_t), dtype=np.int64)])
    with one_blas_thread():
        if C == "auto":
            C = choose_c(x, d, xs.shape[1], classifier, seed)
        est = make_domain_classifier(xs.shape[1], classifier, float(C), seed)
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(seed))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)  # convergence chatter on separable domains
            res = cross_validate(est, x, d, cv=cv, return_estimator=True, return_indices=True, scoring=None)
    oof = np.empty(len(x))
    for model, test_idx in zip(res["estimator"], res["indices"]["test"], strict=True):
        oof[test_idx] = model.predict_proba(x[test_idx])[:, 1]
    dc = DomainClassifier(list(res["estimator"]), len(fit_s) / len(fit_t))
    ps = _fill(oof[: len(fit_s)], fit_s, xs, dc)
    pt = _fill(oof[len(fit_s):], fit_t, xt, dc)
    auc = float(roc_auc_score(d, oof))
    return ps, pt, dc, auc


def choose_c(x: np.ndarray, d: np.ndarray, dim: int, classifier: str | Any, seed: int) -> float:
    """The inverse regularisation strength of the domain classifier with the best 3-fold log-loss (``C_GRID``).

    Without it, identical domains get weights that scatter around 1 from fitted noise (a 5-D Gaussian against
    itself, 1,000 rows each: max |w - 1| ~2.7 at C=1, ~0.5 with the chosen C); with it, a classifier that finds
    nothing to separate is shrunk to the constant and all weights are ~1. Fitted on at most ``C_SEARCH_ROWS`` rows.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    if not isinstance(classifier, str):
        return 1.0  # a user's classifier keeps its own regularisation
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0]))
    rows = _subsample(len(x), C_SEARCH_ROWS, rng)
    est = make_domain_classifier(dim, classifier, 1.0, seed)
    step = est.steps[-1][0]
    search = GridSearchCV(est, {f"{step}__C": list(C_GRID)}, scoring="neg_log_loss", refit=False,
                          cv=StratifiedKFold(3, shuffle=True, random_state=int(seed)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        search.fit(x[rows], d[rows])
    return float(search.best_params_[f"{step}__C"])


def one_blas_thread() -> Any:
    """Run scikit-learn's solvers on one BLAS thread (see the module docstring: faster for these fits)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _subsample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, size=cap, replace=False))


def _fill(oof_part: np.ndarray, fitted: np.ndarray, x: np.ndarray, dc: DomainClassifier) -> np.ndarray:
    out = np.empty(len(x))
    mask = np.ones(len(x), dtype=bool)
    mask[fitted] = False
    out[fitted] = oof_part
    if mask.any():
        out[mask] = dc.p_target(x[mask])
    return out


def _as_matrix(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        arr = arr.reshape(len(arr), -1)
    if not np.isfinite(arr).all():
        raise DataError(f"The {what} features contain NaN or infinite values; clean them before weighing the source.")
    return arr


# --- weights -----------------------------------------------------------------------------------------------------
def normalise_weights(ratio: np.ndarray, clip: float | None = 10.0) -> np.ndarray:
    """Rescale non-negative ``ratio`` to mean 1 with no weight above ``clip``: ``min(c * r, clip)``, exact ``c``.

    ``clip=None`` only rescales. Raises ``ConfigError`` for ``clip < 1`` (no weights with mean 1 stay below it).
    """
    r = np.asarray(ratio, dtype=np.float64)
    if r.ndim != 1 or len(r) == 0:
        raise DataError("Importance weights need a non-empty 1-D array of ratios.")
    if (r < 0).any() or not np.isfinite(r).all():
        raise DataError("Density ratios must be finite and non-negative.")
    r = np.maximum(r, 1e-12 * max(r.max(), 1e-300))
    if clip is None or math.isinf(clip):
        return r / r.mean()
    if clip < 1.0:
        raise ConfigError(f"The weight clip must be at least 1 (weights have mean 1), not {clip}.")
    n = len(r)
    desc = np.sort(r)[::-1]
    suffix = np.cumsum(desc[::-1])[::-1]  # suffix[k] = sum of desc[k:]
    k = np.arange(n)
    c = (n - k * clip) / suffix  # scale if the k largest are clipped and the rest are not
    ok = (c > 0) & (c * desc <= clip * (1 + 1e-12))
    ok[1:] &= c[1:] * desc[:-1] >= clip * (1 - 1e-12)
    first = int(np.flatnonzero(ok)[0]) if ok.any() else n - 1
    w = np.minimum(c[first] * r, clip)
    return w / w.mean() if not math.isclose(w.mean(), 1.0, rel_tol=1e-9) else w


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``: ``n`` for equal weights, 1 for one non-zero weight."""
    w = np.asarray(weights, dtype=np.float64)
    s2 = float((w**2).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def importance_weights(
    xs: np.ndarray,
    xt: np.ndarray,
    *,
    clip: float | None = 10.0,
    classifier: str | Any = "auto",
    folds: int = 5,
    C: float | str = "auto",
    seed: int = 0,
) -> np.ndarray:
    """Importance weights ``w(x) ~ p_t(x) / p_s(x)`` of the source rows ``xs`` (mean 1, at most ``clip``).

    ``xs``, ``xt``: 2-D arrays (rows = examples) of the same columns. See the module docstring for the maths.
    """
    ps, _, dc, _ = domain_probabilities(xs, xt, classifier=classifier, folds=folds, C=C, seed=seed)
    return normalise_weights(odds_ratio(ps, dc.prior_ratio), clip)


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
    from ..backbones.base import Preprocessing
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


# --- TrAdaBoost ----------------------------------------------------------------------------------------------------
class TrAdaBoostClassifier(ClassifierMixin, BaseEstimator):
    """TrAdaBoost (Dai et al. 2007) for a large labelled source and a few labelled target examples.

    ``fit(X_source, y_source, X_target, y_target)``; then ``predict`` / ``predict_proba`` / ``score`` as any
    scikit-learn classifier. See the module docstring for the updates.

    Args:
        estimator: the base learner (must accept ``sample_weight``; a Pipeline gets it routed to its last step).
            Default: logistic regression on features standardised with the mean and scale of all training rows.
        n_estimators: boosting rounds ``N``.
        voting: ``"hard"`` (Dai et al.'s weighted vote of the learners' labels) or ``"soft"`` (the same weights on
            their probabilities).
        balance: start the labelled target with the source's total weight (see the module docstring); ``False``:
            every example starts at 1.
        random_state: seed of the base learners that take one.

    Attributes:
        estimators_, betas_ (``beta_t``), errors_ (``eps_t``): per round.
        source_weights_, target_weights_: the final weights ``w^{N+1}`` (jointly rescaled to mean 1 over both).
        classes_: the class labels.
    """

    def __init__(self, estimator: Any = None, n_estimators: int = 10, voting: str = "hard", balance: bool = True,
                 random_state: int | None = 0) -> None:
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.balance = balance
        self.voting = voting
        self.random_state = random_state

    def _base(self) -> Any:
        if self.estimator is not None:
            est = clone(self.estimator)
        else:
            from sklearn.linear_model import LogisticRegression

            est = LogisticRegression(max_iter=2000)  # on inputs standardised by fit()
        params = est.get_params()
        seeds = {k: self.random_state for k in params if k == "random_state" or k.endswith("__random_state")}
        return est.set_params(**seeds) if seeds else est

    @staticmethod
    def _fit_weighted(est: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> Any:
        """``est.fit`` with sample weights, for plain estimators and Pipelines, with or without metadata routing."""
        import sklearn
        from sklearn.pipeline import Pipeline

        if not isinstance(est, Pipeline):
            return est.fit(x, y, sample_weight=w)
        if sklearn.get_config().get("enable_metadata_routing", False):  # skada switches routing on when imported
            for i, (_, step) in enumerate(est.steps):
                if hasattr(step, "set_fit_request"):
                    step.set_fit_request(sample_weight=i == len(est.steps) - 1)
            return est.fit(x, y, sample_weight=w)
        return est.fit(x, y, **{f"{est.steps[-1][0]}__sample_weight": w})

    def fit(self, X: Any, y: Any, X_target: Any, y_target: Any) -> TrAdaBoostClassifier:
        """Boost on the source ``X, y`` and the labelled target ``X_target, y_target``."""
        if self.n_estimators < 1:
            raise ConfigError(f"TrAdaBoost needs at least one round, not n_estimators={self.n_estimators}.")
        if self.voting not in ("hard", "soft"):
            raise ConfigError(f"TrAdaBoost voting must be 'hard' or 'soft', not '{self.voting}'.")
        xs, xt = _as_matrix(X, "source"), _as_matrix(X_target, "target")
        ys, yt = np.asarray(y), np.asarray(y_target)
        if len(xs) != len(ys) or len(xt) != len(yt):
            raise DataError("TrAdaBoost got a different number of rows and labels.")
        if len(xt) == 0:
            raise DataError("TrAdaBoost needs at least one labelled target example.")
        self.classes_ = unique_labels(ys, yt)
        n, m = len(xs), len(xt)
        x = np.concatenate([xs, xt])
        self.scaler_ = None
        if self.estimator is None:
            from sklearn.preprocessing import StandardScaler

            self.scaler_ = StandardScaler().fit(x)
            x = self.scaler_.transform(x)
        yy = np.concatenate([ys, yt])
        w = np.concatenate([np.ones(n), np.full(m, n / m if self.balance else 1.0)])
        beta = 1.0 / (1.0 + math.sqrt(2.0 * math.log(max(n, 2)) / self.n_estimators))
        self.estimators_, self.betas_, self.errors_ = [], [], []
        for _ in range(self.n_estimators):
            p = w / w.sum()
            with one_blas_thread():
                est = self._fit_weighted(self._base(), x, yy, p * (n + m))
                wrong = (est.predict(x) != yy).astype(np.float64)
            eps = float(np.sum(w[n:] * wrong[n:]) / np.sum(w[n:]))
            eps = min(max(eps, 1e-10), 0.499)
            beta_t = eps / (1.0 - eps)
            w[:n] *= beta ** wrong[:n]
            w[n:] *= beta_t ** -wrong[n:]
            w /= w.mean()  # only relative weights matter; keeps them away from under/overflow
            self.estimators_.append(est)
            self.betas_.append(beta_t)
            self.errors_.append(eps)
        self.source_weights_ = w[:n].copy()
        self.target_weights_ = w[n:].copy()
        self.n_features_in_ = xs.shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Vote shares of the second half of the rounds, each weighted by ``ln(1 / beta_t)``."""
        check_is_fitted(self, "estimators_")
        x = _as_matrix(X, "input")
        if self.scaler_ is not None:
            x = self.scaler_.transform(x)
        start = math.ceil(len(self.estimators_) / 2) - 1  # rounds ceil(N/2)..N, 1-based as in the paper
        index = {c: i for i, c in enumerate(self.classes_)}
        votes = np.zeros((len(x), len(self.classes_)))
        for est, b in zip(self.estimators_[start:], self.betas_[start:], strict=True):
            alpha = math.log(1.0 / b)
            if self.voting == "soft":
                cols = [index[c] for c in est.classes_]
                votes[:, cols] += alpha * est.predict_proba(x)
            else:
                pred = est.predict(x)
                votes[np.arange(len(x)), [index[c] for c in pred]] += alpha
        total = votes.sum(1, keepdims=True)
        return np.where(total > 0, votes / np.where(total > 0, total, 1), 1.0 / len(self.classes_))

    def predict(self, X: Any) -> np.ndarray:
        """The class with the largest weighted vote."""
        return self.classes_[self.predict_proba(X).argmax(1)]
