"""Choosing without target labels: validation scores for early stopping and model choice in domain adaptation.

With unlabelled target data the usual validation accuracy measures the wrong distribution. These scores need no
target label; each is computed per epoch through ``loop.fit(scorers=make_scorers(...))`` and lands in the history,
so ``train.monitor`` can name it.

* **Importance-weighted validation** (IWCV, Sugiyama, Krauledat, Mueller 2007): the target risk is the source risk
  re-weighted by ``w(x) = p_t(x) / p_s(x)`` (see :mod:`transferkit.adaptation.importance`), so on the labelled
  *source validation split* with weights ``w_i`` (from the domain classifier fitted on the training split; the val
  examples were never fitted on)::

      iw_val_accuracy = sum_i w_i [argmax f(x_i) = y_i] / sum_i w_i
      iw_val_loss     = sum_i w_i CE(f(x_i), y_i)      / sum_i w_i          (self-normalised, minimised)

* **DEV** (You, Wang, Chen, Long, Jordan 2019, "Towards accurate model selection in deep unsupervised domain
  adaptation"): the weighted losses ``L_i = w_i l_i`` with the *raw* ratio estimates ``w_i`` (mean ~1 only in
  expectation) have a large variance; ``w`` itself has known mean 1 and correlates with ``L``, so it is a control
  variate: ``eta = -Cov(L, w) / Var(w)``, ``dev_val_loss = mean(L) + eta * mean(w) - eta`` (minimised).
* **SND**, soft neighbourhood density (Saito, Kim, Teterwak, Sclaroff, Darrell, Saenko 2021, "Tune it the right
  way"): with ``F`` the L2-normalised softmax outputs of the target examples, the similarity of ``i`` to ``j != i``
  is ``F_i . F_j``; ``P_ij = softmax_j(F_i . F_j / tau)`` over ``j != i`` (``tau = 0.05``) and
  ``snd = mean_i H(P_i) = -mean_i sum_j P_ij log P_ij`` (maximised). High when each target example has many close
  neighbours in prediction space, i.e. the predictions form dense clusters. It cannot tell a collapse of every
  example into one class (one dense cluster, also high SND) from a good clustering; the source loss usually
  prevents the collapse, and IM below penalises it.
* **IM**, the information-maximisation score (Gomes, Krause, Perona 2010; used as a DA objective by SHOT, Liang et
  al. 2020): ``im = H(mean_i p_i) - mean_i H(p_i)`` in nats (maximised): confident predictions (low per-example
  entropy) that still use all classes (high entropy of the mean). 0 for uniform predictions and for a collapse to
  one class; ``log C`` at best.
* ``target_accuracy``: accuracy on *labelled* target data. An oracle, for reports only (how far a validator's chosen
  epoch is from the best one); it must never choose a model that is reported as unsupervised.

Predictions use :func:`transferkit.train.inference.predict_logits`; the target is subsampled (seeded, with
:func:`transferkit.data.sampling.subsample`) to at most ``max_target`` examples, as SND's cost is quadratic in it.
All scores of one model state share one prediction pass (memoised on the parameters' version counters).

Why hand-written: skada's ``SoftNeighborhoodDensity``, ``PredictionEntropyScorer``, ``ImportanceWeightedScorer``
and ``DeepEmbeddedValidation`` score scikit-learn estimators on arrays with ``sample_domain`` masks and refit their
own density estimators on every call; here the model is a torch module evaluated every epoch, and the weights come
from the one cross-fitted domain classifier. The SND here equals skada's (checked in the tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..data.base import Dataset
from ..data.sampling import subsample

SND_TEMPERATURE = 0.05
MAX_TARGET = 1000
VALIDATION_STREAM = 0x5C0  # the seeded draw of the target examples the scores are computed on


# --- the scores on arrays ------------------------------------------------------------------------------------------
def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy ``-log softmax(logits)[y]``."""
    return -_log_softmax(logits)[np.arange(len(labels)), np.asarray(labels)]


def importance_weighted_scores(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Self-normalised importance-weighted accuracy and cross-entropy (``{"accuracy", "loss"}``)."""
    w = np.asarray(weights, dtype=np.float64)
    y = np.asarray(labels)
    correct = (np.asarray(logits).argmax(1) == y).astype(np.float64)
    loss = cross_entropy(logits, y)
    return {"accuracy": float((w * correct).sum() / w.sum()), "loss": float((w * loss).sum() / w.sum())}


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """DEV (You et al. 2019): ``mean(w l) + eta (mean(w) - 1)`` with ``eta = -Cov(w l, w) / Var(w)``."""
    w = np.asarray(weights, dtype=np.float64)
    weighted = w * np.asarray(losses, dtype=np.float64)
    var = float(np.var(w, ddof=1)) if len(w) > 1 else 0.0
    if var <= 1e-12:
        return float(weighted.mean())
    eta = -float(np.cov(weighted, w, ddof=1)[0, 1]) / var
    return float(weighted.mean() + eta * w.mean() - eta)


def soft_neighbourhood_density(proba: np.ndarray, temperature: float = SND_TEMPERATURE) -> float:
    """SND (Saito et al. 2021): mean entropy of each example's softmax-similarity distribution over the others."""
    p = np.asarray(proba, dtype=np.float64)
    if len(p) < 2:
        return 0.0
    f = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    s = f @ f.T / temperature
    np.fill_diagonal(s, -np.inf)
    logp = s - s.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    prob = np.exp(logp)
    ent = -np.where(prob > 0, prob * np.where(prob > 0, logp, 0.0), 0.0).sum(axis=1)
    return float(ent.mean())


def information_maximisation(proba: np.ndarray) -> float:
    """IM score ``H(mean p) - mean H(p)`` in nats: confident and diverse predictions score high."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0)
    mean = p.mean(axis=0)
    return float(-(mean * np.log(mean)).sum() + (p * np.log(p)).sum(axis=1).mean())


def _softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(_log_softmax(logits))


# --- per-epoch scorers on a model ----------------------------------------------------------------------------------
class _Predictions:
    """Logits of one model on one data set, recomputed only when the model's parameters or buffers changed."""

    def __init__(self, ds: Dataset, batch_size: int) -> None:
        self.ds = ds
        self.batch_size = batch_size
        self._key: tuple[Any, ...] | None = None
        self._logits: np.ndarray | None = None

    def __call__(self, model: Any) -> np.ndarray:
        from ..train.inference import predict_logits

        key = (id(model), *(t._version for t in model.state_dict(keep_vars=True).values()))
        if key != self._key or self._logits is None:
            self._logits = predict_logits(model, self.ds, batch_size=self.batch_size)
            self._key = key
        return self._logits


def make_scorers(
    *,
    val: Dataset | None = None,
    val_weights: np.ndarray | None = None,
    val_raw_weights: np.ndarray | None = None,
    target: Dataset | None = None,
    target_labelled: Dataset | None = None,
    max_target: int = MAX_TARGET,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Callable[[Any], float]]:
    """Per-epoch scorers ``name -> fn(model) -> float`` for ``loop.fit(scorers=...)``.

    Args:
        val: the labelled source validation split.
        val_weights: importance weights of ``val`` (mean 1): gives ``iw_val_accuracy`` and ``iw_val_loss``.
        val_raw_weights: raw ratio estimates of ``val`` (not rescaled): gives ``dev_val_loss``.
        target: unlabelled target examples: gives ``snd`` and ``im``.
        target_labelled: labelled target examples: gives ``target_accuracy`` (oracle, reports only).
        max_target: subsample ``target`` / ``target_labelled`` (seeded) to at most this many examples.
    """
    scorers: dict[str, Callable[[Any], float]] = {}
    if val is not None and len(val) and val.is_labelled:
        val_pred = _Predictions(val, batch_size)
        labels = val.labels
        if val_weights is not None:
            w = np.asarray(val_weights, dtype=np.float64)
            if len(w) != len(val):
                raise ValueError(f"{len(w)} validation weights for {len(val)} validation examples")
            scorers["iw_val_accuracy"] = lambda m: importance_weighted_scores(val_pred(m), labels, w)["accuracy"]
            scorers["iw_val_loss"] = lambda m: importance_weighted_scores(val_pred(m), labels, w)["loss"]
        if val_raw_weights is not None:
            raw = np.asarray(val_raw_weights, dtype=np.float64)
            scorers["dev_val_loss"] = lambda m: dev_risk(cross_entropy(val_pred(m), labels), raw)
    if target is not None and len(target):
        t_pred = _Predictions(subsample(target, max_target, seed=seed, stream=VALIDATION_STREAM), batch_size)
        scorers["snd"] = lambda m: soft_neighbourhood_density(_softmax(t_pred(m)))
        scorers["im"] = lambda m: information_maximisation(_softmax(t_pred(m)))
    if target_labelled is not None and len(target_labelled) and target_labelled.is_labelled:
        tl = subsample(target_labelled, max_target, seed=seed + 1, stream=VALIDATION_STREAM)
        tl_pred = _Predictions(tl, batch_size)
        tl_labels = tl.labels
        scorers["target_accuracy"] = lambda m: float((tl_pred(m).argmax(1) == tl_labels).mean())
    return scorers
