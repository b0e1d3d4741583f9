"""Domain-adaptation methods (``dann``, ``cdan``, ``cdan-e``, ``dan``, ``coral``, ``mcc``, ``self-training``) and the
two baselines (``source-only``, ``target-oracle``) through the method interface and the one training loop.

Fast tests run the tiny random backbone (``tests/tiny.py``) on a 3-class image task whose target is the same task
with inverted brightness; the ``slow`` test trains ``digits-cnn`` on MNIST and checks every adaptation method's
accuracy on the MNIST-M-style target against source-only's, with the same seed and the same budget.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.tiny import TinyConvBackbone
from transferkit import TransferClassifier
from transferkit.config import ModelConfig, TrainConfig
from transferkit.data.base import Dataset
from transferkit.data.loaders import make_loader
from transferkit.errors import ConfigError, DataError
from transferkit.methods import create_method, get_method_class
from transferkit.methods.base import FitContext
from transferkit.methods.domain_adaptive import AdaptationMethod
from transferkit.model import TransferModel
from transferkit.train.loop import fit as fit_loop

TINY = "module:tests.tiny:make_tiny"
CLASSES = ["a", "b", "c"]
ADAPTATION = ["dann", "cdan", "cdan-e", "dan", "coral", "mcc", "self-training"]
LOGGED = {"dann": "transfer_loss", "cdan": "transfer_loss", "cdan-e": "transfer_loss", "dan": "mmd",
          "coral": "coral", "mcc": "mcc", "self-training": "pseudo_loss"}


def _source(blobs_images) -> Dataset:
    x, y = blobs_images
    return Dataset("image", x, y, CLASSES, "blobs")


def _target(blobs_images, n: int = 40) -> Dataset:
    """The same task with inverted brightness, unlabelled: a domain shift the tiny model can see."""
    x, _ = blobs_images
    return Dataset("image", (255 - x[:n]).astype(np.uint8), None, CLASSES, "blobs-inverted")


def _model() -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(TinyConvBackbone(), CLASSES)


def _loader(model: TransferModel, batch_size: int = 16):
    """The loop's loader closure (with the ``augment`` override), for methods set up outside fit()."""

    def loader(ds, *, train, epoch=0, batch_size=None, drop_last=False, augment=None):
        return make_loader(ds, model.preprocessing, image_size=16, train=train,
                           augment=(augment or "none") if train else "none", batch_size=batch_size or bs,
                           seed=0, epoch=epoch, drop_last=drop_last)

    bs = batch_size
    return loader


def _setup(name: str, model: TransferModel, source: Dataset, target: Dataset | None, params: dict | None = None,
           **cfg):
    m = create_method(name, params or {})
    extra = {"target": target} if target is not None else {}
    m.setup(FitContext(model, source, ModelConfig(), TrainConfig(**{"batch_size": 16, **cfg}),
                       make_loader=_loader(model, cfg.get("batch_size", 16)), extra=extra))
    return m


# --- every method through the API: trains, logs its term, saves and loads -----------------------------------
@pytest.mark.parametrize("name", ADAPTATION)
def test_method_trains_logs_and_round_trips(name, blobs_images, tmp_path: Path) -> None:
    source, target = _source(blobs_images), _target(blobs_images)
    model = _model()
    m = _setup(name, model, source, target)
    assert isinstance(m, AdaptationMethod)
    x, y = next(iter(_loader(model)(source, train=True)))
    m.train_mode(model)
    m.on_epoch_start(model, 0)
    m.on_step_start(5, 10)
    out = m.training_step(model, (x, y))
    assert out.logits.shape == (16, 3) and torch.isfinite(out.loss)
    term = out.logs[LOGGED[name]]
    assert math.isfinite(float(term)) and float(term) >= 0.0
    out.loss.backward()
    if name in ("dann", "cdan", "cdan-e"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.discriminator.parameters())
        assert {g["name"] for g in m.param_groups(model)} >= {"head", f"method.{name}"}

    clf = TransferClassifier(backbone=TINY, method=name, epochs=2, batch_size=16, lr=1e-2, progress=False,
                             augment="light")
    clf.fit(source, extra={"target": target})
    assert len(clf.history_) == 2 and all(math.isfinite(r["train_loss"]) for r in clf.history_)
    proba = clf.predict_proba(target)
    assert proba.shape == (40, 3) and np.allclose(proba.sum(1), 1.0, atol=1e-5)
    clf.save(tmp_path / "m")
    again = TransferClassifier.load(tmp_path / "m", trust_code=True)  # TINY is a user module: factory
    assert again.method_["name"] == name
    np.testing.assert_allclose(again.predict_proba(target), proba, atol=1e-5)


@pytest.mark.parametrize("name", ["dann", "cdan-e", "dan", "coral", "mcc"])
def test_trade_off_zero_leaves_the_source_cross_entropy(name, blobs_images) -> None:
    source, target = _source(blobs_images), _target(blobs_images)
    model = _model()
    m = _setup(name, model, source, target, {"trade_off": 0.0})
    model.eval()  # no batch-norm statistics of the mixed batch, no dropout: the two forwards agree exactly
    m.discriminator.eval() if hasattr(m, "discriminator") else None
    x, y = next(iter(_loader(model)(source, train=False)))
    out = m.training_step(model, (x, y))
    assert out.loss.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-5)


def test_missing_target_is_one_plain_sentence(blobs_images) -> None:
    for name in ADAPTATION:
        with pytest.raises(ConfigError, match=r"needs unlabelled target data; set `target:` in the config"):
            _setup(name, _model(), _source(blobs_images), None)
    with pytest.raises(ConfigError, match="Method 'dann' needs unlabelled target data"):
        TransferClassifier(backbone=TINY, method="dann", epochs=1, progress=False).fit(_source(blobs_images))
    text_target = Dataset("text", ["a b"] * 4, None, CLASSES)
    with pytest.raises(DataError, match="same kind"):
        _setup("dann", _model(), _source(blobs_images), text_target)


def test_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="trade_off"):
        create_method("dann", {"trade_off": -1.0})
    with pytest.raises(ConfigError, match="Unknown augmentation preset"):
        create_method("self-training", {"strong_augment": "wild"})
    with pytest.raises(ConfigError, match="threshold"):
        create_method("self-training", {"threshold": 1.5})
    with pytest.raises(ConfigError, match="temperature"):
        create_method("mcc", {"temperature": 0.0})
    with pytest.raises(ConfigError, match=r"method_params\.on'"):
        create_method("coral", {"on": "pixels"})
    with pytest.raises(ConfigError, match="Unknown config key"):
        create_method("dann", {"trade_of": 1.0})


# --- the pieces: target stream, GRL schedule, conditional map, views -----------------------------------------
def test_target_stream_orders_views_alike_restarts_per_epoch_and_handles_small_targets(blobs_images) -> None:
    x, _ = blobs_images
    ids = Dataset("image", x[:40], np.arange(40), [str(i) for i in range(40)], "ids")  # label = example id
    model = _model()
    m = _setup("self-training", model, _source(blobs_images), ids)
    m.on_epoch_start(model, 0)
    weak = [next(m.target_stream("light"))[1] for _ in range(5)]  # 2 full batches per round, then a new order
    strong = [next(m.target_stream("strong"))[1] for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(weak, strong))
    assert all(len(b) == 16 for b in weak)  # drop_last: full batches only
    assert not torch.equal(torch.cat(weak[:2]), torch.cat(weak[2:4]))  # a new round reshuffles
    m.on_epoch_start(model, 0)
    assert torch.equal(next(m.target_stream("light"))[1], weak[0])  # the epoch restarts its stream
    m.on_epoch_start(model, 1)
    assert not torch.equal(next(m.target_stream("light"))[1], weak[0])
    # a target smaller than a batch: whole (short) batches instead of none at all
    small = _setup("dann", model, _source(blobs_images), ids.subset(range(5)))
    small.on_epoch_start(model, 0)
    batches = [small.next_target("cpu") for _ in range(3)]
    assert [b.shape[0] for b in batches] == [5, 5, 5]


def test_dann_schedule_reaches_the_gradient_reversal(blobs_images) -> None:
    model = _model()
    m = _setup("dann", model, _source(blobs_images), _target(blobs_images))
    coeffs = []
    for step in (0, 50, 100):
        m.on_step_start(step, 100)
        coeffs.append(m.grl.coeff)
    assert coeffs[0] == 0.0 and 0.98 < coeffs[1] < 1.0 and coeffs[2] == pytest.approx(1.0, abs=1e-4)
    m2 = _setup("dann", model, _source(blobs_images), _target(blobs_images), {"gamma": 0.0})
    m2.on_step_start(0, 100)
    assert m2.grl.coeff == 1.0


def test_dann_gradient_reversal_opposes_discriminator_and_features(blobs_images) -> None:
    """The features get minus lambda times the gradient the discriminator's loss would give them."""
    model = _model()
    m = _setup("dann", model, _source(blobs_images), _target(blobs_images), {"dropout": 0.0})
    m.grl.coeff = 0.5
    f = torch.randn(8, 16, requires_grad=True)
    d_s, d_t = m.discriminate(f[:4], f[4:])
    from transferkit.adaptation.losses import domain_adversarial_loss

    domain_adversarial_loss(d_s, d_t).backward()
    reversed_grad = f.grad.clone()
    f.grad = None
    d = m.discriminator(f)
    domain_adversarial_loss(d[:4], d[4:]).backward()
    assert torch.allclose(reversed_grad, -0.5 * f.grad, atol=1e-6)


def test_cdan_uses_the_full_map_when_small_and_the_randomized_map_when_large(blobs_images) -> None:
    model = _model()  # 16-d features, 3 classes: C * d = 48
    full = _setup("cdan", model, _source(blobs_images), _target(blobs_images))
    assert full.random_map is None and full.discriminator.net[0].in_features == 48
    rnd = _setup("cdan", model, _source(blobs_images), _target(blobs_images),
                 {"randomized_threshold": 10, "randomized_dim": 64})
    assert rnd.random_map is not None and rnd.discriminator.net[0].in_features == 64
    assert {"random_map.r_f", "random_map.r_g"} <= set(rnd.state_dict())
    forced = _setup("cdan", model, _source(blobs_images), _target(blobs_images), {"randomized": False,
                                                                                  "randomized_threshold": 10})
    assert forced.random_map is None
    assert get_method_class("cdan-e")().params.entropy and not get_method_class("cdan")().params.entropy


def test_text_batches_take_two_forward_passes() -> None:
    """Dict (text) batches cannot be concatenated: DANN runs them through the model one domain at a time."""
    from transformers import BertConfig

    from transferkit.backbones.hf_backbone import HFBackbone, config_to_dict

    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32)
    torch.manual_seed(0)
    model = TransferModel(HFBackbone("tiny-bert", pretrained=False, config=config_to_dict(cfg)), ["neg", "pos"])

    def batch(seed: int, length: int):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, 50, (8, length), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.full((8,), -1)

    def loader(ds, *, train, epoch=0, batch_size=None, drop_last=False, augment=None):
        return [batch(epoch, 10)]

    texts = Dataset("text", ["x"] * 8, np.arange(8) % 2, ["neg", "pos"])
    for name in ("dann", "self-training"):
        m = create_method(name, {})
        m.setup(FitContext(model, texts, ModelConfig(), TrainConfig(batch_size=8), loader,
                           extra={"target": texts.unlabelled()}))
        m.train_mode(model)
        x_s, y_s = batch(99, 6)
        out = m.training_step(model, (x_s, y_s % 2))
        assert out.logits.shape == (8, 2) and torch.isfinite(out.loss)
        out.loss.backward()


# --- resume: the discriminator and the target stream survive a restart --------------------------------------
def test_dann_resumed_run_matches_an_uninterrupted_one(blobs_images, tmp_path: Path) -> None:
    source, target = _source(blobs_images), _target(blobs_images)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, progress=False, device="cpu", augment="light")

    def run(checkpoint_dir=None, resume=False, stop_after=None):
        model = _model()
        method = create_method("dann", {})

        def on_epoch_end(row):
            if stop_after is not None and row["epoch"] > stop_after:
                raise KeyboardInterrupt  # killed after the checkpoint of epoch `stop_after` was written

        result = fit_loop(model, method, source, None, ModelConfig(), cfg, checkpoint_dir=checkpoint_dir,
                          resume=resume, extra={"target": target}, on_epoch_end=on_epoch_end)
        return result, method

    ref, ref_method = run()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, stop_after=1)
    resumed, method = run(tmp_path, resume=True)
    assert resumed.history == ref.history
    assert all(torch.equal(resumed.best_state[k], ref.best_state[k]) for k in ref.best_state)
    assert all(torch.equal(a, b) for a, b in zip(method.state_dict().values(), ref_method.state_dict().values()))


# --- the baselines --------------------------------------------------------------------------------------------
def test_source_only_is_the_plain_cross_entropy_and_ignores_the_target(blobs_images) -> None:
    model = _model()
    m = _setup("source-only", model, _source(blobs_images), None)  # no target needed
    model.eval()
    x, y = next(iter(_loader(model)(_source(blobs_images), train=False)))
    assert m.training_step(model, (x, y)).loss.item() == pytest.approx(F.cross_entropy(model(x), y).item())
    assert "target_oracle" not in m.needs


def test_target_oracle_trains_on_the_labelled_target_split(blobs_images) -> None:
    assert "target_oracle" in get_method_class("target-oracle").needs
    source = _source(blobs_images)
    x, y = blobs_images
    relabelled = Dataset("image", x, (y + 1) % 3, CLASSES, "oracle")  # the target's labels disagree with the source
    with pytest.raises(ConfigError, match="'target-oracle' trains on the labelled target training split"):
        oracle = create_method("target-oracle", {})
        oracle.training_data(FitContext(_model(), source, ModelConfig(), TrainConfig(), None, extra={}))
    with pytest.raises(DataError, match="no labels"):
        oracle.training_data(FitContext(_model(), source, ModelConfig(), TrainConfig(), None,
                                        extra={"target_oracle": relabelled.unlabelled()}))
    clf = TransferClassifier(backbone=TINY, method="target-oracle", epochs=6, batch_size=16, lr=1e-2, progress=False)
    clf.fit(source, target=relabelled)
    pred = clf.predict_proba(source).argmax(1)
    assert (pred == relabelled.labels).mean() > 0.9  # it learned the oracle's labels, not the source's


# --- real data (slow): MNIST -> MNIST-M-style -----------------------------------------------------------------
# One source-only digits-cnn (2 epochs on the 3,500 MNIST training digits) is the shared starting point; each method
# then takes the same 100 steps (batch 32, AdamW at a constant 1e-3, seed 1) from it, source-only included, and is
# scored on the 1,000 MNIST-M test images (target accuracy) and on held-out features of 500 images per domain.
# Measured on seeds 0-2 (see the module docstring of the method for what each term does):
#   source-only 51.0 / 54.1 / 56.5, dan 57.0 / 59.7 / 60.4, self-training 62.1 / 56.4 / 61.4 (target accuracy, %).
# DANN and CDAN need several hundred steps before their adversarial game pays off in full on this pair (at 10 epochs
# they gain 20+ points; BENCHMARKS.md). After 100 steps, one seed says little: measured on seeds 1-4 (AMD EPYC with
# AVX-512, 2 threads), target accuracy source-only 51.1 / 48.8 / 53.5 / 50.8, DANN 58.4 / 48.7 / 54.8 / 59.0, CDAN
# 58.2 / 54.3 / 57.9 / 54.0; the proxy A-distance of the 768-d features (near its ceiling of 2: a linear classifier
# on 768 dimensions tells almost any two image sets apart) moved by -0.11 to +0.04 and not always down; that of the
# logits, what the classifier reads, source-only 1.65 / 1.64 / 1.62 / 1.61, DANN 1.36 / 1.38 / 1.21 / 1.39. So the
# adversarial test claims the mean over seeds 1-3 of what held on every seed: DANN makes held-out target logits
# harder to tell from source logits, CDAN (conditioned on the predictions) lifts target accuracy.
ADAPT_STEPS, ADAPT_BATCH = 100, 32


@pytest.fixture(scope="module")
def digits():
    from transferkit.backbones import build_backbone
    from transferkit.config import DataConfig
    from transferkit.data import load_data
    from transferkit.train.seeding import seed_everything

    src, tgt = load_data(DataConfig(name="mnist")), load_data(DataConfig(name="mnist-m"))
    seed_everything(0)
    model = TransferModel(build_backbone("digits-cnn"), src.classes)
    fit_loop(model, create_method("source-only"), src.train, None, ModelConfig(backbone="digits-cnn"),
             TrainConfig(epochs=2, batch_size=64, lr=1e-3, head_lr_scale=1.0, seed=0, progress=False, device="cpu"))
    return {"src": src, "tgt": tgt, "pretrained": model, "runs": {}}


def _adapted(digits, name: str, params: dict | None = None, seed: int = 1) -> dict:
    """Target accuracy, held-out features and logits after ADAPT_STEPS steps of ``name`` (training seed ``seed``)
    from the shared source model."""
    import copy

    key = (name, repr(sorted((params or {}).items())), seed)
    if key not in digits["runs"]:
        model = copy.deepcopy(digits["pretrained"])
        src, tgt = digits["src"], digits["tgt"]
        n = ADAPT_STEPS * ADAPT_BATCH
        cfg = TrainConfig(epochs=1, batch_size=ADAPT_BATCH, lr=1e-3, head_lr_scale=1.0, schedule="constant",
                          warmup_fraction=0.0, seed=seed, progress=False, device="cpu")
        fit_loop(model, create_method(name, params or {}), src.train.subset(range(len(src.train) - n, len(src.train))),
                 None, ModelConfig(backbone="digits-cnn"), cfg, extra={"target": tgt.train.unlabelled()})
        model.eval()

        def run(ds):
            x, _ = next(iter(make_loader(ds, model.preprocessing, image_size=28, train=False, batch_size=len(ds))))
            with torch.no_grad():
                f = model.backbone(x)
                return f, model.head(f)

        f_s, z_s = run(src.test.subset(range(500)))
        f_t, z_t = run(tgt.test)
        acc = float((z_t.argmax(1).numpy() == tgt.test.labels).mean())
        digits["runs"][key] = {"acc": acc, "f_s": f_s, "f_t": f_t[:500], "z_s": z_s, "z_t": z_t[:500]}
    return digits["runs"][key]


#: The least median gain (target accuracy, paired by seed) each method must show over source-only; see below.
MIN_MEDIAN_GAIN = {"dan": 0.02, "self-training": 0.0}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dan", "self-training"])
def test_adaptation_beats_source_only_on_mnist_m(digits, name) -> None:
    """The median over training seeds 1-5 of the paired gain (method minus source-only, same seed) is above
    ``MIN_MEDIAN_GAIN``.

    Measured with this budget (Intel Xeon with AVX-512 and AMX), gain in points per seed. One torch thread, seeds 1-7:
    DAN 6.5 / 6.7 / 7.6 / 6.9 / 6.5 / 6.6 / 6.8 (mean 6.8, min 6.5); self-training 5.8 / 4.6 / 2.2 / 7.0 / -11.3 / 4.1
    / 11.0 (mean 3.3, min -11.3, max 11.0; median of each five consecutive seeds 4.1-4.6). Two threads (the test's
    default here), seeds 1-5: self-training 7.8 / 5.6 / -1.0 / 1.6 / -8.8 (median 1.6). So DAN keeps its 2-point bar
    with a wide margin, while self-training after 100 steps swings by ten points with the seed and the float kernels
    (on some seeds its pseudo-labels collapse: 43.2 % on seed 5), and one seed at +2 (seed 1 gave +2.3 on the AMD EPYC)
    says little: it must gain on the median of five, which tolerates two collapses. Most of that gain is batch-norm
    seeing the target batches: with ``trade_off: 0`` (the pseudo-label term off) it scored 1.6-13.9 points higher on
    each of seeds 1-7 (one thread), so this test does not claim that the pseudo-labels help at this budget.
    """
    seeds = (1, 2, 3, 4, 5)
    gains = [_adapted(digits, name, seed=s)["acc"] - _adapted(digits, "source-only", seed=s)["acc"] for s in seeds]
    assert float(np.median(gains)) > MIN_MEDIAN_GAIN[name], (name, gains)


@pytest.mark.slow
def test_each_alignment_shrinks_its_own_distance_on_held_out_mnist_m(digits) -> None:
    """DAN lowers the MMD, CORAL the covariance gap, MCC the class confusion, on images none of them trained on."""
    from transferkit.adaptation.losses import coral_loss, mcc_loss, mk_mmd

    base = _adapted(digits, "source-only")
    dan, coral = _adapted(digits, "dan"), _adapted(digits, "coral", {"trade_off": 50.0})
    mcc = _adapted(digits, "mcc", {"trade_off": 0.1})
    assert mk_mmd(dan["f_s"], dan["f_t"]) < 0.3 * mk_mmd(base["f_s"], base["f_t"])
    assert coral_loss(coral["f_s"], coral["f_t"]) < 0.3 * coral_loss(base["f_s"], base["f_t"])
    assert mcc_loss(mcc["z_t"]) < mcc_loss(base["z_t"]) - 0.01


@pytest.mark.slow
def test_adversarial_methods_at_a_ci_budget(digits) -> None:
    """DANN: held-out target logits become harder to tell from source logits (proxy A-distance); CDAN: higher target
    accuracy. Means over training seeds 1-3 from the same source model (see the measurements above)."""
    from transferkit.adaptation.divergence import a_distance

    seeds = (1, 2, 3)

    def mean(name: str, what) -> float:
        return float(np.mean([what(_adapted(digits, name, seed=s)) for s in seeds]))

    def logit_distance(run: dict) -> float:
        return a_distance(run["z_s"].numpy(), run["z_t"].numpy())

    def accuracy(run: dict) -> float:
        return run["acc"]

    d_base, d_dann = mean("source-only", logit_distance), mean("dann", logit_distance)
    assert d_dann < d_base - 0.15, (d_dann, d_base)
    acc_base, acc_cdan = mean("source-only", accuracy), mean("cdan", accuracy)
    assert acc_cdan > acc_base + 0.02, (acc_cdan, acc_base)
