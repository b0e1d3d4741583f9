"""The method interface: registry, freezing per epoch, batch-norm kept frozen, learning-rate groups."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import TinyConvBackbone
from transferkit.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.methods import available_methods, create_method
from transferkit.methods.base import FitContext
from transferkit.model import TransferModel


def _ctx(model, **train):
    return FitContext(model, None, None, TrainConfig(**train), make_loader=None)


def _model():
    torch.manual_seed(0)
    return TransferModel(TinyConvBackbone(), ["a", "b", "c"])


def test_registry_lists_foundation_methods():
    names = available_methods()
    assert {"finetune", "linear-probe", "freeze-unfreeze"} <= set(names)
    with pytest.raises(ConfigError, match="did you mean 'finetune'"):
        create_method("fine-tune-x")


def test_linear_probe_freezes_backbone_and_keeps_bn_in_eval():
    model = _model()
    m = create_method("linear-probe")
    m.setup(_ctx(model))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    m.train_mode(model)
    bn = model.backbone.b0[1]
    assert model.head.training and not bn.training
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 16, 16) * 5 + 3)
    assert torch.equal(bn.running_mean, before)


def test_freeze_first_k_blocks():
    model = _model()
    m = create_method("finetune")
    m.setup(_ctx(model, freeze_blocks=2))
    grads = [all(p.requires_grad for p in b.parameters()) for b in model.backbone.blocks()]
    assert grads == [False, False, True]


def test_freeze_unfreeze_switches_at_head_epochs():
    model = _model()
    m = create_method("freeze-unfreeze", {"head_epochs": 2})
    m.setup(_ctx(model))
    for epoch, expect in ((0, False), (1, False), (2, True), (3, True)):
        m.on_epoch_start(model, epoch)
        assert all(p.requires_grad == expect for p in model.backbone.parameters()), epoch


def test_freeze_unfreeze_still_reads_the_deprecated_train_head_epochs_with_a_warning():
    """Old configs set train.head_epochs; it keeps its meaning (and wins) but says where the setting lives now."""
    model = _model()
    m = create_method("freeze-unfreeze", {"head_epochs": 0})
    with pytest.warns(FutureWarning, match="model.method_params.head_epochs"):
        m.setup(_ctx(model, head_epochs=2))
    m.on_epoch_start(model, 1)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_recalibration_sets_batch_norm_statistics_to_the_data_and_nothing_else():
    from transferkit.methods.finetune import recalibrate_norm_statistics

    model = _model().eval()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    x = torch.randn(64, 3, 16, 16) * 2 + 3
    bn = model.backbone.b0[1]
    assert recalibrate_norm_statistics(model, [(x[:32], None), (x[32:], None)]) == 3
    with torch.no_grad():
        pre = model.backbone.b0[0](x)  # what the first batch-norm layer normalises
    # the plain average of the two batches' statistics (momentum None), not a moving average
    means = torch.stack([pre[:32].mean((0, 2, 3)), pre[32:].mean((0, 2, 3))]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-5)
    assert bn.momentum == 0.1 and not model.training  # momentum and the caller's mode restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_freeze_unfreeze_recalibrates_before_the_head_phase_only(blobs_images):
    from transferkit.data.base import Dataset
    from transferkit.data.loaders import make_loader

    x, y = blobs_images
    ds = Dataset("image", x, y, ["a", "b", "c"], "blobs")
    model = _model()

    def loader(d, *, train, **_):
        return make_loader(d, model.preprocessing, image_size=16, train=train, batch_size=16)

    m = create_method("freeze-unfreeze", {"head_epochs": 1})
    m.setup(FitContext(model, ds, None, TrainConfig(), make_loader=loader))
    bn = model.backbone.b1[1]
    fresh = bn.running_mean.clone()
    m.on_epoch_start(model, 0)
    calibrated = bn.running_mean.clone()
    assert not torch.allclose(calibrated, fresh)
    m.on_epoch_start(model, 1)  # unfreezing does not touch the statistics
    assert torch.equal(bn.running_mean, calibrated)

    model = _model()
    off = create_method("freeze-unfreeze", {"recalibrate_bn": False, "head_epochs": 1})
    off.setup(FitContext(model, ds, None, TrainConfig(), make_loader=loader))
    fresh = model.backbone.b1[1].running_mean.clone()
    off.on_epoch_start(model, 0)
    assert torch.equal(model.backbone.b1[1].running_mean, fresh)  # recalibrate_bn: false keeps the source's


def test_layer_decay_learning_rates():
    model = _model()
    m = create_method("finetune")
    m.setup(_ctx(model, lr=1.0, layer_decay=0.5, head_lr_scale=10.0))
    lrs = {g["name"]: g["lr"] for g in m.param_groups(model)}
    assert lrs == {"backbone.block0": 0.25, "backbone.block1": 0.5, "backbone.block2": 1.0, "head": 10.0}


def test_default_step_is_cross_entropy():
    model = _model()
    m = create_method("finetune")
    m.setup(_ctx(model))
    x, y = torch.randn(5, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1])
    out = m.training_step(model, (x, y))
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(model(x), y), atol=1e-6)
