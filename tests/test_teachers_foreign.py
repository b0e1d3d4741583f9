"""Teachers from other frameworks: ONNX files (a scikit-learn model converted by skl2onnx, a torch export), Keras 3
files (trained here on the torch backend) and their refusals. Outputs are checked against each framework's own
prediction on real data (sklearn's breast-cancer and digits sets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression

from tests.tiny import TinyConvBackbone
from transferkit.data.base import Dataset
from transferkit.errors import ConfigError
from transferkit.model import TransferModel
from transferkit.teachers import load_teacher, teacher_outputs
from transferkit.teachers.foreign import OnnxTeacher
from transferkit.train.inference import predict_logits


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32), y.astype(np.int64)


def _to_onnx(est, x: np.ndarray, path: Path, zipmap: bool) -> Path:
    from skl2onnx import to_onnx

    onx = to_onnx(est, x[:1], options={id(est): {"zipmap": zipmap}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(onx.SerializeToString())
    return path


@pytest.mark.parametrize("zipmap", [False, True])
def test_an_skl2onnx_model_teaches_what_scikit_learn_predicts(cancer, tmp_path: Path, zipmap: bool) -> None:
    x, y = cancer
    est = LogisticRegression(max_iter=300).fit(x[:300], y[:300])
    path = _to_onnx(est, x, tmp_path / "lr.onnx", zipmap)
    t = load_teacher(str(path), classes=["malignant", "benign"])
    assert t.kind == "onnx" and t.modality == "tabular" and not t.supports_online()
    ds = Dataset("tabular", x[300:], y[300:], ["malignant", "benign"], "cancer")
    out = t.outputs(ds, batch_size=50)
    np.testing.assert_allclose(np.exp(out), est.predict_proba(x[300:]), atol=1e-4)
    t.check_student(["malignant", "benign"], "tabular")
    with pytest.raises(ConfigError, match="takes tabular inputs but the data is image"):
        t.check_student(["malignant", "benign"], "image")


def test_the_onnx_fingerprint_follows_the_file_bytes_and_the_preprocessing(cancer, tmp_path: Path) -> None:
    x, y = cancer
    a = _to_onnx(LogisticRegression(max_iter=300).fit(x[:200], y[:200]), x, tmp_path / "a.onnx", False)
    b = _to_onnx(LogisticRegression(max_iter=300, C=0.01).fit(x[:200], y[:200]), x, tmp_path / "b.onnx", False)
    fa = OnnxTeacher(a).fingerprint()
    assert fa == OnnxTeacher(a).fingerprint() != OnnxTeacher(b).fingerprint()
    (tmp_path / "a.onnx.json").write_text(json.dumps({"output": "logits"}))  # the sidecar is part of the key
    assert OnnxTeacher(a).fingerprint() != fa
    (tmp_path / "a.onnx.json").write_text(json.dumps({"colour": "red"}))
    with pytest.raises(ConfigError, match="Unknown teacher preprocessing key 'colour'"):
        OnnxTeacher(a)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot be read as an ONNX model"):
        load_teacher(str(tmp_path / "bad.onnx"))


def test_a_torch_image_model_exported_to_onnx_matches_its_logits_with_a_sidecar(blobs_images, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TransferModel(TinyConvBackbone(), ["a", "b", "c"]).eval()
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    (tmp_path / "tiny.onnx.json").write_text(json.dumps({"mean": [0.5] * 3, "std": [0.5] * 3,
                                                         "classes": ["a", "b", "c"]}))
    t = load_teacher(str(path))
    assert t.modality == "image" and t.spec["layout"] == "NCHW" and t.spec["image_size"] == 16
    x, y = blobs_images
    ds = Dataset("image", x, y, ["a", "b", "c"], "blobs")
    np.testing.assert_allclose(t.outputs(ds, batch_size=16), predict_logits(model, ds), atol=1e-4)


@pytest.mark.slow
def test_a_keras_model_teaches_what_keras_predicts_and_a_lambda_layer_is_refused(tmp_path: Path) -> None:
    from transferkit.teachers.foreign import _import_keras

    keras = _import_keras()
    x, y = load_digits(return_X_y=True)
    images = (x.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images[:300, :, :, None] / 255.0, y[:300], epochs=1, batch_size=64, verbose=0)
    model.save(tmp_path / "cnn.keras")
    t = load_teacher(str(tmp_path / "cnn.keras"))
    assert t.kind == "keras" and t.modality == "image" and t.spec["channels"] == 1 and t.spec["image_size"] == 8
    classes = [str(i) for i in range(10)]
    ds = Dataset("image", images[300:400], y[300:400], classes, "digits")
    want = model.predict(images[300:400, :, :, None] / 255.0, verbose=0)
    np.testing.assert_allclose(np.exp(teacher_outputs(t, ds, cache=False)), want, atol=1e-4)

    lam = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda v: v * 2), keras.layers.Dense(2)])
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(ConfigError, match="Lambda layer.*refuses") as err:
        load_teacher(str(tmp_path / "lambda.keras"))
    assert "\n" not in str(err.value)
