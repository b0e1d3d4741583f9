"""The probe's fitted head is kept in the feature cache: a fit on the same features, labels and settings reads it
back (same weights, record and metrics), any change of those fits again, and a damaged entry is fitted again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from transferkit import TransferClassifier
from transferkit.data.base import Dataset, Splits
from transferkit.features import FeatureCache
from transferkit.methods.feature_heads import Probe

TINY = "module:tests.tiny:make_tiny"


pytestmark = pytest.mark.usefixtures("own_cache")  # every test here reads and writes its own feature cache


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the probe's real head fits (one entry per call of ``Probe.fit_head``)."""
    calls: list[int] = []
    real = Probe.fit_head

    def counted(self: Probe, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Probe, "fit_head", counted)
    return calls


def _splits(blobs_images: tuple[np.ndarray, np.ndarray]) -> Splits:
    x, y = blobs_images
    ds = Dataset("image", x, y, ["c0", "c1", "c2"], "blobs")
    return Splits(train=ds.subset(np.arange(0, 60, 2)), val=ds.subset(np.arange(1, 60, 2)))


def _fit(splits: Splits, **params: Any) -> TransferClassifier:
    return TransferClassifier(backbone=TINY, method="probe", progress=False,
                              method_params={"engine": "torch", **params}).fit(splits)


def test_second_fit_reads_the_head_and_gives_identical_weights_record_and_metrics(blobs_images, fits,
                                                                                   own_cache: Path) -> None:
    splits = _splits(blobs_images)
    first = _fit(splits)
    second = _fit(splits)
    assert len(fits) == 1  # the second fit read the head back
    assert len(FeatureCache(own_cache).heads()) == 1
    s1, s2 = first.model_.state_dict(), second.model_.state_dict()
    assert s1.keys() == s2.keys()
    for name in s1:
        assert s1[name].dtype == s2[name].dtype and torch.equal(s1[name], s2[name]), name
    untimed = lambda history: [{k: v for k, v in row.items() if k != "feature_seconds"} for row in history]  # noqa: E731
    assert untimed(second.history_) == untimed(first.history_)  # the C path's scores; fit_seconds of the real fit
    assert second.fit_result_.best_epoch == first.fit_result_.best_epoch
    assert second.evaluate(splits.val) == first.evaluate(splits.val)


@pytest.mark.parametrize("change", ["label", "C", "tol", "monitor"])
def test_a_changed_label_or_setting_fits_again(blobs_images, fits, change: str) -> None:
    splits = _splits(blobs_images)
    _fit(splits)
    params: dict[str, Any] = {}
    kw: dict[str, Any] = {}
    if change == "label":
        labels = splits.train.labels.copy()
        labels[0] = (labels[0] + 1) % 3
        train = Dataset("image", splits.train.inputs, labels, splits.train.classes, "blobs")
        splits = Splits(train=train, val=splits.val)
    elif change == "C":
        params["C"] = 0.5
    elif change == "tol":
        params["tol"] = 1e-4
    else:
        kw["monitor"] = "val_loss"
    TransferClassifier(backbone=TINY, method="probe", progress=False, method_params={"engine": "torch", **params},
                       **kw).fit(splits)
    assert len(fits) == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong shape", "bad record"])
def test_a_damaged_entry_is_fitted_again_and_replaced(blobs_images, fits, own_cache: Path, damage: str) -> None:
    splits = _splits(blobs_images)
    first = _fit(splits)
    (entry,) = [p for p in (own_cache / "heads").iterdir() if not p.name.startswith(".")]
    arrays = entry / "head.npz"
    if damage == "truncated":
        arrays.write_bytes(arrays.read_bytes()[:40])
    elif damage == "garbage":
        arrays.write_bytes(b"\x00not a zip file")
    elif damage == "wrong shape":
        np.savez(arrays, weight=np.zeros((2, 2), np.float32), bias=np.zeros(2, np.float32))
    else:
        (entry / "meta.json").write_text('{"key": "someone else"}')
    second = _fit(splits)
    assert len(fits) == 2
    assert torch.equal(second.model_.head[-1].weight, first.model_.head[-1].weight)
    _fit(splits)  # the entry was replaced by a good one: read back
    assert len(fits) == 2


def test_cache_false_keeps_no_head(blobs_images, fits, own_cache: Path) -> None:
    splits = _splits(blobs_images)
    _fit(splits, cache=False)
    _fit(splits, cache=False)
    assert len(fits) == 2 and not (own_cache / "heads").exists()


def test_cache_list_shows_the_heads_and_clear_removes_them(blobs_images, own_cache: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from transferkit.cli import main as cli_main

    _fit(_splits(blobs_images))
    cache = FeatureCache(own_cache)
    assert len(cache.heads()) == 1
    assert cli_main(["cache", "list"]) == 0
    assert "1 fitted heads" in capsys.readouterr().out
    assert cli_main(["cache", "clear"]) == 0
    assert "removed 3 cache entries" in capsys.readouterr().out  # train and val features (engine torch), the head
    assert cache.heads() == []
