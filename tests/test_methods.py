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
    m = create_method("freeze-unfreeze")
    m.setup(_ctx(model, head_epochs=2))
    for epoch, expect in ((0, False), (1, False), (2, True), (3, True)):
        m.on_epoch_start(model, epoch)
        assert all(p.requires_grad == expect for p in model.backbone.parameters()), epoch


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
