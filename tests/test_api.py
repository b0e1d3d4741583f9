"""The estimator contract: params, clone, fit/predict/evaluate, save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from transferkit import TransferClassifier
from transferkit.data import from_arrays
from transferkit.data.base import Splits
from transferkit.errors import ConfigError, RunError

TINY = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, progress=False, batch_size=16)


def test_params_and_clone():
    clf = TransferClassifier(method="linear-probe", lr=0.01, method_params={})
    params = clf.get_params()
    assert params["method"] == "linear-probe" and params["lr"] == 0.01 and params["epochs"] == 3
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == params
    clf.set_params(epochs=7)
    assert clf.epochs == 7 and twin.epochs == 3
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        TransferClassifier(epoch=3)
    with pytest.raises(ConfigError, match="whole number"):
        clf.set_params(epochs="many")


def test_not_fitted_error():
    with pytest.raises(RunError, match="not fitted"):
        TransferClassifier().predict(np.zeros((1, 8, 8), dtype=np.uint8))


def test_fit_predict_save_load_round_trip(tmp_path, blobs_images):
    x, y = blobs_images
    data = from_arrays(x, np.array(["a", "b", "c"])[y], modality="image")
    clf = TransferClassifier(epochs=2, **TINY).fit(Splits(train=data.subset(range(45)), val=data.subset(range(45, 60))))
    assert clf.classes_ == ["a", "b", "c"]
    assert len(clf.history_) == 2 and "val_accuracy" in clf.history_[0]
    proba = clf.predict_proba(x)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(1), 1.0, atol=1e-5)
    metrics = clf.evaluate(data)
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(metrics)
    assert np.asarray(metrics["confusion_matrix"]).sum() == 60

    clf.save(tmp_path / "m")
    again = TransferClassifier.load(tmp_path / "m")
    assert again.get_params() == clf.get_params()
    np.testing.assert_array_equal(again.predict_proba(x), proba)
    assert list(again.predict(x[:5])) == list(clf.predict(x[:5]))


def test_predict_on_image_files(tmp_path, blobs_images):
    from PIL import Image

    x, y = blobs_images
    clf = TransferClassifier(epochs=1, **TINY).fit(from_arrays(x, y, modality="image"))
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.fromarray(x[i]).save(p)
        paths.append(str(p))
    np.testing.assert_allclose(clf.predict_proba(paths), clf.predict_proba(x[:4]), atol=1e-5)
    assert len(clf.predict([str(tmp_path)])) == 4


def test_fit_is_deterministic(blobs_images):
    x, y = blobs_images
    data = from_arrays(x, y, modality="image")
    a = TransferClassifier(epochs=2, seed=3, **TINY).fit(data).predict_proba(x)
    b = TransferClassifier(epochs=2, seed=3, **TINY).fit(data).predict_proba(x)
    np.testing.assert_array_equal(a, b)
