"""Target-label-free validators: IW accuracy/loss, DEV, SND, IM, and the per-epoch scorers on a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.adaptation.validators import (
    cross_entropy,
    dev_risk,
    importance_weighted_scores,
    information_maximisation,
    make_scorers,
    soft_neighbourhood_density,
)
from transferkit.data.base import Dataset


def _clustered(n: int = 400, c: int = 4, seed: int = 0) -> np.ndarray:
    """Confident predictions in ``c`` balanced, tight clusters (what a well-adapted model gives)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(c) * 0.9 + 0.1 / c
    p = np.abs(centres[np.arange(n) % c] + rng.normal(0, 0.01, (n, c)))
    return p / p.sum(1, keepdims=True)


def _scattered(n: int = 400, c: int = 4, seed: int = 0) -> np.ndarray:
    """Predictions spread over the simplex (no cluster structure)."""
    return np.random.default_rng(seed).dirichlet(np.ones(c), size=n)


# --- SND ------------------------------------------------------------------------------------------------------------
def test_snd_equals_skadas_soft_neighborhood_density():
    from skada.metrics import SoftNeighborhoodDensity

    p = np.random.default_rng(1).dirichlet(np.ones(3) * 0.5, size=150)

    class Fixed:  # an "estimator" that returns the probabilities above for row indices
        def predict_proba(self, x, **_):
            return p[x[:, 0].astype(int)]

    x = np.c_[np.r_[np.arange(150), np.arange(3)], np.zeros(153)]
    domain = np.r_[-np.ones(150, dtype=int), np.ones(3, dtype=int)]  # skada: target < 0, source >= 0
    y = np.r_[-np.ones(150), np.zeros(3)]
    ref = SoftNeighborhoodDensity()._score(None, Fixed(), x, y, sample_domain=domain)
    assert soft_neighbourhood_density(p) == pytest.approx(ref, rel=1e-9)


def test_snd_prefers_clustered_predictions_to_scattered_ones():
    assert soft_neighbourhood_density(_clustered()) > soft_neighbourhood_density(_scattered()) + 0.1


def test_snd_cannot_see_a_collapse_which_im_does():
    """The documented blind spot: one dense cluster (every example in one class) has the highest SND; IM is ~0."""
    n = 400
    collapse = np.tile([0.9, 0.05, 0.03, 0.02], (n, 1))
    assert soft_neighbourhood_density(collapse) == pytest.approx(np.log(n - 1))
    assert information_maximisation(collapse) == pytest.approx(0.0, abs=1e-9)


# --- IM -------------------------------------------------------------------------------------------------------------
def test_im_orders_confident_diverse_above_uncertain_and_is_bounded():
    c = 4
    uniform = np.full((400, c), 1 / c)
    onehot = np.eye(c)[np.arange(400) % c]
    assert information_maximisation(onehot) == pytest.approx(np.log(c), abs=1e-6)
    assert information_maximisation(uniform) == pytest.approx(0.0, abs=1e-9)
    assert information_maximisation(_clustered()) > information_maximisation(_scattered()) + 0.3
    assert information_maximisation(_scattered()) > information_maximisation(uniform)


# --- importance-weighted validation and DEV --------------------------------------------------------------------------
def test_importance_weighted_scores():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    y = np.array([0, 1, 1, 0])  # the first two right, the last two wrong
    plain = importance_weighted_scores(logits, y, np.ones(4))
    assert plain["accuracy"] == pytest.approx(0.5)
    assert plain["loss"] == pytest.approx(cross_entropy(logits, y).mean())
    tilted = importance_weighted_scores(logits, y, np.array([3.0, 3.0, 1.0, 1.0]))
    assert tilted["accuracy"] == pytest.approx(0.75)
    assert tilted["loss"] < plain["loss"]
    assert cross_entropy(np.array([[0.0, 0.0]]), np.array([1]))[0] == pytest.approx(np.log(2))


def test_dev_reduces_the_variance_of_the_weighted_risk():
    """DEV's control variate: an unbiased estimate of the target risk with less spread than the plain IW mean."""
    rng = np.random.default_rng(0)
    plain, dev = [], []
    for _ in range(300):
        w = rng.lognormal(-0.5, 1.0, size=200)  # E[w] = 1, heavy tailed
        loss = 0.5 + 0.3 * rng.random(200)  # losses barely depend on x: the weighted risk is driven by w's noise
        plain.append(np.mean(w * loss))
        dev.append(dev_risk(loss, w))
    truth = 0.65  # E[w] * E[loss]
    assert abs(np.mean(dev) - truth) < 0.02
    assert np.std(dev) < 0.5 * np.std(plain)
    assert dev_risk(np.array([1.0, 2.0, 3.0]), np.ones(3)) == pytest.approx(2.0)  # constant weights: the mean


# --- scorers on a model ----------------------------------------------------------------------------------------------
class _Linear(torch.nn.Module):
    """A stand-in model for the scorers: tabular inputs -> logits (what predict_logits needs)."""

    def __init__(self) -> None:
        super().__init__()
        from transferkit.backbones.base import Preprocessing

        self.lin = torch.nn.Linear(2, 2)
        self.preprocessing = Preprocessing("tabular")
        self.image_size = None
        self.classes = ["a", "b"]
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.lin(x)


def _tab(n: int, labelled: bool, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) if labelled else None
    return Dataset("tabular", x, y, ["a", "b"], "tab")


def test_make_scorers_gives_the_right_names_and_reuses_one_prediction_pass():
    model = _Linear()
    val, target = _tab(50, True), _tab(60, False, seed=1)
    scorers = make_scorers(val=val, val_weights=np.ones(50), val_raw_weights=np.ones(50), target=target,
                           batch_size=1000)
    assert set(scorers) == {"iw_val_accuracy", "iw_val_loss", "dev_val_loss", "snd", "im"}
    values = {k: f(model) for k, f in scorers.items()}
    assert model.calls == 2  # one pass on val, one on the target, shared by all five scores
    assert 0 <= values["iw_val_accuracy"] <= 1 and values["iw_val_loss"] > 0
    assert values["dev_val_loss"] == pytest.approx(values["iw_val_loss"])  # equal weights: the same risk
    with torch.no_grad():
        model.lin.weight.add_(1.0)  # a training step changes the parameters: predictions are recomputed
    scorers["snd"](model)
    assert model.calls == 3
    oracle = make_scorers(target=target, target_labelled=_tab(30, True, seed=2))
    assert set(oracle) == {"snd", "im", "target_accuracy"}
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))
        model.lin.bias.zero_()
    assert oracle["target_accuracy"](model) == pytest.approx(1.0)  # the rule x0 > 0, learnt exactly
    assert make_scorers(val=val) == {}  # no weights, no target: nothing to score
    with pytest.raises(ValueError, match="validation weights"):
        make_scorers(val=val, val_weights=np.ones(3))
