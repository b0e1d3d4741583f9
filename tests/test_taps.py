"""The one tap mechanism (transferkit.backbones.taps): naming layers, reading them, and leaving nothing behind.

Every reader of intermediate outputs (frozen features, DELTA, BSS/LwF, ranking) goes through it, so these tests pin
the rules once: a block index and the module path of the same module read the same tensor, features/ and DELTA read
the same map of the same block, a stem block (no stage module of its own) uses its last member, tuple and dict outputs
give their first tensor, a wrong path gets the closest ones, and no hook outlives its ``with`` block.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.tiny import TinyConvBackbone
from transferkit.backbones import ModuleBackbone, TapBackbone
from transferkit.backbones.base import Preprocessing
from transferkit.backbones.taps import Taps, first_tensor, is_stem, resolve_layer, resolve_layers
from transferkit.config import ModelConfig, TrainConfig
from transferkit.errors import BackboneError, ConfigError
from transferkit.methods import create_method
from transferkit.methods.base import FitContext
from transferkit.model import TransferModel, forward_with_features

PRE = Preprocessing("image", image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class StemNet(nn.Module):
    """A ResNet-like network: a conv/bn stem before two stages; stage 2 returns a tuple, as some libraries' do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer2 = TupleStage(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _aux = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return h.mean(dim=(2, 3))


class TupleStage(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.conv(x)
        return h, {"aux": h.sum()}


class StemBackbone(ModuleBackbone):
    separate_stem = True  # conv1/bn1 form their own block, as the timm and torchvision adapters make them


def stem_backbone() -> StemBackbone:
    torch.manual_seed(0)
    return StemBackbone(StemNet(), 6, PRE, blocks=["layer1", "layer2"])


def hooks_in(module: nn.Module) -> int:
    """Every forward and pre-forward hook registered anywhere in ``module``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


# --- naming layers ------------------------------------------------------------------------------------------------
def test_block_indices_and_module_paths_name_the_same_modules() -> None:
    bb = stem_backbone()
    blocks = bb.blocks()
    assert [is_stem(b) for b in blocks] == [True, False, False]
    # the stem has no stage module: its last member (bn1) stands in; paths are relative to the wrapped network
    assert [p.path for p in resolve_layers(bb, [0, 1, -1])] == ["model.bn1", "model.layer1", "model.layer2"]
    assert resolve_layer(bb, "layer1").path == resolve_layer(bb, 1).path == resolve_layer(bb, "1").path
    assert resolve_layer(bb, "layer1.1") == resolve_layer(bb, " layer1.1 ")  # finer than a block
    assert resolve_layer(bb, "-1").label == -1  # text of an index is an index, as an int
    bb.eval()
    with torch.no_grad():
        x = _x()
        by_index, by_path = TapBackbone(bb, [0, 2])(x), TapBackbone(bb, ["bn1", "layer2"])(x)
    torch.testing.assert_close(by_index, by_path, rtol=0, atol=0)


def test_a_wrong_path_gets_the_closest_paths_and_a_setting_makes_it_a_config_error() -> None:
    bb = stem_backbone()
    with pytest.raises(BackboneError) as err:
        resolve_layer(bb, "layer3")
    msg = str(err.value)
    assert "Layer 'layer3' does not exist" in msg and "'layer1'" in msg and "'layer2'" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"Layer 'layr1' in 'model.method_params.layers' does not exist.*'layer1'"):
        resolve_layer(bb, "layr1", setting="model.method_params.layers")
    with pytest.raises(BackboneError, match="Layer 3 does not exist: this backbone has 3 blocks"):
        resolve_layer(bb, 3)
    with pytest.raises(BackboneError, match="Layer True does not exist"):
        resolve_layer(bb, True)


def test_tap_specs_keep_their_cache_keys() -> None:
    """Block indices stay integers as given (not made positive), so features cached before keep their keys."""
    bb = TinyConvBackbone()
    spec = TapBackbone(bb, [0, -1], "max").spec()
    assert spec == {"type": "tap", "backbone": {"kind": "tiny-test"}, "layers": [0, -1], "pooling": "max"}
    assert TapBackbone(bb, ["0", "-1"], "max").spec() == spec  # index text (e.g. from --set) is the same spec
    assert TapBackbone(bb, ["b1"]).spec()["layers"] == ["b1"]  # a module path is kept as written


# --- reading them -------------------------------------------------------------------------------------------------
def test_features_and_delta_read_the_same_map_of_the_same_block() -> None:
    bb = stem_backbone()
    model = TransferModel(bb, ["a", "b"])
    model.eval()
    m = create_method("delta", {"layers": [0, "layer2"]})  # the stem block: DELTA used to refuse it
    m.setup(FitContext(model, None, ModelConfig(), TrainConfig(), make_loader=None))
    assert m.tap_paths == ["model.bn1", "model.layer2"]
    x = _x()
    with torch.no_grad():
        with Taps(model.backbone, m.tap_paths) as taps:
            model(x)
        maps = taps.in_order()
        pooled = TapBackbone(bb, [0, -1], "avg")(x)
    torch.testing.assert_close(torch.cat([h.mean(dim=(2, 3)) for h in maps], dim=1), pooled)
    assert m.regulariser(model, x, maps).item() == pytest.approx(0.0, abs=1e-12)  # the source copy reads the same


def test_tuple_and_dict_outputs_give_their_first_tensor() -> None:
    t = torch.ones(2, 3)
    assert first_tensor(t) is t
    assert first_tensor((t, torch.zeros(1))) is t
    assert first_tensor([(t,), None]) is t
    assert first_tensor({"last_hidden_state": t, "pooler_output": torch.zeros(1)}) is t

    class Output:
        last_hidden_state = t

    assert first_tensor(Output()) is t
    with pytest.raises(BackboneError, match="holds no tensor"):
        first_tensor(("text", 3))
    bb = stem_backbone()
    bb.eval()
    with torch.no_grad(), Taps(bb, ["model.layer2"]) as taps:  # layer2 returns (map, {"aux": ...})
        bb(_x())
    assert taps.in_order()[0].shape == (4, 6, 8, 8)


def test_stop_early_ends_the_pass_after_the_last_tap() -> None:
    bb = stem_backbone()
    ran: list[str] = []
    handle = bb.model.layer2.register_forward_hook(lambda *_: ran.append("layer2"))
    try:
        out = None
        with torch.no_grad(), Taps(bb, ["model.layer1"], stop_early=True) as taps:
            out = bb(_x())
    finally:
        handle.remove()
    assert out is None and ran == [] and taps.in_order()[0].shape == (4, 8, 8, 8)


def test_grad_makes_maps_of_a_frozen_model_differentiable() -> None:
    bb = stem_backbone().requires_grad_(False)
    with Taps(bb, ["model.layer1"], grad=True) as taps:
        out = bb(_x())
    (fm,) = taps.in_order()
    (g,) = torch.autograd.grad(out.sum(), [fm])
    assert g.shape == fm.shape and g.abs().sum() > 0


def test_forward_with_features_taps_the_backbone_output() -> None:
    model = TransferModel(TinyConvBackbone(), ["a", "b"])
    model.eval()
    with torch.no_grad():
        feats, logits = forward_with_features(model, _x())
        torch.testing.assert_close(feats, model.backbone(_x()))
        torch.testing.assert_close(logits, model(_x()))
    assert hooks_in(model) == 0


# --- leaving nothing behind ---------------------------------------------------------------------------------------
def test_hooks_are_removed_after_use_and_after_an_exception() -> None:
    bb = stem_backbone()
    assert hooks_in(bb) == 0
    with Taps(bb, ["model.layer1", "model.bn1"]) as taps:
        assert hooks_in(bb) == 3  # one per tapped module, plus the root's pre-hook that remembers the input
        bb(_x())
    assert hooks_in(bb) == 0 and set(taps.outputs) == {"model.layer1", "model.bn1"}
    with pytest.raises(RuntimeError), Taps(bb, ["model.layer1"]):
        bb(torch.zeros(2, 5, 16, 16))  # wrong channel count: the forward pass raises inside the block
    assert hooks_in(bb) == 0
    with pytest.raises(AttributeError), Taps(bb, ["model.layer1", "model.nowhere"]):
        pass  # the second path fails while registering: the hooks already registered are removed too
    assert hooks_in(bb) == 0


def test_a_tap_that_never_ran_lists_the_modules_that_did_and_leaves_no_hook() -> None:
    class WithUnused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.aux = nn.Linear(4, 2)  # registered, never called

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x).mean(dim=(2, 3))

    bb = ModuleBackbone(WithUnused(), 4, PRE)
    with pytest.raises(BackboneError) as err:
        TapBackbone(bb, ["aux"])
    msg = str(err.value)
    assert msg.startswith("Layer(s) ['aux'] never ran") and "'body'" in msg and "\n" not in msg
    assert hooks_in(bb) == 0


def test_delta_refuses_a_wrong_layer_naming_the_setting_and_the_closest_paths() -> None:
    model = TransferModel(TinyConvBackbone(), ["a", "b"])
    m = create_method("delta", {"layers": ["b9"]})
    with pytest.raises(ConfigError) as err:
        m.setup(FitContext(model, None, ModelConfig(), TrainConfig(), make_loader=None))
    msg = str(err.value)
    assert "'model.method_params.layers'" in msg and "'b1'" in msg and "\n" not in msg
