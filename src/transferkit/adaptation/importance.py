"""Importance weights of source examples, ``w(x) ~ p_t(x) / p_s(x)``, from a cross-fitted source-vs-target classifier.

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

Why hand-written: skada 0.6 has domain-classifier re-weighting (``DiscriminatorReweight``) but fits and predicts on
the same examples (no cross-fitting), has no clipping to a bound with mean 1 and no ESS/AUC diagnostics. The pieces
used are scikit-learn's (``cross_validate`` with the fold estimators and indices, ``LogisticRegression``,
``PolynomialFeatures``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from ..data.sampling import sample_rows
from ..errors import ConfigError, DataError

QUADRATIC_MAX_DIM = 20  # "auto" domain classifier: degree-2 features up to this many input columns (<= 230 terms)
PCA_DIM = 64  # "auto" domain classifier: wider inputs are first projected on their top PCA_DIM components
MAX_FIT_PER_DOMAIN = 10_000  # examples per domain the domain classifier is fitted on (seeded subsample beyond)
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # candidate inverse regularisation strengths (C="auto")
C_SEARCH_ROWS = 4000  # rows the choice of C is made on


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

    xs = as_matrix(xs, "source")
    xt = as_matrix(xt, "target")
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"Source rows have {xs.shape[1]} columns but target rows {xt.shape[1]}; use the same features.")
    if folds < 2:
        raise ConfigError(f"Cross-fitting needs at least 2 folds, not {folds}.")
    if min(len(xs), len(xt)) < folds:
        raise DataError(f"Source and target need at least {folds} examples each to weigh the source, "
                        f"not {len(xs)} and {len(xt)}.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E1]))
    fit_s = sample_rows(len(xs), max_fit, seed=rng)
    fit_t = sample_rows(len(xt), max_fit, seed=rng)
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
    rows = sample_rows(len(x), C_SEARCH_ROWS, seed=rng)
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


def _fill(oof_part: np.ndarray, fitted: np.ndarray, x: np.ndarray, dc: DomainClassifier) -> np.ndarray:
    out = np.empty(len(x))
    mask = np.ones(len(x), dtype=bool)
    mask[fitted] = False
    out[fitted] = oof_part
    if mask.any():
        out[mask] = dc.p_target(x[mask])
    return out


def as_matrix(x: Any, what: str) -> np.ndarray:
    """``x`` as a finite float64 matrix (rows = examples); a 1-D array is one column."""
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
