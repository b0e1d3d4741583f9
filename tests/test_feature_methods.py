"""``probe`` and ``mlp-head``: heads on frozen, cached features, through the same estimator, CLI and run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from transferkit import TransferClassifier
from transferkit.data.base import Dataset, Splits
from transferkit.errors import ConfigError

TINY = "module:tests.tiny:make_tiny"


pytestmark = pytest.mark.usefixtures("own_cache")  # every test here reads and writes its own feature cache


def _blobs(blobs_images: tuple[np.ndarray, np.ndarray], k: int = 3) -> Dataset:
    x, y = blobs_images
    keep = y < k
    return Dataset("image", x[keep], y[keep], [f"c{i}" for i in range(k)], "blobs")


@pytest.mark.parametrize("k, class_weight", [(3, None), (3, "balanced"), (2, None)])
def test_probe_head_reproduces_sklearn_logistic_regression(blobs_images, k: int, class_weight: str | None) -> None:
    """The standardisation folded into the saved linear head gives sklearn's own probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from transferkit.features import extract_features

    ds = _blobs(blobs_images, k)
    if class_weight:  # make it imbalanced so the weights matter
        keep = np.r_[np.flatnonzero(ds.labels != 0), np.flatnonzero(ds.labels == 0)[:5]]
        ds = ds.subset(keep)
    clf = TransferClassifier(backbone=TINY, method="probe", progress=False,
                             method_params={"C": 0.5, "class_weight": class_weight, "engine": "torch"}).fit(ds)
    feats = extract_features(clf.model_.backbone, ds, cache=False, engine="torch")
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=500, tol=1e-3,
                                                             class_weight=class_weight))
    ref.fit(feats, ds.labels)
    np.testing.assert_allclose(clf.predict_proba(ds), ref.predict_proba(feats), atol=2e-4)
    assert clf.fit_result_.trainable_params == clf.model_.head[-1].weight.numel() + k


def test_probe_chooses_c_on_val_and_records_each_candidate(blobs_images) -> None:
    ds = _blobs(blobs_images)
    splits = Splits(train=ds.subset(np.arange(0, 60, 2)), val=ds.subset(np.arange(1, 60, 2)))
    clf = TransferClassifier(backbone=TINY, method="probe", progress=False).fit(splits)
    assert [row["C"] for row in clf.history_] == [0.01, 0.1, 1.0, 10.0]
    best = max(clf.history_, key=lambda r: r["val_accuracy"])
    assert clf.history_[clf.fit_result_.best_epoch - 1]["val_accuracy"] == best["val_accuracy"]


def test_mlp_head_trains_through_the_loop_and_reloads(blobs_images, tmp_path: Path) -> None:
    ds = _blobs(blobs_images)
    clf = TransferClassifier(backbone=TINY, method="mlp-head", head="mlp", head_hidden=32, epochs=3, lr=3e-3,
                             progress=False).fit(ds)
    assert len(clf.history_) == 3 and all("train_loss" in row for row in clf.history_)
    head_params = sum(p.numel() for p in clf.model_.head.parameters())
    assert clf.fit_result_.trainable_params == head_params < clf.fit_result_.total_params
    before = clf.predict_proba(ds)
    loaded = TransferClassifier.load(clf.save(tmp_path / "m"), trust_code=True)  # TINY: a user factory
    assert loaded.frozen_backbone_
    np.testing.assert_allclose(loaded.predict_proba(ds), before, atol=1e-5)


def test_layers_are_fused_into_one_feature_vector(blobs_images) -> None:
    ds = _blobs(blobs_images)
    clf = TransferClassifier(backbone=TINY, method="probe", progress=False,
                             method_params={"layers": [0, 2], "C": 1.0}).fit(ds)
    assert clf.model_.backbone.feature_dim == 8 + 16
    assert clf.model_.head[-1].weight.shape == (3, 24)


def test_feature_method_config_errors_are_sentences(blobs_images) -> None:
    ds = _blobs(blobs_images)
    with pytest.raises(ConfigError, match="linear"):
        TransferClassifier(backbone=TINY, method="probe", head="mlp", progress=False).fit(ds)
    with pytest.raises(ConfigError, match="engine"):
        TransferClassifier(backbone=TINY, method="probe", method_params={"engine": "tpu"}, progress=False).fit(ds)
    with pytest.raises(ConfigError, match="did you mean 'model.method_params.layers'"):
        TransferClassifier(backbone=TINY, method="probe", method_params={"layer": [1]}, progress=False).fit(ds)


@pytest.mark.slow
def test_probe_on_animal_mnist_caches_features_and_the_second_run_agrees(own_cache: Path) -> None:
    """Real weights, real data: a good probe, and a second fit that reads every split from the cache."""
    from transferkit.config import DataConfig
    from transferkit.data import load_data
    from transferkit.features import FeatureCache

    full = load_data(DataConfig(name="animal-mnist", train_size=600))
    splits = Splits(full.train, full.val.subset(np.arange(300)), full.test.subset(np.arange(600)))
    params = dict(backbone="mobilenet_v2.imagenet", method="probe", image_size=128, progress=False)
    first = TransferClassifier(**params).fit(splits)
    acc1 = first.evaluate(splits.test)["accuracy"]
    entries = FeatureCache(own_cache).entries()
    assert len(entries) == 3  # train, val, test
    second = TransferClassifier(**params).fit(splits)
    acc2 = second.evaluate(splits.test)["accuracy"]
    assert len(FeatureCache(own_cache).entries()) == 3  # nothing recomputed
    assert acc1 == acc2 and acc1 >= 0.85


@pytest.mark.slow
def test_probe_on_rotten_tomatoes_with_minilm() -> None:
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    splits = load_data(DataConfig(name="rotten-tomatoes", train_size=1200))
    splits = Splits(splits.train, splits.val.subset(np.arange(300)), splits.test.subset(np.arange(500)))
    clf = TransferClassifier(backbone="minilm-l6", method="probe", progress=False).fit(splits)
    assert clf.evaluate(splits.test)["accuracy"] >= 0.70
