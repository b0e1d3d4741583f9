"""Your own network as a backbone (``module:`` names, ModuleBackbone): the failures a user of a ported network met.

The network under test (tests/foreign_net.py) is shaped like a TensorFlow port: all stages in one container, Keras'
batch-norm momentum, a classifier at the end, and a "published" checkpoint with the classifier's tensors.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from tests.cli_helpers import ROOT, assert_user_error
from tests.foreign_net import FEATURES, PRE, SIZE, PortedNet, headless, published_weights
from transferkit.backbones import ModuleBackbone, TapBackbone, build_backbone, check_blocks
from transferkit.backbones.module_backbone import discover_anchors, param_children_anchors
from transferkit.errors import BackboneError, WeightsError

FOREIGN = "module:tests.foreign_net"


def _one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith((".", "?", ")")), message


def _share(block: nn.Module, total: int) -> float:
    return sum(p.numel() for p in block.parameters()) / total


# --- blocks -----------------------------------------------------------------------------------------------------
def test_default_blocks_split_the_container_that_holds_the_whole_network() -> None:
    net, _ = headless(PortedNet(bn_momentum=0.1))
    assert param_children_anchors(net) == ["features"]  # what the top level alone gives: one block, 100 %
    bb = ModuleBackbone(net, FEATURES, PRE)
    blocks = bb.blocks()
    assert [b.block_name for b in blocks] == [f"features.{i}" for i in range(5)]  # stem and the four stages
    check_blocks(bb, blocks)
    total = sum(p.numel() for p in bb.parameters())
    assert max(_share(b, total) for b in blocks) < 0.8
    assert [b.tap for b in blocks] == list(net.features)  # taps sit at stage outputs


def test_default_blocks_descend_through_wrappers_and_leave_a_sensible_top_level_alone() -> None:
    inner = PortedNet(bn_momentum=0.1).features
    wrapped = nn.Sequential()
    wrapped.add_module("body", nn.Sequential())
    wrapped.body.add_module("trunk", inner)  # body -> trunk -> stages
    assert discover_anchors(wrapped) == [f"body.trunk.{i}" for i in range(5)]

    class ResNetLike(nn.Module):  # the largest stage holds 2/3: already a sensible split, kept as it is
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
            self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
            self.layer2 = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 3))

    assert discover_anchors(ResNetLike()) == param_children_anchors(ResNetLike()) == ["bn1", "layer1", "layer2"]


def test_tapping_a_block_that_never_runs_says_to_pass_blocks_and_lists_what_ran() -> None:
    class WithUnusedHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            net, _ = headless(PortedNet(bn_momentum=0.1))
            self.backbone = net
            self.aux = nn.Linear(FEATURES, 3)  # registered, never called by forward

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    bb = ModuleBackbone(WithUnusedHead(), FEATURES, PRE)
    assert TapBackbone(bb, [0]).feature_dim > 0  # a block that runs is fine
    with pytest.raises(BackboneError) as err:
        TapBackbone(bb, [-1])
    msg = str(err.value)
    _one_sentence(msg)
    assert "never ran" in msg and "blocks=" in msg and "'backbone'" in msg and "'backbone.features'" in msg


# --- feature size -----------------------------------------------------------------------------------------------
def test_a_wrong_feature_dim_is_one_sentence_with_both_numbers() -> None:
    with pytest.raises(BackboneError) as err:
        ModuleBackbone(PortedNet(bn_momentum=0.1), FEATURES, PRE)  # the classifier is still on: 10 outputs
    msg = str(err.value)
    _one_sentence(msg)
    assert f"feature_dim={FEATURES}" in msg and "returns 10 features" in msg and "nn.Identity()" in msg


def test_feature_dim_none_is_measured_and_the_train_flags_survive() -> None:
    net, _ = headless(PortedNet(bn_momentum=0.1))
    flags = [m.training for m in net.modules()]
    bb = ModuleBackbone(net, None, PRE)
    assert bb.feature_dim == FEATURES
    assert [m.training for m in net.modules()] == flags and all(flags)
    assert bb(torch.zeros(3, 3, SIZE, SIZE)).shape == (3, FEATURES)


def test_a_network_that_cannot_run_its_own_input_is_one_sentence() -> None:
    with pytest.raises(BackboneError, match=r"fails on a dummy batch of shape \(2, 3, 32, 32\)") as err:
        ModuleBackbone(nn.Linear(10, 4), 4, PRE)  # an image backbone whose forward takes vectors
    _one_sentence(str(err.value))


# --- weights files ------------------------------------------------------------------------------------------------
def _checkpoint(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "ported.pth") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_a_stock_checkpoint_fills_the_network_and_its_source_head(tmp_path: Path) -> None:
    state = published_weights()
    for k in [k for k in state if k.endswith("num_batches_tracked")]:
        del state[k]  # TensorFlow ports' files have no such counters
    path = _checkpoint(tmp_path, state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bb = build_backbone(f"{FOREIGN}:build_plain", weights=str(path))
    assert not [w for w in caught if "ignored" in str(w.message)]  # the classifier went into the source head
    assert torch.equal(bb.model.features[4][0].weight, state["features.4.0.weight"])
    assert torch.equal(bb.model.features[4][1].running_var, state["features.4.1.running_var"])
    assert torch.equal(bb.source_head().weight, state["classifier.weight"])


def test_extra_tensors_without_a_source_head_are_ignored_with_a_warning_naming_them(tmp_path: Path) -> None:
    state = published_weights()
    state["aux.0.weight"] = torch.zeros(3, 3)
    path = _checkpoint(tmp_path, state)
    net, _ = headless(PortedNet())
    with pytest.warns(UserWarning, match=r"ignored") as rec:
        bb = ModuleBackbone(net, FEATURES, PRE, weights=path)
    msg = next(str(w.message) for w in rec if "ignored" in str(w.message))
    assert str(path) in msg and "'classifier'" in msg and "'aux.0'" in msg and "3 tensors" in msg
    assert torch.equal(bb.model.features[0][0].weight, state["features.0.0.weight"])


def test_the_whole_networks_checkpoint_loads_into_a_backbone_made_of_its_features(tmp_path: Path) -> None:
    state = published_weights()
    path = tmp_path / "ported.safetensors"
    save_file(state, str(path))
    net = PortedNet(bn_momentum=0.1)
    trunk = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # keys 0.*, the file's features.*
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bb = ModuleBackbone(trunk, FEATURES, PRE, weights=path, source_head=net.classifier)
    assert torch.equal(bb.model[0][3][0].weight, state["features.3.0.weight"])
    assert torch.equal(bb.source_head().bias, state["classifier.bias"])


@pytest.mark.parametrize("case", ["wrong shape", "missing", "pickle", "truncated", "no file"])
def test_a_weights_file_that_does_not_fit_is_refused_naming_the_file(tmp_path: Path, case: str) -> None:
    state = published_weights()
    if case == "wrong shape":
        state["features.4.0.weight"] = torch.zeros(5, 32, 3, 3)
    elif case == "missing":
        del state["features.2.3.weight"]
    path = tmp_path / "ported.safetensors"
    save_file(state, str(path))
    if case == "pickle":
        path = _checkpoint(tmp_path, {"model": PortedNet()})  # a whole pickled module: refused, never unpickled
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif case == "no file":
        path = tmp_path / "nowhere.pth"
    with pytest.raises(WeightsError) as err:
        build_backbone(f"{FOREIGN}:build_plain", weights=str(path))
    msg = str(err.value)
    _one_sentence(msg)
    assert str(path) in msg
    if case in ("wrong shape", "missing"):
        assert ("features.4.0.weight" if case == "wrong shape" else "features.2.3.weight") in msg


# --- random start -------------------------------------------------------------------------------------------------
def test_pretrained_false_reinitialises_every_parameter_and_drops_the_source_head() -> None:
    pretrained = build_backbone(f"{FOREIGN}:build")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every parameter of this network has a layer with reset_parameters()
        random = build_backbone(f"{FOREIGN}:build", pretrained=False)
    pairs = list(zip(pretrained.state_dict().items(), random.state_dict().items(), strict=True))
    changed = [k for (k, a), (_, b) in pairs if a.is_floating_point() and not torch.equal(a, b)]
    floating = [k for k, v in pretrained.state_dict().items() if v.is_floating_point()]
    assert changed == floating
    assert pretrained.source_head() is not None and random.source_head() is None
    x = torch.rand(2, 3, SIZE, SIZE)
    assert not torch.allclose(pretrained.eval()(x), random.eval()(x))


def test_rank_random_candidate_really_is_random() -> None:
    from transferkit.ranking.rank import build_candidate

    a = build_candidate(f"{FOREIGN}:build").state_dict()
    b = build_candidate(f"{FOREIGN}:build~random").state_dict()
    assert not torch.equal(a["model.features.4.0.weight"], b["model.features.4.0.weight"])


def test_parameters_without_reset_parameters_are_named() -> None:
    from transferkit.backbones.module_backbone import randomise

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.full((FEATURES,), 2.0))
            self.net = headless(PortedNet(bn_momentum=0.1))[0]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) * self.gain

    bb = ModuleBackbone(Scaled(), FEATURES, PRE)
    with pytest.warns(UserWarning, match=r"1 parameters .* kept their values \('gain'\)"):
        randomise(bb, "module:x:y")
    assert torch.equal(bb.model.gain, torch.full((FEATURES,), 2.0))


# --- batch-norm momentum ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.01, None])
def test_tensorflow_batch_norm_momentum_is_warned_once(momentum: float | None) -> None:
    net, _ = headless(PortedNet(bn_momentum=momentum))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ModuleBackbone(net, FEATURES, PRE)
    found = [str(w.message) for w in caught if "batch-norm" in str(w.message)]
    assert len(found) == 1, found
    assert f"momentum {momentum}" in found[0] and "momentum=0.1" in found[0] and "9 of the 9" in found[0]
    _one_sentence(found[0])


def test_pytorch_batch_norm_momentum_is_not_warned() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ModuleBackbone(headless(PortedNet(bn_momentum=0.1))[0], FEATURES, PRE)


# --- importing the backbone function --------------------------------------------------------------------------------
FACTORY = '''
import torch
from torch import nn
from transferkit.backbones import ModuleBackbone, Preprocessing
{extra}

def build():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return ModuleBackbone(net, 4, Preprocessing("image", image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3))


def broken():
    raise ValueError("the checkpoint folder is not set")
'''


def _factory_file(folder: Path, extra: str = "") -> str:
    name = f"user_net_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(FACTORY.format(extra=extra))
    return name


def test_a_module_in_the_current_folder_is_importable_and_the_path_is_restored(tmp_path: Path, monkeypatch) -> None:
    name = _factory_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    assert build_backbone(f"module:{name}:build").feature_dim == 4
    assert sys.path == before


@pytest.mark.parametrize(
    ("target", "extra", "fragments"),
    [
        ("{missing}:build", "", ["no module '{missing}'", "in the current folder ({cwd})"]),
        ("{name}:build", "import not_a_real_package_xyz", ["module '{name}' failed to import: No module named "
                                                           "'not_a_real_package_xyz'"]),
        ("{name}:build", "raise RuntimeError('bad port')",
         ["module '{name}' failed to import: RuntimeError: bad port"]),
        ("{name}:biuld", "", ["has no function 'biuld'", "did you mean 'build'?"]),
        ("{name}:broken", "", ["'{name}:broken' failed (ValueError: the checkpoint folder is not set)"]),
        ("{name}", "", ["not of the form module:<module>:<function>"]),
        ("{name}:torch", "", ["is a module, not a function"]),
    ],
    ids=["no module", "import inside fails", "module code fails", "typo", "function fails", "no function",
         "not callable"],
)
def test_backbone_function_failures_are_one_sentence(tmp_path: Path, monkeypatch, target, extra, fragments) -> None:
    name = _factory_file(tmp_path, extra)
    monkeypatch.chdir(tmp_path)
    fill = {"name": name, "missing": f"nosuch_{uuid.uuid4().hex[:8]}", "cwd": os.getcwd()}
    with pytest.raises(BackboneError) as err:
        build_backbone("module:" + target.format(**fill))
    _one_sentence(str(err.value))
    for f in fragments:
        assert f.format(**fill) in str(err.value)


def _image_folder(root: Path, n: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``transferkit`` console script (not ``python -m``: it does not put the cwd on sys.path)."""
    script = Path(sys.executable).parent / "transferkit"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_OFFLINE": "1"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_console_script_imports_from_the_current_folder_and_shows_the_real_import_error(tmp_path: Path) -> None:
    # the error comes from inside the module, so the console script found it in the current folder
    data = _image_folder(tmp_path / "imgs")
    bad = _factory_file(tmp_path, "import not_a_real_package_xyz")
    proc = _console("fit", "--data", str(data), "--backbone", f"module:{bad}:build", "--out", "run", cwd=tmp_path)
    assert_user_error(proc, f"module '{bad}' failed to import: No module named 'not_a_real_package_xyz'")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_console_script_fits_with_a_factory_in_the_current_folder(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "imgs")
    good = _factory_file(tmp_path)
    proc = _console("fit", "--data", str(data), "--epochs", "1", "--set", "train.progress=false",
                    "--backbone", f"module:{good}:build", "--out", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()


# --- the README example ---------------------------------------------------------------------------------------------
def _readme_example() -> tuple[str, list[str], str]:
    """The README section's code blocks: my_net.py, the shell commands, the Python script."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own network as a backbone", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    assert [lang for lang, _ in blocks] == ["python", "bash", "python"]
    (_, module), (_, shell), (_, script) = blocks
    assert module.startswith("# my_net.py")
    commands = [c for c in shell.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]
    return module, commands, script


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    module, commands, script = _readme_example()
    (tmp_path / "my_net.py").write_text(module)
    from transferkit import TransferClassifier

    if "trust_code" not in inspect.signature(TransferClassifier.load).parameters:  # before the trust opt-in exists
        script = script.replace(", trust_code=True", "")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        proc = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        assert proc.returncode == 0, (command, proc.stderr)
        assert "warning" not in proc.stderr, proc.stderr  # no ignored tensors, no batch-norm momentum
    assert (tmp_path / "runs" / "my-net" / "model.safetensors").is_file()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert 0.0 <= float(proc.stdout.strip().splitlines()[-1]) <= 1.0
