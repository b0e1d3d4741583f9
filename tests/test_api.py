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


def test_user_module_backbone_with_weights_file(tmp_path, blobs_images):
    import torch
    from safetensors.torch import save_file

    from tests.tiny import make_tiny
    from transferkit.errors import WeightsError

    x, y = blobs_images
    torch.manual_seed(1)
    good = tmp_path / "tiny.safetensors"
    save_file(make_tiny().state_dict(), str(good))
    clf = TransferClassifier(backbone="module:tests.tiny:make_tiny", weights=str(good), epochs=1, progress=False)
    clf.fit(from_arrays(x, y, modality="image"))
    clf.save(tmp_path / "m")
    again = TransferClassifier.load(tmp_path / "m", trust_code=True)  # the user's own factory: opt in
    np.testing.assert_array_equal(again.predict_proba(x), clf.predict_proba(x))

    bad = tmp_path / "bad.safetensors"
    save_file({k: torch.zeros(2, *v.shape[1:]) if v.ndim else v for k, v in make_tiny().state_dict().items()},
              str(bad))
    with pytest.raises(WeightsError, match="shape"):
        TransferClassifier(backbone="module:tests.tiny:make_tiny", weights=str(bad), epochs=1).fit(
            from_arrays(x, y, modality="image"))


def test_early_stopping_stops_when_val_does_not_improve(blobs_images):
    x, y = blobs_images
    data = from_arrays(x, y, modality="image")
    splits = Splits(train=data, val=data)
    clf = TransferClassifier(epochs=6, lr=1e-12, head_lr_scale=1.0, early_stopping=1, **TINY).fit(splits)
    assert len(clf.history_) == 2 and clf.fit_result_.stopped_early
    assert clf.fit_result_.best_epoch == 1


def test_cosine_schedule_with_warmup():
    import torch

    from transferkit.config import TrainConfig
    from transferkit.train.schedules import build_optimizer, build_scheduler

    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = build_optimizer([{"params": [p], "lr": 1.0}], TrainConfig(lr=1.0))
    sched, when = build_scheduler(opt, TrainConfig(lr=1.0, warmup_fraction=0.1, schedule="cosine"), total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert when == "step"
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5, abs=0.03) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
