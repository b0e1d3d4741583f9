"""Each fine-tuning strategy does what it claims on real data with the real pretrained weights (offline)."""

from __future__ import annotations

import pytest

from transferkit import TransferClassifier
from transferkit.config import DataConfig
from transferkit.data import load_data

pytestmark = pytest.mark.slow

IMAGE = dict(backbone="mobilenet_v2.imagenet", image_size=64, batch_size=64, progress=False)


@pytest.fixture(scope="module")
def animals():
    return load_data(DataConfig(name="animal-mnist", train_size=1000))


def test_finetune_pretrained_beats_random_init(animals):
    pre = TransferClassifier(method="finetune", epochs=3, **IMAGE).fit(animals).evaluate(animals.test)["accuracy"]
    rnd = TransferClassifier(method="finetune", epochs=3, **{**IMAGE, "backbone": "mobilenet_v2.random"})
    rnd_acc = rnd.fit(animals).evaluate(animals.test)["accuracy"]
    assert pre >= 0.88, pre
    assert pre - rnd_acc >= 0.15, (pre, rnd_acc)


def test_linear_probe_trains_only_the_head(animals):
    clf = TransferClassifier(method="linear-probe", epochs=3, lr=1e-3, **IMAGE).fit(animals)
    res = clf.fit_result_
    assert res.trainable_params == 1280 * 10 + 10
    assert clf.evaluate(animals.test)["accuracy"] >= 0.75


def test_freeze_unfreeze(animals):
    import torch

    from transferkit.backbones import build_backbone

    clf = TransferClassifier(method="freeze-unfreeze", epochs=3, method_params={"head_epochs": 1}, **IMAGE).fit(animals)
    first, unfrozen = clf.history_[0], clf.history_[1]
    assert first["val_accuracy"] >= 0.6  # the head alone, on frozen pretrained features, already works
    # What tells the fix (batch-norm statistics re-estimated on the target before the head phase) from the defect
    # (the source's statistics) on every seed is the training loss at unfreezing, not the accuracy alone: the
    # defect's test accuracy spreads over seeds up to the fix's (AMD EPYC, seeds 0-2: 0.775 / 0.804 / 0.869 against
    # 0.909 / 0.882 / 0.892). Its training loss does not fall when the backbone unfreezes under a head fitted to
    # features that then shift. Measured with benchmarks/fine_tuning_strategies.py (this recipe) on an Intel Xeon
    # with AMX, epoch 1 -> 2 loss drop: fix 0.645 / 0.525 / 0.715 / 0.470 / 0.370 on seeds 0-4 (min 0.37), defect
    # -0.171 / 0.002 / -0.206 / -0.500 / -0.614 (max 0.002; AMD seed 0: -0.16); test accuracy: fix 0.899 / 0.873 /
    # 0.880 / 0.886 / 0.889 (mean 0.885, min 0.873), defect 0.834 / 0.818 / 0.823 / 0.826 / 0.881 (mean 0.836: seed 4
    # of the defect beats seed 1 of the fix).
    assert unfrozen["train_loss"] < first["train_loss"] - 0.2, (first["train_loss"], unfrozen["train_loss"])
    assert clf.evaluate(animals.test)["accuracy"] >= 0.85  # the fix's lowest over seeds 0-4 on either CPU: 0.873
    source = build_backbone("mobilenet_v2.imagenet").state_dict()
    tuned = {k: v.cpu() for k, v in clf.model_.backbone.state_dict().items()}
    assert any(not torch.equal(source[k], tuned[k]) for k in source if k.endswith("weight"))  # then it unfroze


def test_text_linear_probe_on_minilm():
    from transferkit.data.base import Splits

    rt = load_data(DataConfig(name="rotten-tomatoes", train_size=800))
    clf = TransferClassifier(backbone="minilm-l6", method="linear-probe", epochs=3, lr=3e-3, batch_size=64,
                             progress=False).fit(Splits(rt.train, rt.val.subset(range(300))))
    assert clf.fit_result_.trainable_params == 384 * 2 + 2
    assert clf.evaluate(rt.test.subset(range(800)))["accuracy"] >= 0.68
