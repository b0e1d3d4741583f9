"""The loop's hooks for domain adaptation: per-epoch scorers as monitors, weighted source sampling, the strong view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny import TinyConvBackbone
from transferkit.config import ModelConfig, TrainConfig
from transferkit.data.base import Dataset
from transferkit.data.loaders import EpochBatchSampler, make_loader
from transferkit.data.transforms import image_transform
from transferkit.errors import DataError
from transferkit.methods import create_method
from transferkit.model import TransferModel
from transferkit.train.loop import fit


def _data(n: int = 48, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, size=(n, 16, 16), dtype=np.uint8)
    x[y == 1] += 150  # bright = class 1: learnable in a few steps
    return Dataset("image", x, y, ["dark", "bright"], "toy")


def _fit(**kw):
    torch.manual_seed(0)
    model = TransferModel(TinyConvBackbone(), ["dark", "bright"])
    train_kw = {"epochs": 4, "batch_size": 16, "lr": 1e-2, "progress": False, **kw.pop("train", {})}
    cfg = TrainConfig(**train_kw)
    return fit(model, create_method("finetune"), _data(), None, ModelConfig(), cfg, **kw)


def test_scorers_land_in_history_and_choose_the_best_epoch():
    calls = iter([0.2, 0.9, 0.5, 0.1])
    res = _fit(train={"monitor": "snd"}, scorers={"snd": lambda model: next(calls)})
    assert [r["snd"] for r in res.history] == [0.2, 0.9, 0.5, 0.1]
    assert res.best_epoch == 2  # 1-based: the epoch with the highest score


def test_loss_scorers_are_minimised_and_early_stopping_uses_them():
    values = iter([0.5, 0.4, 0.6, 0.7, 0.8])
    res = _fit(train={"monitor": "iw_val_loss", "early_stopping": 2, "epochs": 5},
               scorers={"iw_val_loss": lambda model: next(values)})
    assert res.best_epoch == 2 and res.stopped_early and len(res.history) == 4


def test_scorer_sees_the_model_in_eval_mode():
    modes = []
    _fit(scorers={"probe": lambda model: modes.append(model.training) or 0.0})
    assert modes == [False] * 4


def test_weighted_sampler_draws_in_proportion_and_is_reproducible():
    w = np.array([0.0, 1.0, 3.0, 0.0])
    s = EpochBatchSampler(4, 2, True, seed=3, epoch=0, drop_last=False, weights=w)
    draws = torch.cat([torch.cat([i for _, i in EpochBatchSampler(4, 4, True, 3, e, False, w)]) for e in range(500)])
    counts = np.bincount(draws.numpy(), minlength=4) / len(draws)
    assert counts[0] == 0 and counts[3] == 0
    assert counts[2] == pytest.approx(0.75, abs=0.03)
    assert torch.equal(torch.cat([i for _, i in s]), torch.cat([i for _, i in s]))


def test_bad_sample_weights_are_refused():
    with pytest.raises(DataError, match="Sample weights"):
        EpochBatchSampler(3, 2, True, 0, 0, False, weights=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(DataError, match="Sample weights"):
        EpochBatchSampler(3, 2, True, 0, 0, False, weights=np.array([1.0, 1.0]))


def test_zero_weight_examples_are_never_trained_on():
    ds = _data()
    w = (ds.labels == 1).astype(float)  # only "bright" examples
    loader = make_loader(ds, TinyConvBackbone().preprocessing, image_size=16, train=True, batch_size=8, weights=w)
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == len(ds) and bool((labels == 1).all())


def test_strong_view_differs_from_weak_view_of_the_same_image():
    img = np.random.default_rng(0).integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
    pre = TinyConvBackbone().preprocessing
    torch.manual_seed(0)
    weak = image_transform(pre, 32, train=True, augment="light")(img)
    torch.manual_seed(0)
    strong = image_transform(pre, 32, train=True, augment="strong")(img)
    assert weak.shape == strong.shape == (3, 32, 32)
    assert (weak - strong).abs().mean() > 0.1


def test_sharded_sampler_splits_the_epoch_into_equal_interleaved_shares() -> None:
    whole = [i for _, i in EpochBatchSampler(10, 2, True, seed=1, epoch=3, drop_last=False)]  # 5 batches
    shards = [list(EpochBatchSampler(10, 2, True, seed=1, epoch=3, drop_last=False, shard=(r, 2))) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3]  # equal counts, so no process waits for a missing step
    assert [i.tolist() for _, i in shards[0]] == [whole[0].tolist(), whole[2].tolist(), whole[4].tolist()]
    assert [i.tolist() for _, i in shards[1]] == [whole[1].tolist(), whole[3].tolist(), whole[0].tolist()]  # wraps
    seen = torch.cat([i for s in shards for _, i in s[:2]] + [shards[0][2][1]])
    assert sorted(seen.tolist()) == list(range(10))  # every example once before the padding
    with pytest.raises(ValueError):
        EpochBatchSampler(10, 2, True, 0, 0, False, shard=(2, 2))


def test_a_training_epoch_never_ends_in_a_batch_of_one():
    """Batch-norm cannot normalise one example: the odd one sits the epoch out (a different one each epoch)."""
    batches = [list(EpochBatchSampler(17, 8, True, 0, epoch, False)) for epoch in range(4)]
    assert all([len(idx) for _, idx in b] == [8, 8] for b in batches)
    left_out = {(set(range(17)) - {int(i) for _, idx in b for i in idx}).pop() for b in batches}
    assert len(left_out) > 1
    evaluation = list(EpochBatchSampler(17, 8, False, 0, 0, False))
    assert [len(idx) for _, idx in evaluation] == [8, 8, 1]


def test_fit_with_one_example_over_full_batches_trains_a_batch_norm_network(tmp_path):
    from transferkit import TransferClassifier

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, size=(17, 32, 32, 3), dtype=np.uint8), np.arange(17) % 2
    clf = TransferClassifier(backbone="timm:test_resnet", pretrained=False, image_size=32, epochs=1, batch_size=8,
                             progress=False)
    assert clf.fit(x, y).predict(x).shape == (17,)  # before the fix: "Expected more than 1 value per channel"
