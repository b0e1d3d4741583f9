"""Regularised fine-tuning, parameter-efficient tuning and soft labels: the maths of each, and each through fit().

Fast tests use the tiny random backbone (``tests/tiny.py``) or a tiny BERT built from a config; the ``slow`` ones
train real weights on real data and show that each family does what it claims.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.tiny import TinyConvBackbone
from transferkit import TransferClassifier
from transferkit.backbones.taps import Taps
from transferkit.config import ModelConfig, TrainConfig
from transferkit.data.base import Dataset
from transferkit.errors import ConfigError, RunError
from transferkit.methods import create_method
from transferkit.methods.base import FitContext
from transferkit.methods.bss import spectral_shrinkage
from transferkit.methods.delta import feature_distance
from transferkit.methods.regularised import schedule_factor
from transferkit.model import TransferModel
from transferkit.train.mixing import BatchMixer, make_mixer
from transferkit.train.schedules import build_optimizer

TINY = "module:tests.tiny:make_tiny"
TINY_HEAD = "module:tests.test_regularisers:make_tiny_with_head"
CLASSES = ["a", "b", "c"]


class TinyWithHead(TinyConvBackbone):
    """The tiny backbone plus a 'pretrained' 5-class source head, kept off the module tree like the real adapters."""

    def __init__(self) -> None:
        super().__init__()
        self.__dict__["_source_head"] = nn.Linear(16, 5)

    def source_head(self) -> nn.Module:
        return self.__dict__["_source_head"]


def make_tiny_with_head() -> TinyWithHead:
    return TinyWithHead()


def _model(backbone: nn.Module | None = None, classes: list[str] = CLASSES) -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(backbone if backbone is not None else TinyConvBackbone(), classes)


def _setup(name: str, model: TransferModel, params: dict | None = None, train: Dataset | None = None, **cfg):
    m = create_method(name, params or {})
    m.setup(FitContext(model, train, ModelConfig(), TrainConfig(**cfg), make_loader=None))
    return m


def _steps(m, model: TransferModel, batches, lr: float = 0.05) -> None:
    """A few optimisation steps as the loop takes them (the method's parameter groups, AdamW)."""
    opt = build_optimizer(m.param_groups(model), m.train_config)
    m.train_mode(model)
    for i, batch in enumerate(batches):
        m.on_step_start(i, len(batches))
        out = m.training_step(model, batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % 3


def _blobs(blobs_images) -> Dataset:
    x, y = blobs_images
    return Dataset("image", x, y, CLASSES, "blobs")


# --- the lambda schedule -------------------------------------------------------------------------------------
def test_schedule_factor_constant_linear_cosine() -> None:
    assert [schedule_factor("constant", 1.0, t) for t in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]
    assert [schedule_factor("linear", 0.5, t) for t in (0.0, 0.25, 0.5, 0.9)] == [0.0, 0.5, 1.0, 1.0]
    assert schedule_factor("cosine", 1.0, 0.5) == pytest.approx(0.5)
    assert schedule_factor("cosine", 1.0, 0.25) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    with pytest.raises(ConfigError, match="schedule"):
        create_method("l2-sp", {"schedule": "exp"})
    m = create_method("bss", {"schedule": "linear"})
    m.on_step_start(3, 12)
    assert m.strength() == pytest.approx(0.25)


# --- L2-SP ---------------------------------------------------------------------------------------------------
def test_l2sp_is_zero_at_source_and_grows_quadratically_with_drift() -> None:
    model = _model()
    m = _setup("l2-sp", model, {"alpha": 0.3, "beta": 0.0})
    assert m.regulariser(model).item() == 0.0
    params = list(model.backbone.parameters())
    start = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=g) for p in params]
    values = []
    for step in (0.01, 0.02, 0.04):
        with torch.no_grad():
            for p, s, d in zip(params, start, direction):
                p.copy_(s + step * d)
        values.append(m.regulariser(model).item())
    expected = 0.5 * 0.3 * 0.01**2 * sum(d.pow(2).sum().item() for d in direction)
    assert values[0] == pytest.approx(expected, rel=1e-4)
    assert values[1] / values[0] == pytest.approx(4.0, rel=1e-4)
    assert values[2] / values[0] == pytest.approx(16.0, rel=1e-4)
    # beta: plain L2 on the new head, whose weights have no source values
    m2 = _setup("l2-sp", model, {"alpha": 0.0, "beta": 0.5})
    head_sq = sum(p.pow(2).sum() for p in model.head.parameters())
    assert m2.regulariser(model).item() == pytest.approx(0.25 * head_sq.item(), rel=1e-5)


def test_l2sp_pulls_weights_back_towards_the_source() -> None:
    """With a strong alpha the weights drift less from the source than with plain fine-tuning."""
    batches = [_batch(8, s) for s in range(6)]
    drift = {}
    for name, params in (("finetune", {}), ("l2-sp", {"alpha": 50.0})):
        model = _model()
        start = [p.detach().clone() for p in model.backbone.parameters()]
        m = _setup(name, model, params, weight_decay=0.0)
        _steps(m, model, batches, lr=0.05)
        drift[name] = sum((p.detach() - s).pow(2).sum() for p, s in zip(model.backbone.parameters(), start)).item()
    assert drift["l2-sp"] < 0.7 * drift["finetune"], drift


# --- DELTA ---------------------------------------------------------------------------------------------------
def test_feature_distance_matches_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    w = torch.tensor([0.5, 1.0, 1.5])
    per = ((a - b) ** 2).mean(dim=(2, 3))  # (N, C)
    assert feature_distance(a, b, w).item() == pytest.approx((per * w).sum(1).div(3).mean().item(), rel=1e-6)
    # token maps (N, L, D): only the positions the attention mask keeps count
    t1, t2 = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    want = torch.stack([((t1[i, : int(mask[i].sum())] - t2[i, : int(mask[i].sum())]) ** 2).mean() for i in range(2)])
    assert feature_distance(t1, t2, None, mask).item() == pytest.approx(want.mean().item(), rel=1e-6)


def _delta_value(m, model: TransferModel, x: torch.Tensor) -> float:
    with Taps(model.backbone, m.tap_paths) as taps:
        model(x)
    return m.regulariser(model, x, taps.in_order()).item()


def test_delta_is_zero_for_matching_feature_maps_and_positive_after_drift() -> None:
    model = _model()
    m = _setup("delta", model)
    assert m.tap_paths == ["b0", "b1", "b2"]
    x, _ = _batch()
    model.eval()
    assert _delta_value(m, model, x) == pytest.approx(0.0, abs=1e-12)
    m.train_mode(model)  # batch statistics in both (the copy mirrors the trained model's batch-norm mode)
    assert _delta_value(m, model, x) == pytest.approx(0.0, abs=1e-12)
    model.eval()  # the running statistics moved with that batch: a (statistics) drift the copy does not share
    assert _delta_value(m, model, x) > 0
    with torch.no_grad():
        model.backbone.b2[0].weight.add_(0.2 * torch.randn_like(model.backbone.b2[0].weight))
    assert _delta_value(m, model, x) > 1e-4
    # only the last block changed, so tapping the first two blocks alone still reads zero
    model01 = _model()
    model01.eval()
    m01 = _setup("delta", model01, {"layers": [0, -2]})
    assert m01.tap_paths == ["b0", "b1"]
    with torch.no_grad():
        model01.backbone.b2[0].weight.add_(0.2 * torch.randn_like(model01.backbone.b2[0].weight))
    assert _delta_value(m01, model01, x) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="block indices"):
        _setup("delta", _model(), {"layers": [7]})


def test_delta_taylor_attention_weights_have_mean_one(blobs_images) -> None:
    ds = _blobs(blobs_images)
    clf = TransferClassifier(backbone=TINY, method="delta", method_params={"attention": "taylor"}, epochs=1,
                             progress=False).fit(ds)
    assert clf.method_["params"]["attention"] == "taylor"
    model = _model()
    from transferkit.data.loaders import make_loader

    def loader(d, *, train, epoch=0, batch_size=None, drop_last=False):
        return make_loader(d, model.preprocessing, image_size=16, train=False, batch_size=batch_size or 32)

    m = create_method("delta", {"attention": "taylor", "attention_samples": 40})
    m.setup(FitContext(model, ds, ModelConfig(), TrainConfig(), make_loader=loader))
    weights = m.channel_weights()
    assert [w.numel() for w in weights] == [8, 16, 16]
    for w in weights:
        assert w.mean().item() == pytest.approx(1.0, rel=1e-5) and (w > 0).all() and w.std() > 0


# --- BSS -----------------------------------------------------------------------------------------------------
def test_bss_value_and_optimisation_lowers_the_smallest_singular_values() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(32, 16, generator=g)
    sigma = torch.linalg.svdvals(feats)
    assert spectral_shrinkage(feats, 2).item() == pytest.approx((sigma[-2:] ** 2).sum().item(), rel=1e-5)
    assert spectral_shrinkage(feats[:1], 1).item() == 0.0  # one example: nothing to shrink
    f = feats.clone().requires_grad_(True)
    opt = torch.optim.SGD([f], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        spectral_shrinkage(f, 3).backward()
        opt.step()
    after = torch.linalg.svdvals(f.detach())
    assert (after[-3:] < 0.5 * sigma[-3:]).all(), (sigma[-3:], after[-3:])
    assert torch.allclose(after[:-3], sigma[:-3], rtol=1e-4)  # the others are untouched


# --- LwF -----------------------------------------------------------------------------------------------------
def test_lwf_is_zero_at_start_and_positive_after_drift() -> None:
    model = _model(TinyWithHead())
    m = _setup("lwf", model, {"weight": 1.0})
    x, y = _batch()
    m.train_mode(model)
    feats = model.backbone(x)
    assert m.regulariser(model, x, feats).item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        model.backbone.b1[0].weight.add_(0.3 * torch.randn_like(model.backbone.b1[0].weight))
    assert m.regulariser(model, x, model.backbone(x)).item() > 1e-5
    groups = {g["name"]: g["lr"] for g in m.param_groups(model)}
    assert groups["method.lwf.source_head"] == m.train_config.lr  # the old head learns at the backbone's rate


def test_lwf_without_source_head_is_a_config_error(blobs_images) -> None:
    with pytest.raises(ConfigError, match="pretrained classifier"):
        TransferClassifier(backbone=TINY, method="lwf", epochs=1, progress=False).fit(_blobs(blobs_images))


# --- LoRA ----------------------------------------------------------------------------------------------------
def _tiny_bert_model():
    from transformers import BertConfig

    from transferkit.backbones.hf_backbone import HFBackbone, config_to_dict

    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32)
    torch.manual_seed(0)
    return TransferModel(HFBackbone("tiny-bert", pretrained=False, config=config_to_dict(cfg)), ["neg", "pos"])


def _text_batch(seed: int, n: int = 8) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (n, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[: n // 2, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask}, torch.arange(n) % 2


def test_lora_leaves_base_weights_untouched_and_merges_exactly() -> None:
    model = _tiny_bert_model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    m = _setup("lora", model, {"r": 4, "alpha": 8, "dropout": 0.0})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any(".query." in n for n in trainable) and any(".value." in n for n in trainable)
    assert not any(".key." in n for n in trainable)
    _steps(m, model, [_text_batch(s) for s in range(4)], lr=0.05)
    after = model.backbone.state_dict()
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora_" not in k}
    assert base.keys() == before.keys()
    assert all(torch.equal(base[k], before[k]) for k in before), "a base weight changed"
    assert any(v.abs().sum() > 0 for k, v in after.items() if "lora_B" in k), "LoRA did not train"
    model.eval()
    x, _ = _text_batch(9)
    with torch.no_grad():
        unmerged = model(x)
    m.merge(model)
    assert model.backbone.state_dict().keys() == before.keys()
    with torch.no_grad():
        assert torch.allclose(model(x), unmerged, atol=1e-5)
    changed = [k for k in before if not torch.equal(model.backbone.state_dict()[k], before[k])]
    assert changed and all(".query." in k or ".value." in k for k in changed)


def test_lora_trains_under_five_percent_of_minilm() -> None:
    from transferkit.backbones.catalog import minilm_folder
    from transferkit.backbones.hf_backbone import HFBackbone

    try:
        folder = minilm_folder()
    except Exception:  # noqa: BLE001
        pytest.skip("MiniLM package not installed")
    model = TransferModel(HFBackbone(str(folder), pretrained=False), ["neg", "pos"])  # architecture only: fast
    _setup("lora", model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable <= 0.05 * total, (trainable, total)
    assert trainable == 6 * 2 * (2 * 8 * 384) + 384 * 2 + 2  # r=8 on query and value of 6 layers, plus the head


def test_lora_on_conv_nets_targets_ungrouped_convs_and_linears() -> None:
    from transferkit.methods.lora import default_targets

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.Linear(8, 4))
    assert default_targets(net) == ["0", "3"]
    with pytest.raises(ConfigError, match="target_modules"):
        create_method("lora", {"target_modules": 3})


# --- BitFit --------------------------------------------------------------------------------------------------
def test_bitfit_trains_only_biases_and_head() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    m = _setup("bitfit", model, {"update_norm_stats": False})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.endswith(".bias") or n.startswith("head.")}
    _steps(m, model, [_batch(8, s) for s in range(3)])
    after = model.backbone.state_dict()
    changed = {k for k in before if not torch.equal(after[k], before[k])}
    assert changed and all(k.endswith(".bias") for k in changed), changed


# --- mixup / cutmix ------------------------------------------------------------------------------------------
def test_mixup_soft_targets_and_loss_match_hand_computation() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    xm, ym = BatchMixer(3, mixup_alpha=0.4)(x, y)
    assert torch.allclose(ym.sum(1), torch.ones(6))
    xr, yr = x.roll(1, 0), y.roll(1, 0)
    lam = ((xm - xr) * (x - xr)).sum() / (x - xr).pow(2).sum()  # xm = lam x + (1 - lam) x_rolled
    assert torch.allclose(xm, lam * x + (1 - lam) * xr, atol=1e-5)
    assert torch.allclose(ym, lam * F.one_hot(y, 3) + (1 - lam) * F.one_hot(yr, 3), atol=1e-5)
    # through a method: the loss is lam * CE(y) + (1 - lam) * CE(y_rolled) on the mixed batch
    model = _model()
    model.eval()
    m = _setup("finetune", model, mixup_alpha=0.4, label_smoothing=0.0)
    x16, y16 = _batch(6)
    torch.manual_seed(5)
    loss = m.training_step(model, (x16, y16)).loss
    torch.manual_seed(5)
    xm16, ym16 = BatchMixer(3, mixup_alpha=0.4)(x16, y16)
    lam16 = ym16[0, y16[0]]  # y16[0] != y16[-1]
    logits = model(xm16)
    want = lam16 * F.cross_entropy(logits, y16) + (1 - lam16) * F.cross_entropy(logits, y16.roll(1, 0))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_cutmix_targets_follow_the_pasted_area() -> None:
    torch.manual_seed(3)
    x = torch.arange(1, 7, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 16, 16).clone()  # image i is i + 1
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(5):
        xm, ym = BatchMixer(3, cutmix_alpha=1.0)(x, y)
        assert torch.allclose(ym.sum(1), torch.ones(6))
        pasted = (xm[0] == x[-1]).float().mean().item()  # share of image 0 now showing image 5
        assert ym[0, y[-1]].item() == pytest.approx(pasted, abs=1e-6)
        assert ym[0, y[0]].item() == pytest.approx(1 - pasted, abs=1e-6)


def test_mixing_refuses_data_it_cannot_mix() -> None:
    assert make_mixer(3, "image", 0.0, 0.0) is None
    with pytest.raises(ConfigError, match="text"):
        make_mixer(3, "text", 0.2, 0.0)
    with pytest.raises(ConfigError, match="cutmix_alpha"):
        make_mixer(3, "tabular", 0.0, 1.0)
    xm, ym = make_mixer(3, "tabular", 0.2, 0.0)(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))
    assert xm.shape == (4, 5) and torch.allclose(ym.sum(1), torch.ones(4))
    with pytest.raises(ConfigError, match="mixup_alpha"):
        TransferClassifier(mixup_alpha=-1.0)


# --- stochastic depth ----------------------------------------------------------------------------------------
def test_drop_path_on_timm_and_refused_without_sites() -> None:
    from timm.layers import DropPath

    bb = create_method("finetune").build_backbone(ModelConfig(backbone="timm:resnet18", pretrained=False,
                                                              drop_path=0.2))
    rates = [m.drop_prob for m in bb.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx(list(np.linspace(0, 0.2, 8)))
    with pytest.raises(ConfigError, match="drop_path"):
        create_method("finetune").build_backbone(ModelConfig(backbone=TINY, drop_path=0.1))
    with pytest.raises(ConfigError, match="drop_path"):
        TransferClassifier(drop_path=1.0)


# --- soft targets from a teacher -----------------------------------------------------------------------------
def test_soft_targets_loss_matches_hand_computation(blobs_images, tmp_path: Path) -> None:
    ds = _blobs(blobs_images)
    teacher = TransferClassifier(backbone=TINY, epochs=1, progress=False).fit(ds)
    teacher.save(tmp_path / "teacher")
    model = _model()
    model.image_size = 12  # a smaller student input: the batch is converted to the teacher's 16 px
    m = _setup("soft-targets", model, {"teacher": str(tmp_path / "teacher"), "alpha": 0.3, "temperature": 3.0,
                                       "trust_code": True}, train=ds)  # the teacher's backbone is tests.tiny's
    model.eval()
    x, y = torch.randn(6, 3, 12, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    loss = m.training_step(model, (x, y)).loss
    raw = x * 0.5 + 0.5  # tiny preprocessing: mean 0.5, std 0.5 for both
    tx = (F.interpolate(raw, size=(16, 16), mode="bilinear", align_corners=False, antialias=True) - 0.5) / 0.5
    with torch.no_grad():
        zt = teacher.model_(tx)
    zs = model(x)
    kd = 9.0 * F.kl_div(F.log_softmax(zs / 3, 1), F.softmax(zt / 3, 1), reduction="batchmean")
    want = 0.7 * F.cross_entropy(zs, y) + 0.3 * kd
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="same label set"):
        _setup("soft-targets", _model(classes=["x", "y", "z"]), {"teacher": str(tmp_path / "teacher"),
                                                                 "trust_code": True})
    with pytest.raises(RunError, match="tests.tiny:make_tiny.*trust_code=True"):  # a saved model is data
        _setup("soft-targets", _model(), {"teacher": str(tmp_path / "teacher")})
    with pytest.raises(ConfigError, match="teacher"):
        create_method("soft-targets")


# --- every new method through fit(), save and load -----------------------------------------------------------
CASES = [
    pytest.param("l2-sp", TINY, {}, {}, id="l2-sp"),
    pytest.param("delta", TINY, {}, {}, id="delta"),
    pytest.param("delta", TINY, {"attention": "taylor", "schedule": "cosine"}, {}, id="delta-taylor"),
    pytest.param("bss", TINY, {"k": 2, "schedule": "linear"}, {}, id="bss"),
    pytest.param("lwf", TINY_HEAD, {}, {}, id="lwf"),
    pytest.param("lora", TINY, {"r": 2}, {}, id="lora"),
    pytest.param("bitfit", TINY, {}, {}, id="bitfit"),
    pytest.param("soft-targets", TINY, {}, {}, id="soft-targets"),
    pytest.param("finetune", TINY, {}, {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
                 id="mixup-cutmix"),
]


@pytest.mark.parametrize("method, backbone, params, train", CASES)
def test_method_fits_one_epoch_and_reloads_identically(blobs_images, tmp_path: Path, method, backbone, params,
                                                       train) -> None:
    ds = _blobs(blobs_images)
    if method == "soft-targets":
        TransferClassifier(backbone=TINY, epochs=1, progress=False).fit(ds).save(tmp_path / "teacher")
        params = {**params, "teacher": str(tmp_path / "teacher"), "trust_code": True}
    clf = TransferClassifier(backbone=backbone, method=method, method_params=params, epochs=1, batch_size=16,
                             progress=False, **train).fit(ds)
    fr = clf.fit_result_
    assert len(clf.history_) == 1 and np.isfinite(clf.history_[0]["train_loss"])
    assert 0 < fr.trainable_params <= fr.total_params
    if method in ("lora", "bitfit"):
        assert fr.trainable_params < fr.total_params
    clf.save(tmp_path / "model")
    again = TransferClassifier.load(tmp_path / "model", trust_code=True)  # the backbone is tests.tiny's factory
    np.testing.assert_array_equal(again.predict_proba(ds), clf.predict_proba(ds))


def test_lora_fit_reports_counts_and_saves_plain_architecture(blobs_images, tmp_path: Path) -> None:
    ds = _blobs(blobs_images)
    clf = TransferClassifier(backbone=TINY, method="lora", method_params={"r": 2}, epochs=1, progress=False).fit(ds)
    fr = clf.fit_result_
    head = sum(p.numel() for p in clf.model_.head.parameters())
    assert fr.trainable_params == fr.extra["lora_params"] + head
    assert fr.total_params == fr.extra["merged_total_params"] + fr.extra["lora_params"]
    assert not any("lora_" in k or "base_layer" in k for k in clf.model_.state_dict())


class _Stop(Exception):
    pass


@pytest.mark.parametrize("method, backbone, params", [
    ("l2-sp", TINY, {}), ("delta", TINY, {"attention": "taylor"}), ("lwf", TINY_HEAD, {}), ("lora", TINY, {"r": 2}),
])
def test_interrupted_then_resumed_matches_uninterrupted(blobs_images, tmp_path: Path, method, backbone,
                                                        params) -> None:
    """The method's own state (source copies, attention weights, LoRA factors) is checkpointed and restored."""
    from transferkit.backbones import build_backbone
    from transferkit.train.loop import fit

    ds = _blobs(blobs_images)
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False)
    mcfg = ModelConfig(backbone=backbone, method=method, method_params=params)

    def run(ckpt: Path, stop_after: int | None = None, resume: bool = False):
        torch.manual_seed(0)
        model = TransferModel(build_backbone(backbone), CLASSES)
        m = create_method(method, params)
        seen = []

        def on_end(row):
            seen.append(row)
            if stop_after is not None and len(seen) > stop_after:
                raise _Stop

        return fit(model, m, ds, None, mcfg, cfg, checkpoint_dir=ckpt, resume=resume, on_epoch_end=on_end)

    ref = run(tmp_path / "ref")
    with pytest.raises(_Stop):
        run(tmp_path / "cut", stop_after=1)  # dies at the end of epoch 2, before its checkpoint
    resumed = run(tmp_path / "cut", resume=True)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in ref.history]
    assert resumed.best_state.keys() == ref.best_state.keys()
    assert all(torch.equal(resumed.best_state[k], ref.best_state[k]) for k in ref.best_state)


# --- real data (slow) ----------------------------------------------------------------------------------------
# Animal-MNIST, 10 images per class, 48 px, 4 epochs of MobileNetV2 with the default recipe (AdamW, lr 1e-3): about
# 25 s per fit on 2 idle cores. The strengths are chosen to make the effect visible within 16 steps.
FEW_SHOT = dict(image_size=48, epochs=4, batch_size=25, progress=False)


@pytest.fixture(scope="module")
def animal_few_shot():
    from transferkit.backbones import build_backbone
    from transferkit.config import DataConfig
    from transferkit.data import load_data
    from transferkit.data.loaders import make_loader

    splits = load_data(DataConfig(name="animal-mnist", per_class=10))
    test = splits.test.subset(np.arange(0, len(splits.test), 4))
    source = TransferModel(build_backbone("mobilenet_v2.imagenet"), splits.classes, image_size=48)
    x, _ = next(iter(make_loader(test, source.preprocessing, image_size=48, train=False, batch_size=64)))
    return splits, test, source, x


@pytest.fixture(scope="module")
def finetuned(animal_few_shot):
    splits, test, _, _ = animal_few_shot
    clf = TransferClassifier(method="finetune", **FEW_SHOT).fit(splits.train)
    return clf, clf.evaluate(test)["accuracy"]


def _weight_distance(model: TransferModel, source: TransferModel) -> float:
    pairs = zip(model.backbone.parameters(), source.backbone.parameters())
    return math.sqrt(sum((p.detach() - q.detach()).pow(2).sum().item() for p, q in pairs))


def _feature_distance(model: TransferModel, source: TransferModel, x: torch.Tensor) -> float:
    """DELTA's own measure (uniform weights, last four blocks) between ``model`` and the source, on ``x``."""
    m = _setup("delta", source)
    model.train()  # both normalise with the batch's statistics, as during training
    with torch.no_grad():
        with Taps(model.backbone, m.tap_paths) as taps:
            model(x)
        value = m.regulariser(model, x, taps.in_order()).item()
    model.eval()
    return value


@pytest.mark.slow
def test_l2sp_keeps_weights_closer_to_the_source_on_animal_mnist(animal_few_shot, finetuned) -> None:
    splits, test, source, _ = animal_few_shot
    ft, ft_acc = finetuned
    clf = TransferClassifier(method="l2-sp", method_params={"alpha": 1.0}, **FEW_SHOT).fit(splits.train)
    acc = clf.evaluate(test)["accuracy"]
    d_ft, d_sp = _weight_distance(ft.model_, source), _weight_distance(clf.model_, source)
    assert d_sp < 0.85 * d_ft, (d_sp, d_ft)
    assert acc > 0.3 and ft_acc > 0.3, (acc, ft_acc)  # chance is 0.1


@pytest.mark.slow
def test_delta_keeps_feature_maps_closer_to_the_source_on_animal_mnist(animal_few_shot, finetuned) -> None:
    splits, test, source, x = animal_few_shot
    ft, _ = finetuned
    clf = TransferClassifier(method="delta", method_params={"alpha": 10.0}, **FEW_SHOT).fit(splits.train)
    acc = clf.evaluate(test)["accuracy"]
    f_ft, f_delta = _feature_distance(ft.model_, source, x), _feature_distance(clf.model_, source, x)
    assert f_delta < 0.85 * f_ft, (f_delta, f_ft)
    assert acc > 0.3, acc


@pytest.mark.slow
def test_lora_on_minilm_rotten_tomatoes_beats_chance() -> None:
    """32 texts per class, 3 epochs: LoRA trains 0.3% of MiniLM and classifies sentiment clearly above chance."""
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    splits = load_data(DataConfig(name="rotten-tomatoes", per_class=32))
    test = splits.test.subset(np.arange(0, len(splits.test), 5))
    clf = TransferClassifier(backbone="minilm-l6", method="lora", epochs=3, batch_size=16, lr=1e-3,
                             progress=False).fit(splits.train)
    fr = clf.fit_result_
    assert fr.trainable_params <= 0.05 * fr.total_params, (fr.trainable_params, fr.total_params)
    assert clf.evaluate(test)["accuracy"] > 0.6  # chance is 0.5
