"""The frozen-feature core: cache keys and atomicity, taps and fusion, ONNX engines and parity, save/load, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.tiny import TinyConvBackbone
from transferkit.backbones import FusedBackbone, TapBackbone, build_backbone, build_from_spec, feature_backbone
from transferkit.backbones.base import Backbone, Preprocessing
from transferkit.cli import main as cli_main
from transferkit.data.base import Dataset
from transferkit.errors import BackboneError, ConfigError, DataError
from transferkit.features import (
    FeatureCache,
    default_cache,
    extract_features,
    feature_key,
    onnx_export,
)
from transferkit.features import engines as engines_mod
from transferkit.model import TransferModel, load_model, save_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache root through the environment variable."""
    root = tmp_path / "cache"
    monkeypatch.setenv("TRANSFERKIT_CACHE_DIR", str(root))
    monkeypatch.setattr(engines_mod, "_WARNED", set())  # each test sees its own once-only warnings
    return root


def tiny(seed: int = 0) -> TinyConvBackbone:
    torch.manual_seed(seed)
    return TinyConvBackbone().eval()


def images(n: int = 24, seed: int = 0, size: int = 16) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    return Dataset("image", x, np.arange(n) % 3, ["a", "b", "c"], name="noise")


class Counter:
    """Counts forward calls of a module (what a cache hit must not make)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1


# ---------------------------------------------------------------------------------------------------------------
# Cache: hits, invalidation by each key part
# ---------------------------------------------------------------------------------------------------------------


def test_second_extraction_reads_the_cache_without_any_forward_pass() -> None:
    bb, data = tiny(), images()
    count = Counter(bb)
    first = extract_features(bb, data, engine="torch", batch_size=8)
    assert count.calls == 3 and first.shape == (24, 16) and first.dtype == np.float32
    second = extract_features(bb, data, engine="torch", batch_size=8)
    assert count.calls == 3  # nothing recomputed
    assert isinstance(second, np.memmap) and not second.flags.writeable
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(second, extract_features(bb, data, engine="torch", cache=False), atol=1e-6)
    assert len(default_cache().entries()) == 1


def _perturb_weights(bb: TinyConvBackbone) -> None:
    with torch.no_grad():
        bb.b2[0].weight.add_(0.05)


class RenamedTiny(TinyConvBackbone):
    """The same network and weights under another spec: a different backbone to the cache."""

    def spec(self) -> dict:
        return {"kind": "tiny-test", "variant": 2}


@pytest.mark.parametrize("part", ["weights", "backbone", "preprocessing", "image_size", "data", "layers", "pooling"])
def test_changing_any_key_part_recomputes(part: str) -> None:
    bb, data = tiny(), images()
    base: Backbone = TapBackbone(bb, [1], "avg") if part in ("layers", "pooling") else bb
    extract_features(base, data, engine="torch")
    size = None
    changed: Backbone = base
    if part == "weights":
        _perturb_weights(bb)
    elif part == "backbone":
        changed = RenamedTiny()
        changed.load_state_dict(bb.state_dict())
        changed.eval()
    elif part == "preprocessing":
        bb.preprocessing = Preprocessing("image", image_size=16, mean=(0.4, 0.4, 0.4), std=(0.5, 0.5, 0.5))
    elif part == "image_size":
        size = 24
    elif part == "data":
        data.inputs = data.inputs.copy()
        data.inputs[0, 0, 0] ^= 1
    elif part == "layers":
        changed = TapBackbone(bb, [2], "avg")
    elif part == "pooling":
        changed = TapBackbone(bb, [1], "max")
    count = Counter(changed)
    extract_features(changed, data, engine="torch", image_size=size)
    assert count.calls > 0, f"changing {part} must recompute"
    assert len(default_cache().entries()) == 2
    calls = count.calls
    extract_features(changed, data, engine="torch", image_size=size)  # and the new entry is then a hit
    assert count.calls == calls


def test_relabelled_data_reuses_the_features() -> None:
    bb, data = tiny(), images()
    extract_features(bb, data, engine="torch")
    relabelled = Dataset("image", data.inputs, (data.labels + 1) % 3, ["x", "y", "z"], name="other labels")
    count = Counter(bb)
    extract_features(bb, relabelled, engine="torch")
    assert count.calls == 0
    assert feature_key(bb, data, None) == feature_key(bb, relabelled, None)
    assert data.fingerprint() != relabelled.fingerprint()  # the full fingerprint still sees the labels


def test_key_parts_name_everything_features_depend_on() -> None:
    bb = TapBackbone(tiny(), [0, -1], "max")
    parts = feature_key(bb, images(), 20)
    assert parts["backbone"] == {"type": "tap", "backbone": {"kind": "tiny-test"}, "layers": [0, -1], "pooling": "max"}
    assert parts["image_size"] == 20 and parts["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert len(parts["weights"]) == 64 and len(parts["data"]) == 64
    cache = FeatureCache()
    assert cache.key(parts) == cache.key(json.loads(json.dumps(parts)))  # canonical: order and types do not matter


def test_frozen_batches_are_the_loaders_batches() -> None:
    from transferkit.data.loaders import make_loader
    from transferkit.features.batches import frozen_batches

    bb = tiny()
    for data in (images(21), Dataset("image", np.random.default_rng(1).integers(0, 256, (21, 12, 12, 3), np.uint8),
                                     None, [], name="rgb")):
        want = [x for x, _ in make_loader(data, bb.preprocessing, image_size=20, train=False, batch_size=8)]
        got = [x.clone() for x in frozen_batches(data, bb.preprocessing, image_size=20, batch_size=8, slots=2)]
        assert [tuple(g.shape) for g in got] == [(8, 3, 20, 20), (8, 3, 20, 20), (5, 3, 20, 20)]
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_the_prefetch_thread_keeps_order_and_hands_errors_over() -> None:
    from transferkit.features.extract import _Prefetch

    assert list(_Prefetch(iter(range(50)), depth=2)) == list(range(50))

    def broken():  # noqa: ANN202
        yield 1
        raise DataError("image 2 is corrupt")

    with pytest.raises(DataError, match="image 2 is corrupt"):
        list(_Prefetch(broken()))
    early = _Prefetch(iter(range(10**6)), depth=2)
    assert next(iter(early)) == 0
    early.close()  # a consumer that stops early stops the thread too
    assert not early.thread.is_alive()


# ---------------------------------------------------------------------------------------------------------------
# Cache: atomic entries, kills, concurrency
# ---------------------------------------------------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    import numpy as np, torch
    from tests.tiny import TinyConvBackbone
    from transferkit.data.base import Dataset
    from transferkit.features import extract_features

    class Slow(TinyConvBackbone):  # same spec and weights as TinyConvBackbone: the same cache key
        def forward(self, x):
            with open({marker!r}, "a") as fh:
                fh.write("batch\\n")
            time.sleep({sleep})
            return super().forward(x)

    torch.manual_seed(0)
    bb = Slow().eval()
    rng = np.random.default_rng(0)
    data = Dataset("image", rng.integers(0, 256, size=({n}, 16, 16), dtype=np.uint8), np.arange({n}) % 3,
                   ["a", "b", "c"], name="noise")
    go = {go!r}
    while go and not os.path.exists(go):
        time.sleep(0.01)
    feats = extract_features(bb, data, engine="torch", batch_size=4)
    np.save({out!r}, np.asarray(feats))
    """
)


def _worker(tmp: Path, name: str, *, n: int, sleep: float, go: str = "") -> tuple[list[str], Path, Path]:
    marker, out = tmp / f"{name}.batches", tmp / f"{name}.npy"
    script = tmp / f"{name}.py"
    script.write_text(_WORKER.format(root=str(ROOT), marker=str(marker), sleep=sleep, n=n, go=go, out=str(out)))
    return [sys.executable, str(script)], marker, out


@pytest.mark.slow
def test_a_killed_extraction_leaves_nothing_that_is_read_later(tmp_path: Path, cache_dir: Path) -> None:
    cmd, marker, out = _worker(tmp_path, "killed", n=200, sleep=0.05)
    proc = subprocess.Popen(cmd, env=os.environ.copy())
    try:
        deadline = time.time() + 60
        while not (marker.exists() and marker.read_text().count("batch") >= 5):
            assert proc.poll() is None, "the worker ended before it could be killed"
            assert time.time() < deadline, "the worker never started extracting"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    leftovers = list((cache_dir / "features").iterdir())
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)  # a partial entry, never published
    cache = default_cache()
    assert cache.entries() == []
    bb = tiny()
    data = Dataset("image", np.random.default_rng(0).integers(0, 256, size=(200, 16, 16), dtype=np.uint8),
                   np.arange(200) % 3, ["a", "b", "c"], name="noise")
    key = cache.key(feature_key(bb, data, None))
    assert cache.get(key) is None
    count = Counter(bb)
    feats = extract_features(bb, data, engine="torch", batch_size=50)
    assert count.calls == 4  # recomputed from scratch
    np.testing.assert_allclose(feats, extract_features(bb, data, engine="torch", cache=False), atol=1e-6)
    assert cache.clear() == 1  # the real entry; the orphaned temporary directory goes too
    assert list((cache_dir / "features").iterdir()) == []


@pytest.mark.slow
def test_two_processes_extracting_the_same_key_both_get_correct_features(tmp_path: Path, cache_dir: Path) -> None:
    go = tmp_path / "go"
    workers = [_worker(tmp_path, f"w{i}", n=24, sleep=0.1, go=str(go)) for i in range(2)]
    procs = [subprocess.Popen(cmd, env=os.environ.copy(), stderr=subprocess.PIPE) for cmd, _, _ in workers]
    time.sleep(0.5)
    go.write_text("go")
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    expected = extract_features(tiny(), images(24), engine="torch", cache=False)
    for _, _, out in workers:
        np.testing.assert_allclose(np.load(out), expected, atol=1e-6)
    assert len(default_cache().entries()) == 1
    assert [p.name for p in (cache_dir / "features").iterdir() if p.name.startswith(".")] == []
    computed = [marker.exists() for _, marker, _ in workers]
    assert computed.count(True) == 1  # the other waited on the key's lock and read the entry


def test_a_writer_that_loses_the_rename_race_discards_its_copy(cache_dir: Path) -> None:
    cache = default_cache()
    with cache.writing("k" * 64, (2, 3), {"who": "first"}) as arr:
        arr[:] = 1.0
    with cache.writing("k" * 64, (2, 3), {"who": "second"}) as arr:
        arr[:] = 2.0
    np.testing.assert_array_equal(cache.get("k" * 64), np.ones((2, 3), np.float32))
    assert cache.meta("k" * 64)["who"] == "first"
    assert sorted(p.name for p in (cache_dir / "features").iterdir()) == ["k" * 64]


def test_a_damaged_entry_is_recomputed(cache_dir: Path) -> None:
    bb, data = tiny(), images()
    first = np.array(extract_features(bb, data, engine="torch"))
    entry = cache_dir / "features" / default_cache().entries()[0]["key"]
    (entry / "features.npy").write_bytes(b"not an array")
    count = Counter(bb)
    again = extract_features(bb, data, engine="torch")
    assert count.calls > 0
    np.testing.assert_array_equal(again, first)


def test_an_error_while_writing_publishes_nothing(cache_dir: Path) -> None:
    cache = default_cache()
    with pytest.raises(RuntimeError), cache.writing("e" * 64, (2, 3), {}) as arr:
        arr[:] = 1.0
        raise RuntimeError("killed")
    assert cache.get("e" * 64) is None and list((cache_dir / "features").iterdir()) == []


def test_clear_keeps_the_temporary_directory_of_a_live_writer(cache_dir: Path) -> None:
    cache = default_cache()
    live = cache_dir / "features" / (".tmp-" + "a" * 64 + "-x")
    dead = cache_dir / "features" / (".tmp-" + "b" * 64 + "-y")
    live.mkdir(parents=True)
    dead.mkdir()
    with cache.lock("a" * 64):
        assert cache.clear() == 0
    assert live.exists() and not dead.exists()


# ---------------------------------------------------------------------------------------------------------------
# Taps and fusion
# ---------------------------------------------------------------------------------------------------------------


def test_tapped_layer_equals_the_hooked_block_output_pooled() -> None:
    bb = tiny()
    x = torch.randn(5, 3, 16, 16)
    seen = {}
    handle = bb.b1.register_forward_hook(lambda m, a, out: seen.update(b1=out))
    with torch.no_grad():
        bb(x)
    handle.remove()
    with torch.no_grad():
        avg = TapBackbone(bb, [1], "avg")(x)
        mx = TapBackbone(bb, [-2], "max")(x)
    torch.testing.assert_close(avg, seen["b1"].mean(dim=(2, 3)))
    torch.testing.assert_close(mx, seen["b1"].amax(dim=(2, 3)))
    with torch.no_grad():
        torch.testing.assert_close(TapBackbone(bb, [-1])(x), bb(x))  # the last block, avg-pooled, is the output


def test_text_layers_are_mask_mean_pooled() -> None:
    from transformers import BertConfig

    from transferkit.backbones.catalog import minilm_folder
    from transferkit.backbones.hf_backbone import HFBackbone, config_to_dict

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64)
    folder = str(minilm_folder())
    hf = HFBackbone(folder, pretrained=False, config=config_to_dict(cfg), tokenizer=folder).eval()
    ids = torch.randint(1000, 2000, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    mask[1, 2:] = 0
    x = {"input_ids": ids, "attention_mask": mask}
    seen = {}
    handle = hf.model.encoder.layer[0].register_forward_hook(lambda m, a, out: seen.update(h=out))
    with torch.no_grad():
        hf(x)
    handle.remove()
    with torch.no_grad():
        got = TapBackbone(hf, [1])(x)  # block 0 is the embeddings stem, block 1 the first layer
        cls = TapBackbone(hf, [1], "cls")(x)
        last = TapBackbone(hf, [-1], "mean")(x)
        own = hf(x)
    h = seen["h"][0] if isinstance(seen["h"], tuple) else seen["h"]
    m = mask.unsqueeze(-1).float()
    torch.testing.assert_close(got, (h * m).sum(1) / m.sum(1))
    torch.testing.assert_close(cls, h[:, 0])
    torch.testing.assert_close(last, own)  # the last layer mask-mean pooled is the backbone's own feature


def test_fusion_produces_the_summed_feature_size() -> None:
    a, b = tiny(0), tiny(1)
    data = images(10)
    fused = FusedBackbone([a, b])
    assert fused.feature_dim == 32
    feats = extract_features(fused, data, engine="torch", cache=False)
    assert feats.shape == (10, 32)
    np.testing.assert_allclose(feats[:, :16], extract_features(a, data, engine="torch", cache=False), atol=1e-6)
    np.testing.assert_allclose(feats[:, 16:], extract_features(b, data, engine="torch", cache=False), atol=1e-6)
    two_layers = TapBackbone(tiny(), [0, 1])
    assert two_layers.feature_dim == 8 + 16
    assert extract_features(two_layers, data, engine="torch", cache=False).shape == (10, 24)
    assert len(fused.blocks()) == 6 and fused.spec()["type"] == "fused"


def test_fusion_of_real_backbones_and_layers_sums_their_sizes() -> None:
    fused = feature_backbone("mobilenet_v2.imagenet, mobilenet_v2.random")
    assert isinstance(fused, FusedBackbone) and fused.feature_dim == 1280 + 1280
    layers = feature_backbone("mobilenet_v2.random", layers=[3, -1])
    assert isinstance(layers, TapBackbone) and layers.feature_dim == 64 + 1280
    with torch.no_grad():
        assert layers.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 1344)


def test_tap_and_fusion_refuse_bad_input() -> None:
    with pytest.raises(BackboneError, match="Layer 3 does not exist"):
        TapBackbone(tiny(), [3])
    with pytest.raises(BackboneError, match="Pooling 'median'"):
        TapBackbone(tiny(), [0], "median")
    other = tiny(1)
    other.preprocessing = Preprocessing("image", image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with pytest.raises(BackboneError, match="image_size differs"):
        FusedBackbone([tiny(0), other])
    bb = tiny()
    with pytest.raises(BackboneError, match="fused twice"):
        FusedBackbone([bb, bb])


def test_models_over_tapped_and_fused_backbones_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tapped = TapBackbone(build_backbone("module:tests.tiny:make_tiny"), [0, -1], "max")
    fused = FusedBackbone([tapped, build_backbone("module:tests.tiny:make_tiny")])
    for i, bb in enumerate([tapped, fused]):
        model = TransferModel(bb, ["a", "b", "c"]).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)  # weights the rebuilt architecture cannot have by chance
        save_model(model, tmp_path / f"m{i}")
        loaded = load_model(tmp_path / f"m{i}", trust_code=True)  # tests.tiny is a user factory
        assert loaded.backbone.spec() == bb.spec() and loaded.backbone.feature_dim == bb.feature_dim
        x = torch.randn(4, 3, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert isinstance(build_from_spec(fused.spec(), trust_code=True), FusedBackbone)


@pytest.mark.slow
def test_a_saved_model_over_a_real_tapped_backbone_predicts_the_same(tmp_path: Path) -> None:
    bb = feature_backbone("mobilenet_v2.random", layers=[2, 4], pooling="max")
    model = TransferModel(bb, ["a", "b"], image_size=64).eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Engines: ONNX export, parity, fallbacks
# ---------------------------------------------------------------------------------------------------------------


def test_onnx_engine_matches_pytorch_and_exports_once(monkeypatch: pytest.MonkeyPatch) -> None:
    exports = []
    real_export = onnx_export.export_onnx
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a: exports.append(1) or real_export(*a))
    bb = TapBackbone(tiny(), [0, 2], "max")
    for seed in (0, 1):  # two data sets: the second reuses the exported model
        data = images(20, seed=seed)
        got = extract_features(bb, data, engine="onnx", batch_size=8)
        want = extract_features(bb, data, engine="torch", cache=False)
        assert np.abs(np.asarray(got) - want).max() <= 1e-4
        assert default_cache().meta(default_cache().entries()[-1]["key"])["engine"] == "onnx"
    assert exports == [1]
    models = default_cache().models()
    assert len(models) == 1 and models[0]["exporter"] in ("dynamo", "torchscript")


def test_the_legacy_exporter_takes_over_when_the_dynamo_exporter_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real_export = torch.onnx.export

    def no_dynamo(*args: object, dynamo: bool = True, **kwargs: object) -> object:
        if dynamo:
            raise RuntimeError("onnxscript is not installed")
        return real_export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    bb, data = TapBackbone(tiny(), [1, 2]), images(10)
    got = extract_features(bb, data, engine="onnx", batch_size=4, cache=False)
    assert np.abs(got - extract_features(bb, data, engine="torch", cache=False)).max() <= 1e-4
    assert [m["exporter"] for m in default_cache().models()] == ["torchscript"]


def test_auto_falls_back_to_pytorch_when_parity_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real_call = engines_mod.OnnxEngine.__call__
    monkeypatch.setattr(engines_mod.OnnxEngine, "__call__", lambda self, b: real_call(self, b) + 1e-3)
    bb, data = tiny(), images(12)
    want = extract_features(bb, data, engine="torch", cache=False)
    with pytest.warns(RuntimeWarning, match="differ from PyTorch's"):
        got = extract_features(bb, data, engine="auto", cache=False)
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(BackboneError, match="engine 'onnx' cannot be used"):
        extract_features(bb, data, engine="onnx", cache=False)


def test_an_onnx_runtime_failure_mid_way_finishes_with_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    bb, data = tiny(), images(12)
    want = extract_features(bb, data, engine="torch", cache=False)
    bb.train()
    bb.b0[1].eval()  # a mixed train/eval state, which extraction must leave as it found it
    real_call = engines_mod.OnnxEngine.__call__
    calls = []

    def flaky(self: engines_mod.OnnxEngine, batch: torch.Tensor) -> np.ndarray:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real_call(self, batch)

    monkeypatch.setattr(engines_mod.OnnxEngine, "__call__", flaky)
    with pytest.warns(RuntimeWarning, match="continuing with PyTorch"):
        got = extract_features(bb, data, engine="auto", batch_size=4, cache=False)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert bb.training and bb.b1.training and not bb.b0[1].training
    calls.clear()
    engines_mod._SESSIONS.clear()
    default_cache().clear()  # forget the failure remembered next to the model, so ONNX is tried again
    with pytest.raises(BackboneError, match="ONNX Runtime failed on a batch"):
        extract_features(bb, data, engine="onnx", batch_size=4, cache=False)


class Eigen(Backbone):
    """A backbone no ONNX exporter can translate (``linalg.eigh``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.feature_dim = 4
        self.preprocessing = Preprocessing("image", image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.lin(x.mean(dim=(2, 3)))
        return f + torch.linalg.eigh(f.T @ f + torch.eye(4))[0]

    def blocks(self) -> list[nn.Module]:
        return [self.lin]

    def spec(self) -> dict:
        return {"kind": "eigen"}


def test_onnx_on_a_backbone_that_cannot_be_exported_is_a_clear_error() -> None:
    bb, data = Eigen().eval(), images(6, size=8)
    with pytest.raises(BackboneError, match="cannot be exported to ONNX") as err:
        extract_features(bb, data, engine="onnx", cache=False)
    assert "\n" not in str(err.value) and "engine 'torch'" in str(err.value)
    with pytest.warns(RuntimeWarning, match="instead of ONNX Runtime"):
        got = extract_features(bb, data, engine="auto", cache=False)  # auto: the remembered failure, then PyTorch
    np.testing.assert_allclose(got, extract_features(bb, data, engine="torch", cache=False), atol=1e-6)


def test_bad_engine_and_modality_are_user_errors() -> None:
    with pytest.raises(ConfigError, match="engine is 'fast'"):
        extract_features(tiny(), images(), engine="fast")
    text = Dataset("text", ["a b", "c"], None, [], name="t")
    with pytest.raises(DataError, match="holds text data but the backbone reads image"):
        extract_features(tiny(), text)


@pytest.mark.slow
def test_onnx_matches_pytorch_on_real_mobilenet_weights() -> None:
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    data = load_data(DataConfig(name="animal-mnist")).train.subset(range(12))
    bb = build_backbone("mobilenet_v2.imagenet").eval()
    onnx = extract_features(bb, data, engine="onnx", batch_size=6, cache=False)
    torch_feats = extract_features(bb, data, engine="torch", batch_size=6, cache=False)
    assert onnx.shape == (12, 1280) and float(np.abs(torch_feats).max()) > 0.1
    assert float(np.abs(onnx - torch_feats).max()) <= 1e-4


@pytest.mark.slow
def test_text_backbone_runs_in_onnx_runtime_with_parity() -> None:
    texts = ["a fine film", "dull and far too long, with a plot nobody could follow", "great", "not good at all"]
    data = Dataset("text", texts * 3, None, [], name="reviews")
    bb = build_backbone("minilm-l6").eval()
    onnx = extract_features(bb, data, engine="onnx", batch_size=5, cache=False)  # batches of different lengths
    torch_feats = extract_features(bb, data, engine="torch", batch_size=5, cache=False)
    assert onnx.shape == (12, 384)
    assert float(np.abs(onnx - torch_feats).max()) <= 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_uses_pytorch_on_the_gpu() -> None:
    bb, data = tiny(), images(16)
    got = extract_features(bb, data, engine="auto", cache=False)
    assert default_cache().models() == []  # no ONNX export on a GPU machine
    want = TinyConvBackbone.forward(bb, _batch(bb, data)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)  # cuDNN may use TF32 for float32 convolutions
    assert next(bb.parameters()).device.type == "cpu"  # moved back where it was


def _batch(bb: Backbone, data: Dataset) -> torch.Tensor:
    from transferkit.data.loaders import make_loader

    return torch.cat([x for x, _ in make_loader(data, bb.preprocessing, image_size=None, train=False,
                                                 batch_size=64)])


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def test_cache_list_and_clear_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["cache", "list"]) == 0
    assert "(empty)" in capsys.readouterr().out
    extract_features(TapBackbone(tiny(), [0, 1]), images(), engine="torch")
    assert cli_main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    key = default_cache().entries()[0]["key"]
    assert key[:12] in out and "tiny-test" in out and "[0,1]" in out and " 24 " in out
    assert cli_main(["cache", "clear"]) == 0
    assert "removed 1 cache entries" in capsys.readouterr().out
    assert default_cache().entries() == []
    assert cli_main(["cache", "list"]) == 0
    assert "(empty)" in capsys.readouterr().out
