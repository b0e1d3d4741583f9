"""Structured pruning: the pruned architecture saved as data (channel counts in model.json) and rebuilt without pickle.

Mechanics on the small random ``digits-cnn`` (fast); the reload in a fresh process on the real MobileNetV2.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.compress import prune_model
from transferkit.errors import ConfigError, RunError
from transferkit.model import TransferModel, load_model, save_model

CLASSES = [f"c{i}" for i in range(5)]


def _digits_model(seed: int = 0) -> TransferModel:
    torch.manual_seed(seed)
    return TransferModel(build_backbone("digits-cnn"), CLASSES).eval()


def _x(n: int = 8, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_pruning_halves_channels_keeps_the_head_and_reloads_from_data(tmp_path):
    model = _digits_model()
    result = prune_model(model, _x(), amount=0.5, importance="l2")
    pruned = result.model
    convs = [m for m in pruned.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 24]  # 32 and 48 filters, half of each removed
    assert pruned.head[-1].out_features == len(CLASSES)  # the head's outputs (the classes) stay whole
    assert result.params_after < 0.5 * result.params_before
    assert result.macs_after < 0.5 * result.macs_before
    # the original model is left as it was
    assert [m.out_channels for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)] == [32, 48]

    save_model(pruned, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["pruned"]["layers"]["backbone.model.stage1.0"] == {"type": "Conv2d", "in_channels": 3,
                                                                   "out_channels": 16, "groups": 1}
    again = load_model(tmp_path / "m")
    x = _x(4, seed=1)
    with torch.no_grad():
        assert torch.equal(pruned(x), again(x))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    # a loaded pruned model keeps its record: saved again, it still rebuilds
    assert again.pruned == meta["pruned"]
    save_model(again, tmp_path / "m2")
    with torch.no_grad():
        assert torch.equal(pruned(x), load_model(tmp_path / "m2")(x))


@pytest.mark.parametrize("target", ["params", "macs"])
def test_params_and_macs_targets_are_reached(target):
    result = prune_model(_digits_model(), _x(), amount=0.4, target=target, importance="l1")
    before, after = ((result.params_before, result.params_after) if target == "params"
                     else (result.macs_before, result.macs_after))
    assert after <= 0.6 * before
    assert after > 0.3 * before  # small steps: it stops soon after the target, not at the maximum


def test_taylor_importance_uses_gradients_and_chooses_other_channels_than_magnitude():
    model = _digits_model()
    with pytest.raises(ConfigError, match="taylor importance needs"):
        prune_model(model, _x(), importance="taylor")
    y = torch.arange(16) % len(CLASSES)
    batches = [(_x(16, seed=s), y) for s in range(2)]
    taylor = prune_model(model, _x(), amount=0.5, importance="taylor", grad_batches=batches).model
    l2 = prune_model(model, _x(), amount=0.5, importance="l2").model
    w_t, w_m = taylor.backbone.model.stage1[0].weight, l2.backbone.model.stage1[0].weight
    assert w_t.shape == w_m.shape
    assert not torch.equal(w_t, w_m)  # another choice of surviving filters


def test_iterative_pruning_calls_between_after_each_step_but_the_last():
    seen = []
    result = prune_model(_digits_model(), _x(), amount=0.5, steps=3, between=lambda m, s: seen.append(s))
    assert seen == [0, 1]
    assert result.steps == 3
    assert [m.out_channels for m in result.model.backbone.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 24]


def test_bad_settings_and_damaged_channel_counts_are_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="pruning amount must be in"):
        prune_model(_digits_model(), _x(), amount=1.0)
    with pytest.raises(ConfigError, match="pruning target 'flops' is unknown"):
        prune_model(_digits_model(), _x(), target="flops")
    pruned = prune_model(_digits_model(), _x(), amount=0.5).model
    save_model(pruned, tmp_path / "m")
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    name = next(iter(meta["pruned"]["layers"]))
    meta["pruned"]["layers"][name]["out_channels"] = "sixteen"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RunError, match="is damaged.*needs whole counts"):
        load_model(tmp_path / "m")
    meta["pruned"]["layers"]["backbone.no.such.layer"] = {"type": "Conv2d"}
    del meta["pruned"]["layers"][name]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RunError, match="is damaged.*not a Conv2d of this architecture"):
        load_model(tmp_path / "m")


_FRESH = textwrap.dedent("""
    import pickle, sys
    import numpy as np
    import torch
    import transferkit.model

    def refuse(*a, **k):
        raise AssertionError("pickle was used")

    def audit(event, args):
        if event == "pickle.find_class":
            raise AssertionError("pickle was used")

    sys.addaudithook(audit)
    pickle.load = pickle.loads = torch.load = refuse
    from transferkit.model import load_model

    model = load_model(sys.argv[1])
    x = torch.from_numpy(np.load(sys.argv[2], allow_pickle=False))
    with torch.no_grad():
        np.save(sys.argv[3], model(x).numpy(), allow_pickle=False)
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    print(sum(convs))
""")


@pytest.mark.slow
def test_pruned_mobilenet_reloads_in_a_fresh_process_with_identical_outputs_and_no_pickle(tmp_path):
    torch.manual_seed(0)
    model = TransferModel(build_backbone("mobilenet_v2.imagenet"), CLASSES, image_size=32).eval()
    x = _x(4, size=32)
    pruned = prune_model(model, x, amount=0.5, importance="l2").model
    save_model(pruned, tmp_path / "pruned")
    np.save(tmp_path / "x.npy", x.numpy())
    script = tmp_path / "fresh.py"
    script.write_text(_FRESH)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "pruned"), str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    channels = sum(m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d))
    original = sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert int(out.stdout.split()[-1]) == channels < 0.6 * original
    with torch.no_grad():
        expected = pruned(x).numpy()
    assert np.array_equal(np.load(tmp_path / "y.npy"), expected)


def test_batch_norm_recalibration_fits_the_pruned_model_statistics():
    from transferkit.compress.prune import recalibrate_batch_norm

    pruned = prune_model(_digits_model(), _x(), amount=0.5).model
    batches = [_x(32, seed=s) for s in range(3)]
    recalibrate_batch_norm(pruned, batches)
    bn = pruned.backbone.model.stage1[1]
    with torch.no_grad():
        conv_out = torch.cat([pruned.backbone.model.stage1[0](b) for b in batches])
    assert torch.allclose(bn.running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.1 and not pruned.training


def test_iterative_pruning_hands_between_a_model_with_re_estimated_batch_norm_statistics():
    """Each recovery in between starts from statistics of the channels left, not the unpruned model's."""
    batches = [_x(32, seed=s) for s in range(3)]
    gaps = []

    def between(model, step):  # noqa: ANN001, ANN202
        bn = model.backbone.model.stage1[1]
        with torch.no_grad():
            conv_out = torch.cat([model.backbone.model.stage1[0](b) for b in batches])
        gaps.append(float((bn.running_mean - conv_out.mean(dim=(0, 2, 3))).abs().max()))

    prune_model(_digits_model(), _x(), amount=0.5, steps=2, between=between, norm_batches=batches)
    assert len(gaps) == 1 and gaps[0] < 1e-5
    prune_model(_digits_model(), _x(), amount=0.5, steps=2, between=between)  # without batches: the old statistics
    assert gaps[1] > 1e-3
