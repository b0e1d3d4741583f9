"""A packaged backbone used as a frozen feature source is described from its card and built only when needed.

The real MobileNetV2 (ImageNet, the offline package) throughout: the card must describe exactly what building it
gives (spec, preprocessing, width, weights hash), the deferred backbone must become that backbone when anything runs
it, a model around it is saved by reference and loads back with the same predictions, and forged or stale cards and
references are refused. The last test runs a cached probe re-run in a fresh process and checks it never imported
torchvision (what makes the re-run fast, issue 11).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transferkit.backbones import build_catalog, feature_backbone
from transferkit.backbones.deferred import (
    DeferredBackbone,
    declared_parameter_count,
    is_deferred,
    state_sha256,
    weights_reference,
)
from transferkit.errors import BackboneError, WeightsError
from transferkit.features.keys import weights_sha256
from transferkit.io import file_sha256
from transferkit.model import (
    MODEL_META,
    MODEL_WEIGHTS,
    TransferModel,
    load_model,
    model_file_bytes,
    model_sha256,
    save_model,
)

NAME = "mobilenet_v2.imagenet"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cards(tmp_path: Path) -> Path:
    return tmp_path / "cards"


def _pair(cards: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    first = feature_backbone(NAME, cards=cards)  # no card yet: built now, card written
    second = feature_backbone(NAME, cards=cards)  # from the card
    return first, second


def test_the_card_describes_what_building_gives(cards: Path) -> None:
    first, second = _pair(cards)
    assert not is_deferred(first) and isinstance(second, DeferredBackbone)
    assert len(list(cards.glob("*.json"))) == 1
    assert list(second.parameters()) == []  # nothing built yet
    assert second.spec() == first.spec()
    assert second.preprocessing.to_dict() == first.preprocessing.to_dict()
    assert second.feature_dim == first.feature_dim == 1280
    assert weights_sha256(second) == weights_sha256(first) == state_sha256(build_catalog(NAME))
    assert declared_parameter_count(second) == sum(p.numel() for p in first.parameters())


def test_running_it_builds_the_same_backbone_in_place(cards: Path) -> None:
    first, second = _pair(cards)
    model = TransferModel(second, ["a", "b"])
    model.to("cpu").eval()  # replayed on the modules once they exist
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model.backbone(x)
        ref = first.eval()(x)
    assert not is_deferred(model.backbone) and model.backbone is second  # the same object, now the real one
    assert type(second) is type(first) and not second.training
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert second.state_dict().keys() == first.state_dict().keys()
    assert all(not p.requires_grad for p in second.parameters())


def test_loading_a_whole_state_into_a_deferred_model_builds_it(cards: Path) -> None:
    first, second = _pair(cards)
    whole = TransferModel(first, ["a", "b"]).state_dict()
    model = TransferModel(second, ["a", "b"])
    model.load_state_dict(whole)  # strict: every backbone key found a home
    assert not is_deferred(model.backbone)


def test_a_model_around_it_is_saved_by_reference_and_loads_back(cards: Path, tmp_path: Path) -> None:
    _, second = _pair(cards)
    model = TransferModel(second, ["a", "b", "c"])
    torch.nn.init.normal_(model.head[-1].weight)
    save_model(model, tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / MODEL_WEIGHTS))
    assert not any(k.startswith("backbone.") for k in saved) and saved  # the backbone's 2.2 M parameters are not copied
    meta = json.loads((tmp_path / "m" / MODEL_META).read_text())
    whole = sum(t.numel() * t.element_size() for t in build_catalog(NAME).state_dict().values())
    assert meta["backbone_weights"] == {"catalog": NAME, "weights_sha256": weights_sha256(second), "bytes": whole}
    assert model_file_bytes(tmp_path / "m") == (tmp_path / "m" / MODEL_WEIGHTS).stat().st_size + whole
    assert is_deferred(model.backbone)  # saving did not build it
    back = load_model(tmp_path / "m")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model.eval()(x))
    assert weights_reference(back.backbone) is not None  # saved again, still by reference


def test_a_by_reference_folder_hashes_its_backbone_too(cards: Path, tmp_path: Path) -> None:
    """The served / exported model hash covers the backbone a by-reference folder names, not only its head file."""
    first, second = _pair(cards)
    save_model(TransferModel(second, ["a", "b"]), tmp_path / "ref")
    head_only = file_sha256(tmp_path / "ref" / MODEL_WEIGHTS)
    assert model_sha256(tmp_path / "ref") != head_only
    meta_path = tmp_path / "ref" / MODEL_META
    meta = json.loads(meta_path.read_text())
    before = model_sha256(tmp_path / "ref")
    meta["backbone_weights"]["weights_sha256"] = "0" * 64  # the same head on other backbone weights
    meta_path.write_text(json.dumps(meta))
    assert model_sha256(tmp_path / "ref") != before
    whole = TransferModel(first, ["a", "b"])
    with torch.no_grad():
        next(first.parameters()).add_(1.0)  # trained: saved whole, hashed as the file
    save_model(whole, tmp_path / "whole")
    assert model_sha256(tmp_path / "whole") == file_sha256(tmp_path / "whole" / MODEL_WEIGHTS)


def test_trained_backbone_weights_are_saved_whole(cards: Path, tmp_path: Path) -> None:
    first, _ = _pair(cards)  # built now: its weights can change
    model = TransferModel(first, ["a", "b"])
    with torch.no_grad():
        next(first.parameters()).add_(1.0)
    save_model(model, tmp_path / "m")
    assert any(k.startswith("backbone.") for k in load_file(str(tmp_path / "m" / MODEL_WEIGHTS)))
    assert "backbone_weights" not in json.loads((tmp_path / "m" / MODEL_META).read_text())


def test_a_reference_to_other_weights_is_refused(cards: Path, tmp_path: Path) -> None:
    _, second = _pair(cards)
    save_model(TransferModel(second, ["a", "b"]), tmp_path / "m")
    meta_path = tmp_path / "m" / MODEL_META
    meta = json.loads(meta_path.read_text())
    meta["backbone_weights"]["weights_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="by reference"):
        load_model(tmp_path / "m")
    meta["backbone_weights"] = {"catalog": "digits-cnn", "weights_sha256": "0" * 64}  # not a packaged backbone
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(Exception, match="damaged"):
        load_model(tmp_path / "m")


def test_a_forged_card_is_refused_when_the_backbone_is_built(cards: Path) -> None:
    _pair(cards)
    card_path = next(cards.glob("*.json"))
    card = json.loads(card_path.read_text())
    card["weights_sha256"] = "f" * 64
    card_path.write_text(json.dumps(card))
    forged = feature_backbone(NAME, cards=cards)
    assert is_deferred(forged)
    with pytest.raises(BackboneError, match="cache clear"):
        forged(torch.rand(1, 3, 32, 32))


def test_a_damaged_card_is_rebuilt(cards: Path) -> None:
    _pair(cards)
    card_path = next(cards.glob("*.json"))
    card_path.write_text("{not json")
    again = feature_backbone(NAME, cards=cards)
    assert not is_deferred(again)
    assert json.loads(card_path.read_text())["feature_dim"] == 1280


def test_tapped_fused_or_own_weights_are_never_deferred(cards: Path) -> None:
    _pair(cards)
    assert not is_deferred(feature_backbone(NAME, layers=[-1], cards=cards))
    assert not is_deferred(feature_backbone(NAME, pretrained=False, cards=cards))
    assert not is_deferred(feature_backbone(NAME, cards=None))


@pytest.mark.slow
def test_a_cached_probe_rerun_never_imports_torchvision(tmp_path: Path) -> None:
    """Two fits of the same probe in fresh processes: the second reads features, head and card, and saves the model
    without building the backbone; predicting on data it has no features for then builds it."""
    from transferkit.data import load_builtin

    test = load_builtin("animal-mnist").test
    pick = np.concatenate([np.flatnonzero(test.labels == c)[:12] for c in range(3)])
    np.savez(tmp_path / "data.npz", x=np.stack([np.asarray(test.inputs[i]) for i in pick]), y=test.labels[pick])
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import numpy as np
        from transferkit import TransferClassifier
        d = np.load({str(tmp_path / 'data.npz')!r})
        est = TransferClassifier(backbone={NAME!r}, method="probe", image_size=64, progress=False)
        est.fit(d["x"], d["y"])
        est.save({str(tmp_path / 'model')!r})
        imported = "torchvision" in sys.modules
        hits = np.asarray(est.predict(d["x"])).astype(str) == d["y"].astype(str)  # new data: this one builds it
        print(imported, float(hits.mean()))
    """))
    env = {"TRANSFERKIT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT / "src"),
           "HF_HUB_OFFLINE": "1", "TRANSFERKIT_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    runs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=600) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    (imported1, acc1), (imported2, acc2) = (r.stdout.split()[-2:] for r in runs)
    assert imported1 == "True" and imported2 == "False"
    assert acc1 == acc2 and float(acc2) > 0.5  # the same head, and a real one
