"""The source-vs-target classifier behind the importance-weighted validators is fitted only when something reads it.

``iw_val_accuracy``, ``iw_val_loss`` and ``dev_val_loss`` need importance weights of the source validation split,
from a cross-fitted domain classifier (:func:`transferkit.adaptation.selection.select_source`) that costs 20-30 s on
image data. A fit with a target and a source val split used to fit it always; now only a source selection, an
importance-weighted ``train.monitor`` or ``train.iw_validators: true`` does, and the run's ``summary.json`` says
what it cost. The calls are counted on the real function (it still runs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferkit import TransferClassifier
from transferkit.adaptation import selection
from transferkit.config import RunConfig
from transferkit.data.base import Dataset, Splits
from transferkit.errors import ConfigError

TINY = dict(backbone="module:tests.tiny:make_tiny", pretrained=False, image_size=16, batch_size=16, progress=False,
            epochs=1, selection_on="inputs")  # raw pixels: no ONNX export of the backbone
IW = {"iw_val_accuracy", "iw_val_loss", "dev_val_loss"}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each call of ``select_source`` (its mode), passed through to the real function."""
    seen: list[str] = []
    real = selection.select_source

    def counting(*args, **kwargs):
        seen.append(kwargs.get("mode", "weight"))
        return real(*args, **kwargs)

    monkeypatch.setattr(selection, "select_source", counting)
    return seen


def _pair(blobs_images) -> tuple[Splits, Dataset]:
    x, y = blobs_images
    classes = ["a", "b", "c"]
    src = Splits(Dataset("image", x[:45], y[:45], classes, "blobs"), Dataset("image", x[45:], y[45:], classes, "blobs"))
    tgt = Dataset("image", np.clip(x.astype(int) + 60, 0, 255).astype(np.uint8), y, classes, "blobs-brighter")
    return src, tgt


@pytest.mark.filterwarnings("ignore:.*separable")
def test_dann_fits_the_domain_classifier_only_for_an_importance_weighted_monitor(blobs_images, calls, own_cache):
    src, tgt = _pair(blobs_images)
    plain = TransferClassifier(method="dann", **TINY).fit(src, target=tgt)  # monitor: val_accuracy
    assert calls == []
    assert {"snd", "im", "target_accuracy"} <= set(plain.history_[0]) and not IW & set(plain.history_[0])
    assert "domain_classifier_seconds" not in plain.fit_result_.extra

    iw = TransferClassifier(method="dann", monitor="iw_val_accuracy", **TINY).fit(src, target=tgt)
    assert calls == ["weight"]
    assert IW <= set(iw.history_[0]) and 0.0 <= iw.history_[0]["iw_val_accuracy"] <= 1.0
    assert iw.fit_result_.extra["domain_classifier_seconds"] >= 0.0

    TransferClassifier(method="dann", iw_validators=True, **TINY).fit(src, target=tgt)  # asked for (compare does)
    assert calls == ["weight", "weight"]


def test_iw_validators_false_with_an_importance_weighted_monitor_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="train.iw_validators is false; set it to true or null") as err:
        RunConfig.from_dict({"data": {"name": "mnist"},
                             "train": {"monitor": "dev_val_loss", "iw_validators": False}})
    assert "\n" not in str(err.value)


def test_run_summary_records_what_the_domain_classifier_cost(tmp_path, calls):
    from transferkit.app.fit import run_fit

    def run(name: str, **train) -> dict:
        cfg = RunConfig.from_dict({
            "data": {"name": "skada-covariate-source"}, "target": {"name": "skada-covariate-target"},
            "model": {"backbone": "mlp:2", "pretrained": False},
            "train": {"epochs": 1, "lr": 0.05, "progress": False, **train}, "out": str(tmp_path / name)})
        return json.loads((run_fit(cfg).out / "summary.json").read_text())

    assert "domain_classifier_seconds" not in run("plain") and calls == []
    seconds = run("iw", monitor="iw_val_loss")["domain_classifier_seconds"]
    assert isinstance(seconds, float) and seconds >= 0.0 and calls == ["weight"]
