"""MDD and MCD: their losses on hand-made tensors, how their gradients flow, and (slow) that they adapt on digits.

The fast tests check the losses against values computed by hand and the one-step min-max of each method through the
gradient reversal; the slow test trains ``digits-cnn`` on MNIST, then the same number of steps of source-only, MDD and
MCD from that model, and compares target accuracy on the MNIST-M-style test split (see its docstring for the
measurements behind the thresholds).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from tests.test_adaptation_methods import _loader, _model, _setup, _source, _target
from transferkit.methods.mcd import classifier_discrepancy
from transferkit.methods.mdd import log_one_minus_softmax, margin_disparity_loss


# --- the losses by hand ---------------------------------------------------------------------------------------------
def test_mdd_loss_matches_a_hand_computation() -> None:
    z_s, z_adv_s = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])  # main head says class 0
    z_t, z_adv_t = torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])  # main head says class 1
    e = math.e
    source = -math.log(1.0 / (2.0 + e))  # CE of the auxiliary head towards class 0
    target = -math.log(1.0 - 1.0 / (e + 2.0))  # -log(1 - p'(class 1))
    for margin in (1.0, 4.0):
        got = margin_disparity_loss(z_s, z_adv_s, z_t, z_adv_t, margin)
        assert got.item() == pytest.approx(margin * source + target, rel=1e-6)


def test_log_one_minus_softmax_is_exact_and_stays_finite_where_the_naive_form_is_not() -> None:
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    k = torch.arange(8) % 5
    naive = torch.log(1.0 - torch.softmax(z, 1)[torch.arange(8), k])
    torch.testing.assert_close(log_one_minus_softmax(z, k), naive, rtol=1e-5, atol=1e-6)
    sure = torch.tensor([[60.0, 0.0, 0.0]])  # softmax rounds to 1: the naive log(1 - p) is -inf
    assert torch.isinf(torch.log(1.0 - torch.softmax(sure, 1)[0, 0]))
    assert log_one_minus_softmax(sure, torch.tensor([0])).item() == pytest.approx(-60.0 + math.log(2.0), rel=1e-6)


def test_mcd_discrepancy_is_zero_for_equal_heads_and_the_mean_l1_gap_otherwise() -> None:
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    assert classifier_discrepancy(z, z).item() == 0.0
    assert classifier_discrepancy(z, z + 3.0).item() == pytest.approx(0.0, abs=1e-7)  # same probabilities
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])  # p = (.5, .5) and (.75, .25)
    assert classifier_discrepancy(a, b).item() == pytest.approx(0.25, rel=1e-6)


# --- the one-step min-max through the method --------------------------------------------------------------------------
def _step(name: str, blobs_images, params: dict, coeff_step: int = 9):
    """Gradients of one training step of ``name`` (model in eval mode: the same forward for every ``params``)."""
    torch.manual_seed(0)
    model = _model()
    m = _setup(name, model, _source(blobs_images), _target(blobs_images), params)
    model.eval()
    m.eval()
    x, y = next(iter(_loader(model)(_source(blobs_images), train=False)))
    m.on_epoch_start(model, 0)
    m.on_step_start(coeff_step, 10)
    out = m.training_step(model, (x, y))
    out.loss.backward()
    return model, m, out


def test_mdd_leaves_the_main_head_to_the_source_and_trains_the_auxiliary_head_against_the_features(blobs_images):
    base_model, _, base = _step("mdd", blobs_images, {"trade_off": 0.0})
    model, m, out = _step("mdd", blobs_images, {"trade_off": 1.0})
    # argmax(z) carries no gradient: the main head's gradient is the source cross-entropy's alone
    for p, q in zip(model.head.parameters(), base_model.head.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    assert out.logs["mdd"] > 0 and 0 < out.logs["grl_coeff"] <= 0.1
    # a small step of the auxiliary head along its gradient lowers D; the backbone's gradient differs from the
    # source-only one (the reversal feeds D back into the features)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.adversary.parameters())
    assert any(not torch.allclose(p.grad, q.grad) for p, q in
               zip(model.backbone.parameters(), base_model.backbone.parameters(), strict=True) if p.grad is not None)
    before = float(out.logs["mdd"])
    with torch.no_grad():
        for p in m.adversary.parameters():
            p -= 0.05 * p.grad
    x, y = next(iter(_loader(model)(_source(blobs_images), train=False)))
    m._streams = {}  # the same target batch again
    m.on_epoch_start(model, 0)
    with torch.no_grad():
        after = float(m.training_step(model, (x, y)).logs["mdd"])
    assert after < before


def test_mcd_heads_raise_the_discrepancy_and_the_features_lower_it(blobs_images):
    model, m, _ = _step("mcd", blobs_images, {"trade_off": 1.0})
    model0, m0, out0 = _step("mcd", blobs_images, {"trade_off": 0.0})  # same initial weights, same batches
    x_t = next(iter(_loader(model)(_target(blobs_images), train=False)))[0]

    def disc(backbone, head1, head2) -> float:
        with torch.no_grad():
            f = backbone(x_t)
            return classifier_discrepancy(head1(f), head2(f)).item()

    before = disc(model.backbone, model.head, m.second_head)
    assert before > 0
    # heads: a step against the gradient of L = CE - d raises d (step B)
    h1, h2 = copy.deepcopy(model.head), copy.deepcopy(m.second_head)
    with torch.no_grad():
        for h, src in ((h1, model.head), (h2, m.second_head)):
            for p, g in zip(h.parameters(), src.parameters(), strict=True):
                p -= 0.5 * g.grad
    assert disc(model.backbone, h1, h2) > before
    # features: the backbone's gradient beyond the source cross-entropy's (trade_off 1 minus trade_off 0) is the
    # reversed one, +lambda * dd/dG: a step against it lowers d (step C)
    g = copy.deepcopy(model.backbone)
    with torch.no_grad():
        for p, a, b in zip(g.parameters(), model.backbone.parameters(), model0.backbone.parameters(), strict=True):
            if a.grad is not None:
                p -= 0.5 * (a.grad - b.grad)
    assert disc(g, model.head, m.second_head) < before
    # trade_off 0: plain cross-entropy of both heads on the source batch
    x, y = next(iter(_loader(model0)(_source(blobs_images), train=False)))
    with torch.no_grad():
        f = model0.backbone(x)
        expected = F.cross_entropy(model0.head(f), y) + F.cross_entropy(m0.second_head(f), y)
    assert out0.loss.item() == pytest.approx(expected.item(), rel=1e-5)


# --- real data (slow): MNIST -> MNIST-M-style -----------------------------------------------------------------
# One source-only digits-cnn (2 epochs on the 3,500 MNIST training digits, seed 0) is the shared start; source-only,
# MDD and MCD then each take 3 epochs of the same source digits (batch 32, ~330 steps, AdamW at a constant 1e-3,
# training seed s) from it, and are scored on the 1,000 MNIST-M-style test images. The adversarial games need a few
# hundred steps: at 100 steps MDD (margin 4) was below source-only (42-52 % against 49-55 %).
# Measured with this protocol (probe script, one torch thread, a loaded 2-core machine), target accuracy in %, seeds
# 1 / 2 / 3 / 4: source-only 53.8 / 49.2 / 47.8 / 48.7; MCD 65.1 / 73.8 / 70.2 / 72.1 (gains 11.3 / 24.6 / 22.4 /
# 23.4; with trade_off 0, i.e. only batch-norm seeing the target, it was 63.1 on seed 1 at ~440 steps against 74.0);
# MDD (margin 2, the default) 74.0 / 82.5 / 73.6 / 79.2 (gains 20.2 / 33.3 / 25.8 / 30.5); margin 4 swung from -1.6 to
# +25.4 (and collapsed to 26-34 % on two of five seeds at ~550 steps: see mdd.py). The test runs two seeds and asks
# each for at least half of the smallest gain seen.
ADAPT_EPOCHS, ADAPT_BATCH = 3, 32
SEEDS = (1, 2)
MIN_GAIN = {"mdd": 0.10, "mcd": 0.05}


@pytest.fixture(scope="module")
def digits():
    from transferkit.backbones import build_backbone
    from transferkit.config import DataConfig, ModelConfig, TrainConfig
    from transferkit.data import load_data
    from transferkit.methods import create_method
    from transferkit.model import TransferModel
    from transferkit.train.loop import fit as fit_loop
    from transferkit.train.seeding import seed_everything

    src, tgt = load_data(DataConfig(name="mnist")), load_data(DataConfig(name="mnist-m"))
    seed_everything(0)
    model = TransferModel(build_backbone("digits-cnn"), src.classes)
    fit_loop(model, create_method("source-only"), src.train, None, ModelConfig(backbone="digits-cnn"),
             TrainConfig(epochs=2, batch_size=64, lr=1e-3, head_lr_scale=1.0, seed=0, progress=False, device="cpu"))
    return {"src": src, "tgt": tgt, "pretrained": model, "runs": {}}


def _target_accuracy(digits, name: str, seed: int) -> float:
    from transferkit.config import ModelConfig, TrainConfig
    from transferkit.data.loaders import make_loader
    from transferkit.methods import create_method
    from transferkit.train.loop import fit as fit_loop

    key = (name, seed)
    if key not in digits["runs"]:
        model = copy.deepcopy(digits["pretrained"])
        src, tgt = digits["src"], digits["tgt"]
        cfg = TrainConfig(epochs=ADAPT_EPOCHS, batch_size=ADAPT_BATCH, lr=1e-3, head_lr_scale=1.0,
                          schedule="constant", warmup_fraction=0.0, seed=seed, progress=False, device="cpu")
        fit_loop(model, create_method(name), src.train, None, ModelConfig(backbone="digits-cnn"), cfg,
                 extra={"target": tgt.train.unlabelled()})
        model.eval()
        x, _ = next(iter(make_loader(tgt.test, model.preprocessing, image_size=28, train=False,
                                     batch_size=len(tgt.test))))
        with torch.no_grad():
            digits["runs"][key] = float((model(x).argmax(1).numpy() == tgt.test.labels).mean())
    return digits["runs"][key]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mdd", "mcd"])
def test_mdd_and_mcd_beat_source_only_on_mnist_m(digits, name) -> None:
    """On every seed the method's target accuracy is above source-only's (same seed, same steps) by MIN_GAIN."""
    gains = [_target_accuracy(digits, name, s) - _target_accuracy(digits, "source-only", s) for s in SEEDS]
    assert min(gains) > MIN_GAIN[name], (name, gains)
