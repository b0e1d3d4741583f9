"""Combining members' class probabilities: soft average, (weighted) majority vote, and a stacked meta-learner.

All three take the members' probabilities ``P_m`` (each ``(N, C)``, columns in the ensemble's class order) and
return ``(N, C)`` probabilities:

* ``average``: ``sum_m w_m P_m / sum_m w_m`` (uniform ``w`` by default): soft voting.
* ``vote``: ``sum_m w_m onehot(argmax P_m) / sum_m w_m``, the (weighted) share of members voting for each class; an
  exact tie is broken by the average probability (added with a weight of 1e-6). AdaBoost-SAMME is this vote with
  ``w_m = alpha_m``.
* ``stack`` (Wolpert 1992): a multinomial logistic regression (scikit-learn's, ``C`` chosen by the log loss of
  5-fold stratified cross-validation) on the concatenated ``log P_m``, fitted on probabilities the members made on
  data they were NOT trained on (a validation split or out-of-fold predictions). Fitting it on the members' own
  training data would learn to trust the member that overfits most; :meth:`Stacker.fit` refuses a split named
  ``train`` and the caller (:mod:`transferkit.app.ensemble`) also refuses data that overlaps a member's training
  rows.

The fitted meta-learner is kept as plain arrays (``coef_``, ``intercept_``, saved as safetensors, never a pickle)
and rebuilt into a ``LogisticRegression`` by setting those attributes, so loading runs no stored code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

HOWS = ("average", "vote", "stack")
#: The meta-learner's inverse regularisation strengths tried (the one with the lowest cross-validated log loss wins).
CS = (0.01, 0.1, 1.0, 10.0, 100.0)
_EPS = 1e-7


def check_probas(probas: Sequence[np.ndarray]) -> np.ndarray:
    """Stack the members' probabilities into ``(M, N, C)``; refuse an empty list or differing shapes."""
    if not probas:
        raise ConfigError("An ensemble needs at least one member; give two or more runs.")
    shapes = {np.shape(p) for p in probas}
    if len(shapes) != 1:
        raise DataError(f"The members' predictions have different shapes {sorted(shapes)}; they must predict the "
                        "same examples and classes.")
    return np.stack([np.asarray(p, dtype=np.float64) for p in probas])


def _weights(weights: Sequence[float] | None, m: int) -> np.ndarray:
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (m,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(f"Ensemble weights must be {m} non-negative numbers with a positive sum, got {list(w)}.")
    return w


def average(probas: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of the members' probabilities (soft voting)."""
    p = check_probas(probas)
    w = _weights(weights, len(p))
    return np.tensordot(w / w.sum(), p, axes=1)


def vote(probas: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted share of the members' votes per class, ties broken by the average probability."""
    p = check_probas(probas)
    w = _weights(weights, len(p))
    m, n, c = p.shape
    votes = np.zeros((n, c))
    for k in range(m):
        votes[np.arange(n), p[k].argmax(1)] += w[k]
    votes /= w.sum()
    tie = 1e-6 * average(probas)
    out = votes + tie
    return out / out.sum(1, keepdims=True)


def disagreement(probas: Sequence[np.ndarray]) -> float:
    """Mean pairwise disagreement: the share of examples on which two members' top classes differ, averaged over
    all pairs (Kuncheva & Whitaker 2003); 0 for a single member."""
    p = check_probas(probas)
    preds = p.argmax(2)
    m = len(preds)
    if m < 2:
        return 0.0
    pairs = [(preds[i] != preds[j]).mean() for i in range(m) for j in range(i + 1, m)]
    return float(np.mean(pairs))


def stack_features(probas: Sequence[np.ndarray]) -> np.ndarray:
    """The meta-learner's inputs: the members' log-probabilities side by side, ``(N, M * C)``."""
    p = check_probas(probas)
    return np.concatenate([np.log(np.clip(pk, _EPS, 1.0)) for pk in p], axis=1)


class Stacker:
    """A logistic-regression meta-learner over the members' log-probabilities (see the module docstring)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, n_classes: int, C: float) -> None:  # noqa: N803
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.n_classes = int(n_classes)
        self.C = float(C)

    @classmethod
    def fit(cls, probas: Sequence[np.ndarray], labels: np.ndarray, *, split: str, seed: int = 0) -> Stacker:
        """Fit on held-out probabilities of the members with their true ``labels``.

        ``split`` names where the probabilities come from ("val", "oof", ...): ``"train"`` is refused, because
        members predict their own training data too well for a meta-learner to learn anything true from it.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss
        from sklearn.model_selection import StratifiedKFold
        from threadpoolctl import threadpool_limits

        if split == "train":
            raise DataError("Stacking must be fitted on data the members were not trained on, not on the training "
                            "split; use the validation split (--fit-split val) or out-of-fold predictions.")
        x = stack_features(probas)
        y = np.asarray(labels, dtype=np.int64)
        n_classes = x.shape[1] // len(probas)
        counts = np.bincount(y, minlength=n_classes)
        if np.any(counts == 0):
            raise DataError(f"The stacking data has no example of {int(np.sum(counts == 0))} class(es); it needs "
                            "every class, so use a larger validation split.")
        folds = int(min(5, counts.min()))
        if folds < 2:
            raise DataError("The stacking data needs at least two examples of every class; use a larger split.")
        cv = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
        # One BLAS thread: on problems this small (N x M*C) threads only wait for each other (20x slower on a
        # loaded 2-core machine, measured).
        with threadpool_limits(1):
            scores = {}
            for c in CS:
                loss = 0.0
                for tr, te in cv:
                    lr = LogisticRegression(C=c, max_iter=2000).fit(x[tr], y[tr])
                    loss += log_loss(y[te], lr.predict_proba(x[te]), labels=np.arange(n_classes))
                scores[c] = loss / len(cv)
            best = min(CS, key=lambda c: scores[c])
            lr = LogisticRegression(C=best, max_iter=2000).fit(x, y)
        return cls(lr.coef_, lr.intercept_, n_classes, best)

    def model(self) -> Any:
        """The meta-learner rebuilt as a fitted scikit-learn ``LogisticRegression`` from its arrays."""
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=self.C)
        lr.classes_ = np.arange(self.n_classes)
        lr.coef_, lr.intercept_ = self.coef, self.intercept
        lr.n_features_in_ = self.coef.shape[1]
        return lr

    def predict_proba(self, probas: Sequence[np.ndarray]) -> np.ndarray:
        x = stack_features(probas)
        if x.shape[1] != self.coef.shape[1]:
            raise DataError(f"The meta-learner takes {self.coef.shape[1]} inputs but the members give {x.shape[1]}.")
        return self.model().predict_proba(x)

    def arrays(self) -> dict[str, np.ndarray]:
        """What is saved (as safetensors): the coefficients and intercepts, C-contiguous.

        scikit-learn's multinomial ``coef_`` is Fortran-ordered; ``safetensors.numpy.save_file`` writes an array's
        memory as it lies, so a Fortran-ordered ``(C, M * C)`` matrix came back transposed-and-reshaped (a loaded
        10-class stacker scored 13 % where it had scored 94 %; two classes have one row, so it did not show there).
        """
        return {"coef": np.ascontiguousarray(self.coef, dtype=np.float64),
                "intercept": np.ascontiguousarray(self.intercept, dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_classes: int, C: float) -> Stacker:  # noqa: N803
        return cls(arrays["coef"], arrays["intercept"], n_classes, C)


def combine(how: str, probas: Sequence[np.ndarray], *, weights: Sequence[float] | None = None,
            stacker: Stacker | None = None) -> np.ndarray:
    """The ensemble's probabilities by ``how`` (average | vote | stack)."""
    if how == "average":
        return average(probas, weights)
    if how == "vote":
        return vote(probas, weights)
    if how == "stack":
        if stacker is None:
            raise ConfigError("Stacking needs a fitted meta-learner; build the ensemble with its stacking data.")
        return stacker.predict_proba(probas)
    raise ConfigError(f"Unknown way to combine '{how}'; use one of {', '.join(HOWS)}.")


def samme_step(weights: np.ndarray, miss: np.ndarray, n_classes: int) -> tuple[float, float, np.ndarray]:
    """One AdaBoost-SAMME round (Zhu et al. 2009): ``(err, alpha, new weights)``.

    ``err = sum(w * miss) / sum(w)``, ``alpha = log((1 - err) / err) + log(K - 1)`` and the rows the member got wrong
    are multiplied by ``exp(alpha)`` (then normalised to sum 1). Under the new weights the member's own error is
    exactly ``(K - 1) / K``, chance level, so the next member must learn something else. ``err`` is clipped to
    ``[1e-10, 1 - 1e-10]`` inside the log (a perfect member gets a large, finite ``alpha``).
    """
    w = np.asarray(weights, dtype=np.float64)
    m = np.asarray(miss, dtype=bool)
    if w.shape != m.shape or w.ndim != 1 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights and miss must be 1-D of the same length, weights non-negative with a positive sum")
    err = float(w[m].sum() / w.sum())
    e = min(max(err, 1e-10), 1 - 1e-10)
    alpha = float(np.log((1.0 - e) / e) + np.log(n_classes - 1))
    new = w * np.exp(alpha * m)
    return err, alpha, new / new.sum()
