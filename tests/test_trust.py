"""A saved model is data: loading it never imports or runs code that it names, unless the caller opts in (issue 12).

Every hostile folder here is a genuine saved model whose ``model.json`` was edited to name a callable; the tests
check that ``load()`` refuses it with one sentence *before* anything is imported or called (marker files stay
absent, the named module stays out of ``sys.modules``), that ``trust_code=True`` loads a genuine user factory, and
that the built-in backbones need no opt-in.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.cli_helpers import ROOT, assert_user_error, run_cli
from transferkit import TransferClassifier
from transferkit.backbones import TRUSTED_FACTORIES, build_backbone, build_from_spec, code_references
from transferkit.errors import BackboneError, RunError
from transferkit.model import MODEL_META, TransferModel, save_model


def _one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith("."), message
    assert not re.search(r"[.;:] [A-Z]", message.replace("e.g. ", "")), message


def _saved(folder: Path, backbone: str = "mlp:4-8", classes: tuple[str, ...] = ("a", "b")) -> TransferModel:
    torch.manual_seed(0)
    model = TransferModel(build_backbone(backbone, pretrained=False), list(classes))
    save_model(model, folder, extra={"hyperparameters": {"backbone": backbone}})
    return model.eval()


def _edit_meta(folder: Path, **changes: Any) -> None:
    meta = json.loads((folder / MODEL_META).read_text())
    meta.update(changes)
    (folder / MODEL_META).write_text(json.dumps(meta))


@pytest.fixture
def hostile_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module importable from sys.path whose *import* writes a marker file (and whose factory writes it too)."""
    name = f"tk_hostile_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / f"{name}.ran"
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / f"{name}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "def make(**kwargs):\n"
        f"    Path({str(marker)!r}).write_text('called')\n"
    )
    monkeypatch.syspath_prepend(str(code_dir))
    yield name, marker
    sys.modules.pop(name, None)


def _hostile_specs(module: str, marker: Path) -> dict[str, dict[str, Any]]:
    """Backbone specs a hostile model.json could hold, each naming a callable that must not run."""
    base = {"feature_dim": 8, "preprocessing": {"modality": "tabular"}, "blocks": None}
    mlp = {"type": "module", "factory": "transferkit.backbones.small_nets:MLPFeatures",
           "factory_kwargs": {"dims": [4, 8]}, **base}
    return {
        "factory-tempfile": {"type": "factory", "target": "tempfile:mkdtemp"},
        "factory-import-marker": {"type": "factory", "target": f"{module}:make"},
        "module-import-marker": {"type": "module", "factory": f"{module}:make", "factory_kwargs": {}, **base},
        "module-transferkit-io": {"type": "module", "factory": "transferkit.io:write_text",
                                  "factory_kwargs": {"path": str(marker), "text": "written"}, **base},
        "module-os-system": {"type": "module", "factory": "os:system",
                             "factory_kwargs": {"command": f"touch {marker}"}, **base},
        "module-same-package": {"type": "module", "factory": "transferkit.backbones.small_nets:parse_mlp_name",
                                "factory_kwargs": {"rest": "4-8"}, **base},
        "tap-over-factory": {"type": "tap", "backbone": {"type": "factory", "target": f"{module}:make"},
                             "layers": None, "pooling": "avg"},
        "fused-second-part": {"type": "fused", "parts": [mlp, {"type": "module", "factory": "os:system",
                                                               "factory_kwargs": {"command": f"touch {marker}"},
                                                               **base}]},
    }


CASES = list(_hostile_specs("m", Path("x")))


@pytest.mark.parametrize("case", CASES)
def test_model_folder_naming_a_callable_cannot_run_it_without_trust_code(
    case: str, tmp_path: Path, hostile_module: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, marker = hostile_module
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: calls.append(a) or str(tmp_path))
    spec = _hostile_specs(module, marker)[case]
    folder = tmp_path / "downloaded-model"
    _saved(folder)
    _edit_meta(folder, backbone=spec)
    with pytest.raises(RunError) as err:
        TransferClassifier.load(folder)
    message = str(err.value)
    named = code_references(spec)[0]
    assert f"'{folder}'" in message and f"'{named}'" in message and "trust_code=True" in message, message
    _one_sentence(message)
    assert not marker.exists(), "the named code ran"
    assert module not in sys.modules, "the named module was imported"
    assert calls == [], "tempfile.mkdtemp was called"


def test_trust_code_loads_a_genuine_user_factory_and_only_then_imports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"tk_user_net_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / f"{name}.py").write_text(
        "from pathlib import Path\nfrom torch import nn\n"
        "from transferkit.backbones import ModuleBackbone, Preprocessing\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "def make():\n"
        "    return ModuleBackbone(nn.Sequential(nn.Linear(4, 6), nn.ReLU()), 6, Preprocessing('tabular'))\n"
    )
    monkeypatch.syspath_prepend(str(code_dir))
    try:
        _saved(tmp_path / "m", backbone=f"module:{name}:make")
        sys.modules.pop(name)
        marker.unlink()
        with pytest.raises(RunError, match=f"'{name}:make'.*trust_code=True"):
            TransferClassifier.load(tmp_path / "m")
        assert not marker.exists() and name not in sys.modules
        est = TransferClassifier.load(tmp_path / "m", trust_code=True)
        assert marker.exists(), "trust_code=True imports the user's module"
        x = torch.randn(5, 4).numpy()
        assert est.predict_proba(x).shape == (5, 2)
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("backbone", ["digits-cnn", "mlp:4-8", "mlp:4"])
def test_builtin_small_backbones_save_and_reload_without_opt_in(backbone: str, tmp_path: Path) -> None:
    model = _saved(tmp_path / "m", backbone=backbone)
    assert code_references(json.loads((tmp_path / "m" / MODEL_META).read_text())["backbone"]) == []
    est = TransferClassifier.load(tmp_path / "m")
    x = torch.rand(3, 3, 28, 28) if backbone == "digits-cnn" else torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(est.model_(x), model(x))


def test_trusted_factories_are_an_explicit_list_and_their_arguments_are_checked(tmp_path: Path) -> None:
    assert set(TRUSTED_FACTORIES) == {"transferkit.backbones.small_nets:DigitsCNN",
                                      "transferkit.backbones.small_nets:MLPFeatures"}
    spec = build_backbone("digits-cnn").spec()
    spec.pop("catalog")  # a catalog spec rebuilds from the catalog and ignores the arguments: test the factory path
    assert type(build_from_spec(json.loads(json.dumps(spec)))).__name__ == "ModuleBackbone"
    mlp_spec = build_backbone("mlp:4-8").spec()
    bad = [
        {**spec, "factory_kwargs": {"dropout": "0.1; import os"}},
        {**spec, "factory_kwargs": {"dropout": 0.1, "path": "/tmp/x"}},
        {**mlp_spec, "factory_kwargs": {"dims": [10**7, 10**7]}},  # would allocate 400 TB if it were built
        {**mlp_spec, "factory_kwargs": {"dims": "4-8"}},
    ]
    for s in bad:
        with pytest.raises(BackboneError, match="damaged") as err:
            build_from_spec(s)
        _one_sentence(str(err.value))


@pytest.mark.parametrize("spec", [
    {"type": "timm", "name": 5},
    {"type": "module", "factory": ["os", "system"], "feature_dim": 1, "preprocessing": {}},
    {"type": "fused", "parts": "os:system"},
    {"type": "tap", "backbone": "module:os:system"},
    {"type": "module", "factory": "transferkit.backbones.small_nets:MLPFeatures", "factory_kwargs": {"dims": [4]},
     "feature_dim": 4, "preprocessing": {"modality": "tabular", "__class__": "x"}},
    {"type": "eval"},
    ["factory", "os:system"],
], ids=["name-not-str", "factory-not-str", "parts-not-list", "tap-not-dict", "bad-preprocessing", "unknown-type",
     "not-a-dict"])
def test_damaged_specs_are_one_sentence_not_tracebacks(spec: Any) -> None:
    with pytest.raises(BackboneError) as err:
        build_from_spec(spec, trust_code=True)
    _one_sentence(str(err.value))


def test_hyperparameters_naming_code_need_the_opt_in_too(tmp_path: Path) -> None:
    """A loaded estimator refits from its saved hyperparameters, so they are checked like the backbone spec."""
    _saved(tmp_path / "m")
    for params in ({"backbone": "module:os:system"}, {"method_params": {"fuse": ["mlp:4-8", "module:evil:make"]}},
                   {"method_params": {"teacher": "t", "trust_code": True}}):
        _edit_meta(tmp_path / "m", hyperparameters=params)
        with pytest.raises(RunError, match="hyperparameters that name code") as err:
            TransferClassifier.load(tmp_path / "m")
        _one_sentence(str(err.value))
        assert TransferClassifier.load(tmp_path / "m", trust_code=True).get_params()["backbone"]


def test_hf_config_from_a_saved_model_cannot_steer_code() -> None:
    from transformers import BertModel

    from transferkit.backbones.hf_backbone import HFBackbone, config_from_dict

    tiny = {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "vocab_size": 40, "max_position_embeddings": 16}
    hostile = {**tiny, "auto_map": {"AutoModel": "evil/repo--modeling_evil.EvilModel"},
               "attn_implementation": "evil/kernels", "_attn_implementation": "evil/kernels",
               "quantization_config": {"quant_method": "evil"}, "trust_remote_code": True}
    cfg = config_from_dict(hostile)
    assert not hasattr(cfg, "auto_map") and getattr(cfg, "quantization_config", None) is None
    bb = HFBackbone("saved", pretrained=False, config=hostile)
    assert isinstance(bb.model, BertModel)
    with pytest.raises(BackboneError, match="cannot be rebuilt"):
        config_from_dict({**tiny, "model_type": "evil-remote-model"})


def test_tokenizer_folder_with_its_own_code_is_refused_not_run(tmp_path: Path) -> None:
    from transferkit.data.loaders import load_tokenizer

    marker = tmp_path / "ran"
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "evil_tok.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["evil_tok.EvilTokenizer", None]}}))
    (folder / "config.json").write_text(json.dumps({"model_type": "evil-model"}))
    with pytest.raises(BackboneError, match="needs its own Python code, which transferkit never runs") as err:
        load_tokenizer(str(folder))
    _one_sentence(str(err.value))
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_cli_refuses_a_model_folder_naming_code_without_trust_code(
    command: str, tmp_path: Path, hostile_module: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, marker = hostile_module
    folder = tmp_path / "model"
    _saved(folder)
    _edit_meta(folder, backbone={"type": "factory", "target": f"{module}:make"})
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}:{tmp_path / 'code'}")
    args = [str(folder), "data.csv"] if command == "evaluate" else [str(folder), str(tmp_path)]
    proc = run_cli(command, *args, "--out", str(tmp_path / "out.csv"), cwd=tmp_path, timeout=120)
    assert_user_error(proc, f"{module}:make", "--trust-code")
    assert not marker.exists()
    assert not (tmp_path / "out.csv").exists()


def test_cli_trust_code_flag_loads_a_user_factory_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    _saved(tmp_path / "model", backbone="module:tests.tiny:make_tiny")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}:{ROOT}")
    out = tmp_path / "pred.csv"
    proc = run_cli("predict", str(tmp_path / "model"), str(tmp_path / "a.png"), "--out", str(out), "--trust-code",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().count("\n") == 2  # header and one prediction
