"""Models from other frameworks as trainable sources: ``onnx:`` / ``keras:`` backbones, the parity check, ``convert``.

The source models are real models this project did not build in PyTorch, made here: a scikit-learn MLPClassifier
trained on sklearn's digits and converted by skl2onnx, and a small Keras 3 CNN trained (torch backend, a few seconds)
on MNIST, saved as ``.keras`` and exported by Keras to ONNX. Each parity check is shown catching a deliberately wrong
conversion (one weight perturbed, one layer dropped).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.cli_helpers import ROOT, assert_user_error, main_in_process
from transferkit.backbones import build_backbone, build_from_spec, check_blocks
from transferkit.backbones import onnx_backbone as ob
from transferkit.errors import BackboneError


# --- sources made here ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sklearn_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """An MLPClassifier (64-32-16-10) on sklearn's digits, converted by skl2onnx; its file, test inputs and labels."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a short fit is enough to be a real model
        clf = MLPClassifier((32, 16), max_iter=150, random_state=0).fit(x[:1200], y[:1200])
    path = tmp_path_factory.mktemp("skl") / "mlp.onnx"
    path.write_bytes(to_onnx(clf, x[:1], options={"zipmap": False}, target_opset=17).SerializeToString())
    return path, x[1200:], y[1200:]


@pytest.fixture(scope="module")
def keras_cnn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small Keras 3 CNN trained on 600 MNIST digits (2 epochs, torch backend), as .keras and as Keras's ONNX."""
    from transferkit.backbones.keras_backbone import import_keras
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    keras = import_keras()
    splits = load_data(DataConfig(name="mnist"))
    x = (splits.train.inputs[:600].reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, splits.train.labels[:600], epochs=2, batch_size=50, verbose=0)
    folder = tmp_path_factory.mktemp("keras")
    model.save(str(folder / "cnn.keras"))
    model.export(str(folder / "cnn.onnx"), format="onnx", verbose=False)
    return {"keras": folder / "cnn.keras", "onnx": folder / "cnn.onnx"}


def _ort_features(path: Path, tensor: str, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime's output at ``tensor`` (the backbone's cut), for comparisons made outside the backbone."""
    import onnx
    import onnxruntime as ort

    cut = ob._cut(onnx.load(str(path)), tensor)
    s = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


# --- the ONNX backbone --------------------------------------------------------------------------------------------
def test_sklearn_mlp_converts_within_tolerance_and_cuts_before_the_classifier(sklearn_onnx):
    path, x, _ = sklearn_onnx
    bb = build_backbone(f"onnx:{path}")
    assert bb.preprocessing.modality == "tabular"
    assert bb.feature_dim == 16  # the last hidden layer: the input of the final MatMul
    assert bb.parity["max_abs_diff"] <= 1e-4 and bb.parity["reference"] == "onnxruntime"
    with torch.no_grad():
        ours = bb(torch.from_numpy(x)).numpy()
    ref = _ort_features(path, bb.feature, x)
    assert np.abs(ours - ref).max() <= 1e-4
    assert np.abs(ref).max() > 0.1  # real activations, not all zeros
    check_blocks(bb, bb.blocks())
    # the biases, which onnx2pytorch keeps as buffers, train too
    assert all(p.requires_grad for p in bb.parameters()) and len(list(bb.parameters())) == 4


def test_parity_check_catches_a_perturbed_weight(sklearn_onnx, monkeypatch):
    path, _, _ = sklearn_onnx
    real = ob.convert_graph

    def wrong(model):  # a converter that gets one weight wrong
        module = real(model)
        with torch.no_grad():
            next(p for n, p in module.named_parameters() if n.endswith("weight"))[0, 0] += 0.05
        return module

    monkeypatch.setattr(ob, "convert_graph", wrong)
    with pytest.raises(BackboneError, match=r"differs from onnxruntime by up to [0-9.e-]+ on a seeded batch"):
        build_backbone(f"onnx:{path}")


def test_parity_check_catches_a_dropped_layer(sklearn_onnx, monkeypatch):
    path, _, _ = sklearn_onnx
    real = ob.convert_graph

    def drops_relu(model):  # a converter that forgets one activation
        module = real(model)
        name = next(n for n, m in module.named_children() if isinstance(m, nn.ReLU))
        setattr(module, name, nn.Identity())
        return module

    monkeypatch.setattr(ob, "convert_graph", drops_relu)
    with pytest.raises(BackboneError, match="not used"):
        build_backbone(f"onnx:{path}")


def test_convert_cli_writes_weights_and_spec_that_rebuild_without_the_source(sklearn_onnx, tmp_path, capsys):
    path, x, _ = sklearn_onnx
    out = tmp_path / "conv" / "mlp.safetensors"
    proc = main_in_process(capsys, "convert", str(path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "parity: max abs diff" in proc.stdout and "onnxruntime" in proc.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["parity"]["max_abs_diff"] <= 1e-4
    assert meta["backbone"]["stripped"], "the weights leave the embedded graph"
    from transferkit.app.convert import load_converted

    moved = tmp_path / "elsewhere.onnx"
    path.rename(moved)  # the source is gone: the two files are enough
    try:
        bb = load_converted(out)
        with torch.no_grad():
            got = bb(torch.from_numpy(x)).numpy()
        assert np.abs(got - _ort_features(moved, meta["backbone"]["feature"], x)).max() <= 1e-4
    finally:
        moved.rename(path)


def test_bad_onnx_sources_are_one_sentence(tmp_path, sklearn_onnx, capsys):
    path, _, _ = sklearn_onnx
    with pytest.raises(BackboneError, match="does not exist"):
        build_backbone(f"onnx:{tmp_path / 'missing.onnx'}")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(BackboneError, match="cannot be read as an ONNX model"):
        build_backbone(f"onnx:{junk}")
    with pytest.raises(BackboneError, match="no tensor 'nope'"):
        build_backbone(f"onnx:{path}#nope")
    proc = main_in_process(capsys, "convert", str(tmp_path / "model.pt"), "--out", str(tmp_path / "o.safetensors"))
    assert_user_error(proc, "neither an .onnx nor a .keras file")


def test_spec_rebuild_refuses_a_damaged_graph(sklearn_onnx):
    path, _, _ = sklearn_onnx
    spec = build_backbone(f"onnx:{path}").spec()
    spec["graph"] = "@@not base64@@"
    with pytest.raises(BackboneError, match="graph is damaged"):
        build_from_spec(spec)


# --- Keras ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_keras_source_passes_both_parity_checks_and_matches_its_onnx_export(keras_cnn):
    kb = build_backbone(f"keras:{keras_cnn['keras']}")
    assert set(kb.parity["checks"]) == {"onnxruntime", "keras"}
    assert kb.parity["max_abs_diff"] <= 1e-4
    assert kb.preprocessing.image_size == 28 and kb.feature_dim == 32
    obb = build_backbone(f"onnx:{keras_cnn['onnx']}")
    x = torch.rand(5, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(kb(x), obb(x), atol=1e-5)
    assert kb.spec()["origin"] == "keras"


@pytest.mark.slow
def test_keras_parity_check_catches_a_wrong_whole_graph_conversion(keras_cnn, monkeypatch):
    real = ob.convert_graph
    calls = []

    def wrong_second(model):  # the cut graph converts right; the whole graph (checked against Keras) does not
        module = real(model)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                next(p for n, p in module.named_parameters() if n.endswith("weight")).data.view(-1)[0] += 0.5
        return module

    monkeypatch.setattr(ob, "convert_graph", wrong_second)
    with pytest.raises(BackboneError, match="differs from keras by up to"):
        build_backbone(f"keras:{keras_cnn['keras']}")


@pytest.mark.slow
def test_keras_lambda_layer_is_refused_not_run(tmp_path):
    from transferkit.backbones.keras_backbone import import_keras

    keras = import_keras()
    marker = tmp_path / "ran.txt"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(2)])
    model.save(str(tmp_path / "lam.keras"))
    with pytest.raises(BackboneError, match="Lambda or other unsafe layer"):
        build_backbone(f"keras:{tmp_path / 'lam.keras'}")
    assert not marker.exists()


def test_keras_imported_with_another_backend_is_refused_in_one_sentence(monkeypatch):
    """Only the torch backend is installed here (TensorFlow and JAX are not), so the already-imported Keras of another
    backend is a stand-in module: what is tested is the refusal, before anything is loaded."""
    import types

    from transferkit.backbones.keras_backbone import import_keras

    fake = types.ModuleType("keras")
    fake.backend = types.SimpleNamespace(backend=lambda: "tensorflow")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keras", fake)
    with pytest.raises(BackboneError, match="imported with the 'tensorflow' backend in this process; start a new"):
        import_keras()


@pytest.mark.slow
def test_onnx_model_fine_tunes_as_a_backbone_and_reloads_in_a_fresh_process(keras_cnn, tmp_path):
    """The Keras-built ONNX CNN, after its parity check, fine-tuned on 500 other MNIST digits (2 epochs)."""
    from transferkit import TransferClassifier
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    splits = load_data(DataConfig(name="mnist"))
    train = splits.train.subset(np.arange(600, 1100))
    test = splits.test.subset(np.arange(400))
    clf = TransferClassifier(backbone=f"onnx:{keras_cnn['onnx']}", method="finetune", epochs=2, lr=1e-3,
                             batch_size=32, progress=False, seed=0)
    before = {n: p.detach().clone() for n, p in build_backbone(f"onnx:{keras_cnn['onnx']}").named_parameters()}
    clf.fit(train)
    acc = clf.evaluate(test)["accuracy"]
    # measured 0.63 / 0.625 / 0.69 over seeds 0-2, against 0.30 / 0.34 / 0.455 for the same architecture from random
    # init on the same budget (chance is 0.10): the threshold lies between the two, with a margin on each side
    assert acc > 0.55, acc
    moved = [n for n, p in clf.model_.backbone.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any("_initializer_" in n for n in moved), "the stored biases train as well as the weights"
    clf.save(tmp_path / "model")
    probs = clf.predict_proba(test.inputs[:64])
    np.save(tmp_path / "x.npy", test.inputs[:64])
    code = textwrap.dedent(f"""
        import numpy as np
        from transferkit import TransferClassifier
        m = TransferClassifier.load({str(tmp_path / 'model')!r})
        np.save({str(tmp_path / 'p.npy')!r}, m.predict_proba(np.load({str(tmp_path / 'x.npy')!r})))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.abs(np.load(tmp_path / "p.npy") - probs).max() < 1e-5
