"""Tests of transferkit.backbones: safe weight loading, the block/spec contract, adapters, offline behaviour.

Fast tests use tiny or random models; ``slow`` ones use the packaged MobileNetV2 and MiniLM weights. No test touches
the network: the offline variables are set, and the one test of the socket probe replaces the socket call.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from transferkit.backbones import (
    ModuleBackbone,
    Preprocessing,
    build_backbone,
    build_from_spec,
    check_blocks,
    list_backbones,
)
from transferkit.backbones import weights as W
from transferkit.backbones.module_backbone import partition_blocks
from transferkit.errors import BackboneError, WeightsError

OFFLINE_SENTENCE = "could not be downloaded offline"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERKIT_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    W.reset_probe_cache()


def _shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _assert_contract(bb: nn.Module, x: object, *, trust_code: bool = False) -> torch.Tensor:
    """Features (N, D), blocks cover every parameter once, spec is JSON and rebuilds the same architecture."""
    bb.eval()
    with torch.no_grad():
        f = bb(x)
    assert f.ndim == 2 and f.shape[1] == bb.feature_dim
    blocks = bb.blocks()
    check_blocks(bb, blocks)
    assert sum(p.numel() for b in blocks for p in b.parameters()) == sum(p.numel() for p in bb.parameters())
    spec = json.loads(json.dumps(bb.spec()))
    rebuilt = build_from_spec(spec, trust_code=trust_code)
    assert _shapes(rebuilt) == _shapes(bb)
    assert rebuilt.feature_dim == bb.feature_dim
    return f


# --- weights.py ------------------------------------------------------------------------------------------------
def test_load_state_dict_reads_safetensors_and_unwraps_torch_checkpoints(tmp_path: Path) -> None:
    sd = {"a.weight": torch.randn(3, 2), "a.bias": torch.zeros(3)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    got = W.load_state_dict(tmp_path / "w.safetensors")
    assert set(got) == set(sd) and torch.equal(got["a.weight"], sd["a.weight"])
    # a torch checkpoint with a wrapper key, DataParallel prefixes and non-tensor metadata
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ckpt.pth")
    got = W.load_state_dict(tmp_path / "ckpt.pth")
    assert set(got) == set(sd) and torch.equal(got["a.bias"], sd["a.bias"])
    # a safetensors file with a misleading suffix is recognised by its content
    save_file(sd, str(tmp_path / "really_safetensors.bin"))
    assert set(W.load_state_dict(tmp_path / "really_safetensors.bin")) == set(sd)


def test_missing_or_garbage_weights_file_is_a_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        W.load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(WeightsError, match="cannot be read"):
        W.load_state_dict(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(WeightsError, match="safetensors"):
        W.load_state_dict(tmp_path / "junk.safetensors")


class _Evil:
    """A pickle payload: unpickling it runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"weight": torch.zeros(2), "trap": _Evil(marker)}
    if fmt == "zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    with pytest.raises(WeightsError, match="not a plain tensor file.*convert it to safetensors"):
        W.load_state_dict(path)
    assert not marker.exists()
    if fmt == "legacy":  # the payload is live: plain unpickling does run it (so the assertion above means something)
        with open(path, "rb") as fh:
            pickle.load(fh)  # noqa: S301 - deliberate, harmless marker
        assert marker.exists()


def test_load_into_names_the_first_mismatching_tensor_and_both_shapes(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    other = nn.Sequential(nn.Linear(4, 9), nn.ReLU(), nn.Linear(9, 2))
    expected = r"'0\.weight' has shape \(9, 4\) in the file but \(8, 4\) in the model"
    with pytest.raises(WeightsError, match=expected) as e:
        W.load_into(model, other.state_dict(), what="the tiny MLP", source="x.safetensors")
    assert "tiny MLP" in str(e.value) and "x.safetensors" in str(e.value)
    sd = dict(model.state_dict())
    sd.pop("2.bias")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"lacks 1 tensors the model has \(first '2\.bias'\).*does not know"):
        W.load_into(model, sd, what="the tiny MLP")
    res = W.load_into(model, sd, strict=False)
    assert res.missing == ["2.bias"] and res.unexpected == ["extra.weight"]
    # a file saved from a wrapper (keys prefixed "model.") still loads, and really sets the values
    fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    W.load_into(fresh, {f"model.{k}": v for k, v in model.state_dict().items()})
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_weights_for_another_width_fail_with_a_sentence_naming_the_tensor(tmp_path: Path) -> None:
    import torchvision

    half = torchvision.models.mobilenet_v2(width_mult=0.5)
    save_file(half.state_dict(), str(tmp_path / "half.safetensors"))
    with pytest.raises(WeightsError, match=r"features\.0\.0\.weight' has shape \(16, 3, 3, 3\).*\(32, 3, 3, 3\)"):
        build_backbone("mobilenet_v2.imagenet", weights=str(tmp_path / "half.safetensors"))


# --- the contract on small models ------------------------------------------------------------------------------
def test_timm_random_backbone_contract_and_spec_roundtrip() -> None:
    bb = build_backbone("timm:test_resnet.r160_in1k", pretrained=False)
    f = _assert_contract(bb, torch.randn(2, 3, 64, 64))
    assert f.shape == (2, 96)
    assert [b.block_name for b in bb.blocks()] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert bb.source_head() is None and bb.source_classes() is None
    assert bb.preprocessing.image_size == 160 and bb.preprocessing.mean == (0.5, 0.5, 0.5)


def test_timm_vit_gets_a_stem_block_and_one_block_per_transformer_block() -> None:
    bb = build_backbone("timm:test_vit.r160_in1k", pretrained=False)
    _assert_contract(bb, torch.randn(1, 3, 160, 160))
    names = [b.block_name for b in bb.blocks()]
    assert names[0] == "stem" and names[1:] == [f"blocks.{i}" for i in range(len(bb.model.blocks))]
    stem = {n for n, _ in bb.blocks()[0].named_parameters()}
    assert any("pos_embed" in n for n in stem) and any("patch_embed" in n for n in stem)


def test_timm_weights_file_keeps_the_classifier_as_source_head(tmp_path: Path) -> None:
    import timm

    full = timm.create_model("test_resnet.r160_in1k", pretrained=False).eval()
    save_file(full.state_dict(), str(tmp_path / "full.safetensors"))
    bb = build_backbone("timm:test_resnet.r160_in1k", weights=str(tmp_path / "full.safetensors")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(bb.source_head()(bb(x)), full(x), atol=1e-5)
    assert not any(p.requires_grad for p in bb.source_head().parameters())
    assert "fc.weight" not in bb.state_dict() and not any(k.endswith("fc.weight") for k in bb.state_dict())
    # a feature-only file (no classifier) also loads, without a source head
    feats = {k: v for k, v in full.state_dict().items() if not k.startswith("fc.")}
    save_file(feats, str(tmp_path / "feats.safetensors"))
    bb2 = build_backbone("timm:test_resnet.r160_in1k", weights=str(tmp_path / "feats.safetensors"))
    assert bb2.source_head() is None
    assert torch.equal(bb2.model.conv1[0].weight, full.conv1[0].weight)


def test_cached_timm_weights_work_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    from transferkit.backbones import timm_backbone

    full = timm.create_model("test_resnet.r160_in1k", pretrained=False).eval()
    save_file(full.state_dict(), str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(timm_backbone, "cached_pretrained_file", lambda name: str(tmp_path / "model.safetensors"))
    bb = build_backbone("timm:test_resnet.r160_in1k").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(bb.source_head()(bb(x)), full(x), atol=1e-5)
    assert bb.source_classes() is not None and len(bb.source_classes()) == 1000


def test_torchvision_cuts_the_last_linear_and_keeps_it(tmp_path: Path) -> None:
    import torchvision

    full = torchvision.models.resnet18().eval()
    torch.save(full.state_dict(), tmp_path / "r18.pth")
    bb = build_backbone("tv:resnet18", weights=str(tmp_path / "r18.pth")).eval()
    x = torch.randn(2, 3, 64, 64)
    f = _assert_contract(bb, x)
    assert f.shape == (2, 512)
    with torch.no_grad():
        assert torch.allclose(bb.source_head()(f), full(x), atol=1e-5)
    assert [b.block_name for b in bb.blocks()] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    # the off-tree source head follows dtype/device moves of the backbone
    bb.double()
    assert bb.source_head().weight.dtype == torch.float64


def test_cached_torchvision_weights_work_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision
    from torchvision.models import MobileNet_V3_Small_Weights

    full = torchvision.models.mobilenet_v3_small().eval()
    url = MobileNet_V3_Small_Weights.DEFAULT.url
    (tmp_path / "checkpoints").mkdir()
    torch.save(full.state_dict(), tmp_path / "checkpoints" / os.path.basename(url))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    bb = build_backbone("torchvision:mobilenet_v3_small").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(bb.source_head()(bb(x)), full(x), atol=1e-5)
    assert bb.feature_dim == 1024 and bb.source_classes()[285] == "Egyptian cat"


def test_mobilenet_v2_random_has_seven_stage_blocks_and_no_source_head() -> None:
    bb = build_backbone("mobilenet_v2.random")
    f = _assert_contract(bb, torch.randn(1, 3, 64, 64))
    assert f.shape == (1, 1280) and len(bb.blocks()) == 7
    assert bb.source_head() is None
    assert bb.spec()["catalog"] == "mobilenet_v2.random"
    assert build_backbone("mobilenet_v2.imagenet", pretrained=False).source_head() is None


def test_blocks_stay_complete_after_module_surgery() -> None:
    bb = build_backbone("timm:test_resnet.r160_in1k", pretrained=False)
    conv = bb.model.layer4[0].conv1
    bb.model.layer4[0].conv1 = nn.Sequential(conv, nn.Conv2d(conv.out_channels, conv.out_channels, 1))  # an adapter
    check_blocks(bb, bb.blocks())
    with torch.no_grad():
        bb.eval()(torch.randn(1, 3, 64, 64))


def test_blocks_hold_real_submodules_so_eval_reaches_batchnorm() -> None:
    bb = build_backbone("timm:test_resnet.r160_in1k", pretrained=False).train()
    first = bb.blocks()[0]
    first.eval()
    assert bb.model.bn1.training is False and bb.model.layer4.training is True


def _tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    return folder


def test_hf_local_folder_mean_pooling_ignores_padding_and_rebuilds_from_config(tmp_path: Path) -> None:
    folder = _tiny_bert(tmp_path / "bert")
    bb = build_backbone(f"hf:{folder}").eval()
    ids = torch.tensor([[2, 5, 7, 3, 0, 0], [2, 9, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    f = _assert_contract(bb, {"input_ids": ids, "attention_mask": mask})
    assert f.shape == (2, 16)
    with torch.no_grad():  # the padded positions do not change the mean
        alone = bb({"input_ids": ids[:1, :4], "attention_mask": mask[:1, :4]})
    assert torch.allclose(alone, f[:1], atol=1e-5)
    assert bb.model.pooler is None  # never used by mean pooling: would get no gradient
    assert [b.block_name for b in bb.blocks()] == ["stem", "encoder.layer.0", "encoder.layer.1"]
    assert bb.preprocessing.modality == "text" and bb.preprocessing.tokenizer == str(folder.resolve())
    spec = bb.spec()
    assert spec["config"]["hidden_size"] == 16
    # the spec alone rebuilds it, even after the folder is gone
    import shutil

    shutil.rmtree(folder)
    assert _shapes(build_from_spec(spec)) == _shapes(bb)


def test_hf_cls_pooling_differs_from_mean(tmp_path: Path) -> None:
    from transferkit.backbones.hf_backbone import HFBackbone

    folder = _tiny_bert(tmp_path / "bert")
    ids = {"input_ids": torch.tensor([[2, 5, 7, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        cls = HFBackbone(str(folder), pooling="cls").eval()(ids)
        mean = HFBackbone(str(folder)).eval()(ids)
    assert cls.shape == mean.shape and not torch.allclose(cls, mean)


def test_module_backbone_default_blocks_weights_and_spec(tmp_path: Path) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))  # a root parameter: must still land in a block
            self.a = nn.Linear(3, 5)
            self.b = nn.Sequential(nn.ReLU(), nn.Linear(5, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x * self.scale))

    src = Net()
    save_file(src.state_dict(), str(tmp_path / "net.safetensors"))
    pre = Preprocessing("tabular")
    bb = ModuleBackbone(Net(), 4, pre, weights=str(tmp_path / "net.safetensors"))
    assert torch.equal(bb.model.a.weight, src.a.weight)
    assert len(bb.blocks()) == 2
    check_blocks(bb, bb.blocks())
    assert bb(torch.randn(2, 3)).shape == (2, 4)
    with pytest.raises(BackboneError, match="Cannot rebuild the user module"):  # a local class cannot be imported
        build_from_spec(json.loads(json.dumps(bb.spec())), trust_code=True)
    kwargs = {"in_features": 3, "out_features": 2}
    lin = ModuleBackbone(nn.Linear(3, 2), 2, pre, factory="torch.nn:Linear", factory_kwargs=kwargs)
    _assert_contract(lin, torch.randn(4, 3), trust_code=True)  # torch.nn:Linear is not a built-in factory
    with pytest.raises(BackboneError, match="not a submodule"):
        ModuleBackbone(Net(), 4, pre, blocks=[nn.Linear(1, 1)])


def test_partition_assigns_glue_and_trailing_parameters() -> None:
    layers = [nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2))]
    net = nn.Sequential(*layers, nn.LayerNorm(2))
    blocks = partition_blocks(net, ["1", "3"], separate_stem=True)
    assert [b.block_name for b in blocks] == ["stem", "1", "3"]
    assert [b.member_paths for b in blocks] == [["0"], ["1"], ["2", "3", "4"]]  # glue joins the next, tail the last
    check_blocks(net, blocks)
    assert len(partition_blocks(net, ["1", "3"], separate_stem=False)) == 2


# --- names and offline ------------------------------------------------------------------------------------------
def test_unknown_name_suggests_the_closest_and_lists_prefixes() -> None:
    with pytest.raises(BackboneError, match="did you mean 'mobilenet_v2.imagenet'") as e:
        build_backbone("mobilenet_v2.imagnet")
    assert all(p in str(e.value) for p in ("timm:", "torchvision:", "hf:"))
    with pytest.raises(BackboneError, match="did you mean 'timm:resnet18'"):
        build_backbone("timm:resnt18", pretrained=False)
    with pytest.raises(BackboneError, match="did you mean 'torchvision:resnet18'"):
        build_backbone("tv:resnet81", pretrained=False)
    names = list_backbones()
    assert {"mobilenet_v2.imagenet", "mobilenet_v2.random", "minilm-l6"} <= set(names)
    assert any(k.startswith("timm:") for k in names) and any(k.startswith("hf:") for k in names)


def _refuse_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Refuse, and record, every name look-up and connection from now on.

    An offline failure is fast when nothing waits on the network; asserting that nothing tried is the same guard
    as a wall-clock bound without depending on how busy the machine is.
    """
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[-1] if args else kwargs)
        raise OSError("the test refuses network access")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("timm:resnet50.a1_in1k", "weights: path/to/file.safetensors"),
        ("torchvision:resnet50", "weights: path/to/file.safetensors"),
        ("hf:sentence-transformers/not-a-cached-model", "hf:/path/to/folder"),
    ],
)
def test_offline_hub_name_fails_fast_with_a_sentence(name: str, hint: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty torch cache
    network = _refuse_network(monkeypatch)
    with pytest.raises(BackboneError, match=OFFLINE_SENTENCE) as e:
        build_backbone(name)
    assert network == []  # it failed without waiting on the network: no name looked up, no connection tried
    assert hint in str(e.value) and name in str(e.value)


def test_failed_socket_probe_means_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in W.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    calls = []

    def refuse(address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        calls.append(address)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    W.reset_probe_cache()
    assert "cannot reach" in (W.offline_reason("download.pytorch.org") or "")
    assert calls == [("download.pytorch.org", 443)]
    network = _refuse_network(monkeypatch)
    with pytest.raises(BackboneError, match=OFFLINE_SENTENCE):
        build_backbone("tv:resnet18")
    assert network == []  # the failed probe is remembered: no second probe, no download tried
    monkeypatch.setenv("TRANSFERKIT_OFFLINE", "1")
    assert "TRANSFERKIT_OFFLINE" in (W.offline_reason("huggingface.co") or "")


def test_network_error_detection() -> None:
    import urllib.error

    assert W.is_network_error(urllib.error.URLError("no route"))
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("download failed") from inner
    except RuntimeError as outer:
        assert W.is_network_error(outer)
    assert not W.is_network_error(ValueError("bad shape"))


# --- slow: the real packaged weights --------------------------------------------------------------------------
def _imagenet_input(img, pre: Preprocessing) -> torch.Tensor:  # noqa: ANN001 - a uint8 HxWx3 array
    import torch.nn.functional as F

    x = torch.tensor(img).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=pre.image_size, mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(pre.mean)[:, None, None]
    std = torch.tensor(pre.std)[:, None, None]
    return (x - mean) / std


@pytest.mark.slow
def test_mobilenet_v2_imagenet_recognises_a_cat() -> None:
    bb = build_backbone("mobilenet_v2.imagenet").eval()
    assert bb.feature_dim == 1280 and len(bb.source_classes()) == 1000
    try:
        from skimage import data

        x = _imagenet_input(data.chelsea(), bb.preprocessing)
        with torch.no_grad():
            logits = bb.source_head()(bb(x))
        assert int(logits.argmax()) == 285 and bb.source_classes()[285] == "Egyptian cat"
    except ImportError:  # no scikit-image: a scikit-learn photo of a Chinese temple instead
        from sklearn.datasets import load_sample_images

        x = _imagenet_input(load_sample_images().images[0], bb.preprocessing)
        with torch.no_grad():
            top5 = bb.source_head()(bb(x)).topk(5).indices[0].tolist()
        assert {663, 698} & set(top5)  # monastery / palace
    random = build_backbone("mobilenet_v2.random").eval()
    with torch.no_grad():
        assert not torch.allclose(random(x), bb(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2.imagenet", "minilm-l6"])
def test_catalog_backbones_satisfy_the_contract(name: str) -> None:
    bb = build_backbone(name)
    if name == "minilm-l6":
        x: object = {"input_ids": torch.tensor([[101, 7592, 2088, 102]]), "attention_mask": torch.ones(1, 4).long()}
    else:
        x = torch.randn(1, 3, 96, 96)
    _assert_contract(bb, x)
    assert bb.spec()["catalog"] == name
    assert len(bb.blocks()) == 7


@pytest.mark.slow
def test_minilm_embeds_paraphrases_closer_than_unrelated_sentences() -> None:
    from transformers import AutoTokenizer

    bb = build_backbone("minilm-l6").eval()
    assert bb.feature_dim == 384 and bb.preprocessing.max_length == 128
    tok = AutoTokenizer.from_pretrained(bb.preprocessing.tokenizer)
    sents = ["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply today."]
    enc = tok(sents, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        f = torch.nn.functional.normalize(bb(dict(enc)), dim=1)
    assert f.shape == (3, 384)
    sim = f @ f.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3
    try:  # the same embedding as sentence-transformers itself (which L2-normalises at the end)
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return
    ref = torch.tensor(SentenceTransformer(bb.preprocessing.tokenizer, device="cpu").encode(sents))
    assert torch.allclose(f, ref, atol=1e-5)


def test_bow_hash_counts_word_pieces_ignores_padding_and_rebuilds_from_spec() -> None:
    from transferkit.backbones import build_from_spec
    from transferkit.data.loaders import load_tokenizer

    bb = build_backbone("bow-hash")
    assert bb.feature_dim == 4096 and bb.preprocessing.modality == "text"
    assert not list(bb.parameters())  # a fixed featuriser: nothing to train
    tok = load_tokenizer(bb.preprocessing.tokenizer)
    texts = ["a great great film", "a great great film", "a dull and tedious mess"]
    short = tok(texts, padding=True, return_tensors="pt")
    long = tok(texts, padding="max_length", max_length=40, return_tensors="pt")
    f, f_padded = bb(dict(short)), bb(dict(long))
    assert torch.allclose(f, f_padded)  # padding does not count
    assert torch.allclose(f.norm(dim=1), torch.ones(3))
    assert torch.equal(f[0], f[1]) and (f[0] - f[2]).abs().sum() > 0.5
    # "great" appears twice: its bucket holds log(1 + 2) before normalisation, larger than a single word's log(2)
    great = tok.convert_tokens_to_ids("great")
    film = tok.convert_tokens_to_ids("film")
    b = bb.buckets.bucket
    assert f[0, b[great]] > f[0, b[film]] > 0
    rebuilt = build_from_spec(bb.spec())
    assert torch.equal(rebuilt(dict(short)), f)
