"""Tests for the small random-init backbones: ``digits-cnn`` and ``mlp:<in>-<h>...``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit import TransferClassifier
from transferkit.backbones import build_backbone, build_from_spec, check_blocks, list_backbones
from transferkit.backbones.small_nets import DIGITS_CNN_DIM, parse_mlp_name
from transferkit.data import load_builtin
from transferkit.errors import BackboneError

# ---------------------------------------------------------------------------------------------------------------
# digits-cnn
# ---------------------------------------------------------------------------------------------------------------


def test_digits_cnn_is_the_dann_feature_extractor() -> None:
    bb = build_backbone("digits-cnn")
    assert bb.feature_dim == DIGITS_CNN_DIM == 768
    pre = bb.preprocessing
    assert pre.modality == "image" and pre.image_size == 28 and pre.mean == (0.5,) * 3 and pre.std == (0.5,) * 3
    convs = [m for m in bb.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 32, (5, 5)), (32, 48, (5, 5))]
    blocks = bb.blocks()
    assert len(blocks) == 2
    check_blocks(bb, blocks)
    bb.eval()
    with torch.no_grad():
        assert bb(torch.randn(4, 3, 28, 28)).shape == (4, 768)
        assert bb(torch.randn(2, 3, 32, 32)).shape == (2, 768)  # the adaptive pool keeps 768-d at other sizes
        # at 28 px the features are exactly the second stage's 48x4x4 map, flattened
        x = torch.randn(3, 3, 28, 28)
        np.testing.assert_allclose(bb(x).numpy(), bb.model.stage2(bb.model.stage1(x)).flatten(1).numpy())
    with pytest.raises(BackboneError, match="at least 16x16"):
        bb(torch.randn(1, 3, 12, 12))


def test_digits_cnn_is_random_init_and_listed() -> None:
    torch.manual_seed(0)
    a = build_backbone("digits-cnn")
    torch.manual_seed(1)
    b = build_backbone("digits-cnn", pretrained=True)  # no pretrained weights exist: still a fresh random net
    assert not torch.equal(a.model.stage1[0].weight, b.model.stage1[0].weight)
    assert "digits-cnn" in list_backbones()


def test_digits_cnn_spec_rebuilds_the_architecture() -> None:
    bb = build_backbone("digits-cnn")
    spec = bb.spec()
    assert spec["catalog"] == "digits-cnn"
    again = build_from_spec(spec)
    assert again.spec() == spec
    again.load_state_dict(bb.state_dict())  # same parameter names and shapes


def test_digits_cnn_local_weights_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = build_backbone("digits-cnn")
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    bb = build_backbone("digits-cnn", weights=str(tmp_path / "w.safetensors"))
    assert torch.equal(bb.model.stage2[0].weight, src.model.stage2[0].weight)


@pytest.mark.slow
def test_digits_cnn_learns_mnist_and_saves_and_loads(tmp_path: Path) -> None:
    splits = load_builtin("mnist")
    rng = np.random.default_rng(0)
    train = splits.train.subset(rng.choice(len(splits.train), 640, replace=False))
    test = splits.test.subset(np.arange(200))
    clf = TransferClassifier(backbone="digits-cnn", image_size=28, epochs=2, lr=1e-3, batch_size=64, head="mlp",
                             head_hidden=100, progress=False)  # fmt: skip
    clf.fit(train)
    acc = clf.evaluate(test)["accuracy"]
    assert acc > 0.5  # chance is 0.1; 20 steps on 640 digits already learn most of them
    clf.save(tmp_path / "m")
    loaded = TransferClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(test), clf.predict_proba(test), atol=1e-5)
    assert loaded.model_.backbone.spec()["catalog"] == "digits-cnn"


def test_digits_cnn_takes_rgb_mnist_m() -> None:
    bb = build_backbone("digits-cnn").eval()
    from transferkit.data.loaders import make_loader

    ds = load_builtin("mnist-m").test.subset(np.arange(8))
    x, y = next(iter(make_loader(ds, bb.preprocessing, image_size=28, batch_size=8, train=False)))
    assert x.shape == (8, 3, 28, 28)
    with torch.no_grad():
        assert bb(x).shape == (8, 768)


# ---------------------------------------------------------------------------------------------------------------
# mlp:<in>-<h1>-...
# ---------------------------------------------------------------------------------------------------------------


def test_mlp_layers_features_and_blocks() -> None:
    bb = build_backbone("mlp:2-64-32")
    assert bb.feature_dim == 32 and bb.preprocessing.modality == "tabular"
    linears = [m for m in bb.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 64), (64, 32)]
    blocks = bb.blocks()
    assert len(blocks) == 2
    check_blocks(bb, blocks)
    out = bb(torch.randn(5, 2))
    assert out.shape == (5, 32) and (out >= 0).all()  # features are the last hidden layer, after its ReLU


def test_mlp_without_hidden_layers_is_the_identity() -> None:
    bb = build_backbone("mlp:3")
    x = torch.randn(4, 3)
    assert bb.feature_dim == 3 and torch.equal(bb(x), x)
    assert sum(p.numel() for p in bb.parameters()) == 0 and bb.blocks() == []


def test_mlp_wrong_input_width_says_which_name_fits() -> None:
    with pytest.raises(BackboneError, match="mlp:5-"):
        build_backbone("mlp:2-8")(torch.randn(3, 5))


@pytest.mark.parametrize("name", ["mlp:", "mlp:2-", "mlp:2-x", "mlp:0-4", "mlp:2--3", "mlp:-2", "mlp:2.5-4", "MLP:a"])
def test_malformed_mlp_names_are_one_sentence(name: str) -> None:
    with pytest.raises(BackboneError) as err:
        build_backbone(name)
    msg = str(err.value)
    assert "not a valid MLP backbone name" in msg and "mlp:2-64-64" in msg
    assert msg.replace("e.g. ", "").count(". ") == 0 and msg.endswith(".") and "\n" not in msg  # one sentence


def test_parse_mlp_name() -> None:
    assert parse_mlp_name("2-64-64") == [2, 64, 64]
    assert parse_mlp_name(" 7 ") == [7]
    with pytest.raises(BackboneError, match="too large"):
        parse_mlp_name("2" + "-4" * 40)


def test_mlp_spec_round_trip() -> None:
    bb = build_backbone("mlp:2-16-8")
    again = build_from_spec(bb.spec())
    assert again.spec() == bb.spec() and again.feature_dim == 8
    again.load_state_dict(bb.state_dict())
    x = torch.randn(6, 2)
    torch.testing.assert_close(again(x), bb(x))


@pytest.mark.parametrize("name", ["mlp:2-32-32", "mlp:2"])
def test_mlp_learns_a_skada_source_and_saves_and_loads(name: str, tmp_path: Path) -> None:
    splits = load_builtin("skada-covariate-source")
    clf = TransferClassifier(backbone=name, epochs=10, lr=5e-2, head_lr_scale=1.0, batch_size=64, progress=False)
    clf.fit(splits)
    acc = clf.evaluate(splits.test)["accuracy"]
    assert acc > 0.85  # 2-d blobs, half and half by label: chance is 0.5, sklearn LogisticRegression 0.925
    clf.save(tmp_path / "m")
    loaded = TransferClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(splits.test), clf.predict_proba(splits.test), atol=1e-6)
