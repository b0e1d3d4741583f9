"""Source-sample selection: importance weights, keep mode, clipping, TrAdaBoost (maths and skada's covariate shift)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from transferkit.adaptation.importance import (
    domain_probabilities,
    effective_sample_size,
    importance_weights,
    normalise_weights,
)
from transferkit.adaptation.selection import input_matrix, keep_most_target_like, select_source
from transferkit.adaptation.tradaboost import TrAdaBoostClassifier
from transferkit.data.base import Dataset
from transferkit.errors import ConfigError, DataError

CENTER = np.array([0.0, 2.0])  # skada's default centre of the covariate shift (the target's Gaussian bump)
GAMMA = 2.0  # skada's default width parameter: the target keeps x with probability ~ exp(-gamma |x - center|^2)


def skada_covariate(seed: int, n: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from skada.datasets import make_shifted_datasets

    x, y, d = make_shifted_datasets(n_samples_source=n, n_samples_target=n, shift="covariate_shift",
                                    label="binary", random_state=seed)
    return x[d >= 0], y[d >= 0], x[d < 0], y[d < 0]


def true_ratio(x: np.ndarray) -> np.ndarray:
    """skada draws the target from the source's generator, keeping x with prob ~ exp(-gamma |x - c|^2)."""
    return np.exp(-GAMMA * ((x - CENTER) ** 2).sum(1))


# --- the must-show: identical domains give weights of ~1 ---------------------------------------------------
def test_identical_domains_give_weights_of_about_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2))  # two draws of one distribution
    w = importance_weights(a, b, seed=0)
    assert abs(w.mean() - 1) < 1e-9
    assert np.abs(w - 1).max() < 0.25, np.abs(w - 1).max()
    assert np.abs(w - 1).mean() < 0.05
    assert effective_sample_size(w) > 0.99 * len(w)
    _, _, _, auc = domain_probabilities(a, b)
    assert abs(auc - 0.5) < 0.06


def test_identical_wide_domains_give_weights_of_about_one():
    """The path of frozen CNN features: 100 columns are projected on their top components first."""
    from transferkit.adaptation.importance import make_domain_classifier

    assert "pca" in make_domain_classifier(100).named_steps
    rng = np.random.default_rng(1)
    w = importance_weights(rng.normal(size=(1000, 100)), rng.normal(size=(1000, 100)), seed=0)
    assert np.abs(w - 1).max() < 0.25 and np.abs(w - 1).mean() < 0.05
    shifted = rng.normal(size=(1000, 100))
    shifted[:, :3] += 1.0  # a shift in three of the hundred directions is found
    w = importance_weights(rng.normal(size=(1000, 100)), shifted, seed=0)
    assert np.abs(w - 1).mean() > 0.3


def test_shifted_domains_give_weights_that_follow_the_true_density_ratio():
    xs, _, xt, _ = skada_covariate(seed=0)
    w = importance_weights(xs, xt, seed=0)
    r = true_ratio(xs)
    assert np.corrcoef(w, r)[0, 1] > 0.8
    near = ((xs - CENTER) ** 2).sum(1) < 0.5  # the target's region
    assert w[near].mean() > 5 * w[~near].mean()
    ps, pt, _, auc = domain_probabilities(xs, xt)
    assert auc > 0.8 and pt.mean() > ps.mean()
    # the linear classifier cannot express the Gaussian bump: that is why "auto" goes quadratic on narrow inputs
    w_lin = importance_weights(xs, xt, classifier="linear", seed=0)
    assert np.corrcoef(w_lin, r)[0, 1] < np.corrcoef(w, r)[0, 1] - 0.3


def test_weighting_helps_a_misspecified_model_under_covariate_shift():
    """Shimodaira's setting: logistic regression cannot fit the whole source, so fitting where the target is helps."""
    gains = []
    for seed in range(3):
        xs, ys, xt, yt = skada_covariate(seed)
        w = importance_weights(xs, xt, seed=seed)
        plain = LogisticRegression().fit(xs, ys).score(xt, yt)
        weighted = LogisticRegression().fit(xs, ys, sample_weight=w).score(xt, yt)
        gains.append(weighted - plain)
    assert np.mean(gains) > 0.03, gains


# --- normalisation, clipping, keep --------------------------------------------------------------------------------
def test_normalise_weights_has_mean_one_and_respects_the_clip_exactly():
    r = np.r_[100.0, 50.0, 20.0, np.ones(97)]
    w = normalise_weights(r, clip=5.0)
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    assert w.max() == pytest.approx(5.0) and (w <= 5.0 + 1e-9).all()
    assert np.all(np.diff(w[3:]) == 0) and w[0] == w[1] == w[2]  # the three largest are clipped, the rest scaled
    assert np.argsort(normalise_weights(np.arange(1.0, 11.0), None)).tolist() == list(range(10))  # order kept
    assert normalise_weights(np.arange(1.0, 11.0), None).mean() == pytest.approx(1.0)
    assert np.allclose(normalise_weights(np.array([3.0, 1.0, 0.5]), clip=1.0), 1.0)  # clip 1: all equal
    with pytest.raises(ConfigError, match="at least 1"):
        normalise_weights(r, clip=0.5)
    with pytest.raises(DataError, match="non-negative"):
        normalise_weights(np.array([1.0, -1.0]))


def test_effective_sample_size():
    assert effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert effective_sample_size(np.r_[10.0, np.zeros(9)]) == pytest.approx(1)


def test_keep_keeps_the_right_count_and_the_most_target_like():
    p = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.95, 0.3, 0.6])
    keep = keep_most_target_like(p, 0.5)
    assert keep.tolist() == [1, 3, 5, 7]
    assert len(keep_most_target_like(p, 0.01)) == 1
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        keep_most_target_like(p, 0.0)


def test_select_source_on_datasets_weight_and_keep():
    xs, ys, xt, yt = skada_covariate(seed=1)
    src = Dataset("tabular", xs.astype(np.float32), ys, ["0", "1"], "src")
    tgt = Dataset("tabular", xt.astype(np.float32), None, ["0", "1"], "tgt")
    sel = select_source(src, tgt, mode="weight", clip=10.0, seed=0)
    assert sel.on == "inputs" and len(sel.weights) == len(src) and len(sel.keep) == len(src)
    assert sel.weights.mean() == pytest.approx(1.0) and sel.weights.max() <= 10.0 + 1e-9
    assert 0.8 < sel.domain_auc < 0.99 and 0 < sel.ess < len(src)
    summary = sel.summary()
    assert summary["n_source"] == len(src) and summary["mode"] == "weight"
    # new source rows are weighed by the fitted classifier: target-like rows get more
    probe = Dataset("tabular", np.array([CENTER, [6.0, -3.0]], dtype=np.float32), None, ["0", "1"])
    raw = sel.weigh(probe, normalise=False)
    assert raw[0] > 10 * raw[1]
    kept = select_source(src, tgt, mode="keep", keep_fraction=0.25, seed=0)
    assert len(kept.keep) == round(0.25 * len(src))
    assert kept.p_target[kept.keep].min() >= np.delete(kept.p_target, kept.keep).max()
    d_kept = ((xs[kept.keep] - CENTER) ** 2).sum(1).mean()
    assert d_kept < 0.5 * ((xs - CENTER) ** 2).sum(1).mean()  # the kept rows lie near the target


def test_select_source_refuses_bad_settings():
    rng = np.random.default_rng(0)
    src = Dataset("tabular", rng.normal(size=(40, 2)).astype(np.float32), np.arange(40) % 2, ["a", "b"])
    tgt = Dataset("tabular", rng.normal(size=(40, 2)).astype(np.float32), None, ["a", "b"])
    with pytest.raises(ConfigError, match="mode 'wieght' is unknown"):
        select_source(src, tgt, mode="wieght")
    with pytest.raises(ConfigError, match="at least 1"):
        select_source(src, tgt, clip=0.9)
    with pytest.raises(ConfigError, match="labelled target"):
        select_source(src, tgt, mode="tradaboost")
    with pytest.raises(ConfigError, match="needs a backbone"):
        select_source(src, tgt, on="features")
    with pytest.raises(DataError, match="same kind of data"):
        select_source(src, Dataset("text", ["a"] * 40, None, ["a", "b"]))
    with pytest.raises(DataError, match="columns"):
        domain_probabilities(rng.normal(size=(20, 2)), rng.normal(size=(20, 3)))


def test_input_matrix_aligns_grey_and_rgb_images_of_different_sizes():
    rng = np.random.default_rng(0)
    grey = Dataset("image", rng.integers(0, 255, (6, 28, 28), dtype=np.uint8), None, ["a"])
    rgb = Dataset("image", rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8), None, ["a"])
    a, b = input_matrix(grey, 28), input_matrix(rgb, 28)
    assert a.shape == (6, 3 * 28 * 28) and b.shape == (5, 3 * 28 * 28)
    assert 0.0 <= a.min() and a.max() <= 1.0
    with pytest.raises(DataError, match="Text"):
        input_matrix(Dataset("text", ["x"], None, ["a"]))


def test_select_source_on_frozen_features(tmp_path):
    from tests.tiny import TinyConvBackbone
    from transferkit.features import FeatureCache

    rng = np.random.default_rng(0)
    dark = rng.integers(0, 80, (40, 16, 16), dtype=np.uint8)
    bright = rng.integers(120, 255, (40, 16, 16), dtype=np.uint8)
    src = Dataset("image", np.concatenate([dark, bright[:10]]), np.arange(50) % 2, ["a", "b"], "src")
    tgt = Dataset("image", bright[10:], None, ["a", "b"], "tgt")
    sel = select_source(src, tgt, on="features", backbone=TinyConvBackbone().eval(), mode="keep",
                        keep_fraction=0.2, seed=0, engine="torch", cache=FeatureCache(tmp_path))
    assert sel.on == "features"
    assert set(sel.keep.tolist()) == set(range(40, 50))  # the ten bright source images are the target-like ones


# --- TrAdaBoost ------------------------------------------------------------------------------------------------------
def test_tradaboost_beats_the_unweighted_learner_with_few_target_labels():
    """With 2 labelled target examples per class, on skada's covariate shift (3 seeds, held-out target rows)."""
    plain, boosted, uniform_start = [], [], []
    for seed in range(3):
        xs, ys, xt, yt = skada_covariate(seed)
        rng = np.random.default_rng(seed)
        lab = np.concatenate([rng.choice(np.flatnonzero(yt == c), 2, replace=False) for c in (0, 1)])
        rest = np.setdiff1d(np.arange(len(xt)), lab)
        base = LogisticRegression().fit(np.vstack([xs, xt[lab]]), np.r_[ys, yt[lab]])
        plain.append(base.score(xt[rest], yt[rest]))
        tb = TrAdaBoostClassifier(n_estimators=10, random_state=seed).fit(xs, ys, xt[lab], yt[lab])
        boosted.append(tb.score(xt[rest], yt[rest]))
        assert len(tb.estimators_) == 10 and len(tb.source_weights_) == len(xs)
        tb0 = TrAdaBoostClassifier(n_estimators=10, balance=False, random_state=seed).fit(xs, ys, xt[lab], yt[lab])
        uniform_start.append(tb0.score(xt[rest], yt[rest]))
    assert np.mean(boosted) > np.mean(plain) + 0.03, (plain, boosted)
    assert np.mean(boosted) > np.mean(uniform_start) + 0.03, (uniform_start, boosted)  # why balance=True


def test_tradaboost_weight_updates_follow_the_paper():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(60, 2))
    ys = (xs[:, 0] > 0).astype(int)
    ys[:6] = 1 - ys[:6]  # six source rows disagree with the shared rule
    xt = rng.normal(size=(10, 2))
    yt = (xt[:, 0] > 0).astype(int)
    tb = TrAdaBoostClassifier(n_estimators=5).fit(xs, ys, xt, yt)
    assert tb.source_weights_[:6].mean() < 0.5 * tb.source_weights_[6:].mean()  # disagreeing rows shrink
    assert all(0 < b < 1 for b in tb.betas_) and all(1e-10 <= e <= 0.499 for e in tb.errors_)
    proba = tb.predict_proba(xt)
    assert proba.shape == (10, 2) and np.allclose(proba.sum(1), 1)
    soft = TrAdaBoostClassifier(n_estimators=5, voting="soft").fit(xs, ys, xt, yt)
    assert soft.score(xt, yt) >= 0.8
    twin = clone(tb)
    assert twin.get_params() == tb.get_params() and not hasattr(twin, "estimators_")
    with pytest.raises(ConfigError, match="at least one round"):
        TrAdaBoostClassifier(n_estimators=0).fit(xs, ys, xt, yt)


def test_tradaboost_accepts_a_pipeline_base_learner_with_metadata_routing():
    import sklearn
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xs, ys, xt, yt = skada_covariate(0, n=20)
    for routing in (False, True):
        with sklearn.config_context(enable_metadata_routing=routing), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = make_pipeline(StandardScaler(), LogisticRegression())
            tb = TrAdaBoostClassifier(estimator=est, n_estimators=3).fit(xs, ys, xt[:6], yt[:6])
            assert tb.predict(xt).shape == (len(xt),)


def test_select_source_tradaboost_gives_source_and_target_weights():
    xs, ys, xt, yt = skada_covariate(seed=2)
    src = Dataset("tabular", xs.astype(np.float32), ys, ["0", "1"])
    lab = np.r_[np.flatnonzero(yt == 0)[:3], np.flatnonzero(yt == 1)[:3]]
    tl = Dataset("tabular", xt[lab].astype(np.float32), yt[lab], ["0", "1"])
    tgt = Dataset("tabular", xt.astype(np.float32), None, ["0", "1"])
    sel = select_source(src, tgt, mode="tradaboost", labelled_target=tl, clip=10.0)
    both = np.r_[sel.weights, sel.target_weights]
    assert len(sel.target_weights) == 6 and both.mean() == pytest.approx(1.0) and both.max() <= 10.0 + 1e-9
