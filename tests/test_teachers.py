"""The teacher contract (transferkit.teachers): loading each kind, fingerprints, the cached mode, batch adaptation.

Mechanics on tiny random models and small real data; the claims about what a teacher teaches are in test_kd*.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.tiny import TinyConvBackbone
from transferkit.data.base import Dataset
from transferkit.data.preprocessing import Preprocessing
from transferkit.errors import ConfigError, RunError
from transferkit.features.cache import FeatureCache
from transferkit.model import TransferModel, save_model
from transferkit.teachers import Teacher, TorchTeacher, load_teacher, teacher_outputs

CLASSES = ["a", "b", "c"]


def _saved_tiny(folder: Path, seed: int = 0) -> TransferModel:
    torch.manual_seed(seed)
    model = TransferModel(TinyConvBackbone(), CLASSES)
    model.backbone.spec = lambda: {"type": "factory", "target": "tests.tiny:make_tiny", "kwargs": {}}  # type: ignore[method-assign]
    save_model(model, folder)
    return model


def test_a_saved_model_folder_is_a_torch_teacher_whose_logits_match(blobs_images, tmp_path: Path) -> None:
    model = _saved_tiny(tmp_path / "t")
    with pytest.raises(RunError, match="trust_code"):  # a saved model is data: its own code needs the opt-in
        load_teacher(tmp_path / "t")
    t = load_teacher(str(tmp_path / "t"), trust_code=True)
    assert isinstance(t, TorchTeacher) and t.kind == "transferkit" and t.classes == CLASSES and t.supports_online()
    assert t.modality == "image" and all(not p.requires_grad for p in t.module.parameters())
    x, y = blobs_images
    ds = Dataset("image", x, y, CLASSES, "blobs")
    out = t.outputs(ds, batch_size=16)
    model.eval()
    from transferkit.train.inference import predict_logits

    np.testing.assert_allclose(out, predict_logits(model, ds), atol=1e-5)
    assert load_teacher(t) is t


def test_the_fingerprint_changes_when_the_weights_do_and_only_then(tmp_path: Path) -> None:
    _saved_tiny(tmp_path / "t")
    a = load_teacher(tmp_path / "t", trust_code=True)
    b = load_teacher(tmp_path / "t", trust_code=True)
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.module.head[1].bias[0] += 1e-3
    assert a.fingerprint() != b.fingerprint()


def test_adapt_batch_converts_normalisation_and_size_and_refuses_other_tokenizers(tmp_path: Path) -> None:
    _saved_tiny(tmp_path / "t")
    t = load_teacher(tmp_path / "t", trust_code=True)
    student = Preprocessing("image", image_size=12, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x = torch.rand(4, 3, 12, 12)
    want = (F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True) - 0.5) / 0.5
    torch.testing.assert_close(t.adapt_batch(x, student, 12), want)
    same = Preprocessing("image", image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert t.adapt_batch(x, same, 16) is x
    with pytest.raises(ConfigError, match="teacher_mode: cached"):
        t.adapt_batch(x, Preprocessing("text", tokenizer="x"), None)


def test_a_catalog_backbone_uses_its_source_head_or_the_head_given(tmp_path: Path) -> None:
    t = load_teacher("mobilenet_v2.imagenet")
    assert t.kind == "catalog" and len(t.classes) == 1000 and t.classes[0] == "tench"
    with pytest.raises(ConfigError, match="no classifier of its own"):
        load_teacher("digits-cnn")
    from safetensors.torch import save_file

    save_file({"weight": torch.randn(3, 768), "bias": torch.zeros(3)}, str(tmp_path / "head.safetensors"))
    h = load_teacher("digits-cnn", head=str(tmp_path / "head.safetensors"), classes=CLASSES)
    assert h.classes == CLASSES and h.module.head[1].weight.shape == (3, 768)
    with pytest.raises(ConfigError, match="takes 768-d features but 'mobilenet_v2.imagenet' gives 1280-d"):
        load_teacher("mobilenet_v2.imagenet", head=str(tmp_path / "head.safetensors"))


@pytest.mark.parametrize("spec, match", [
    ("no/such/folder", "does not exist"), ("missing.onnx", "does not exist"), ("missing.keras", "does not exist"),
    ("", "empty"),
])
def test_bad_teacher_specs_are_one_sentence(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        load_teacher(spec)
    assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_student_checks_refuse_wrong_classes_and_modality(tmp_path: Path) -> None:
    _saved_tiny(tmp_path / "t")
    t = load_teacher(tmp_path / "t", trust_code=True)
    t.check_student(CLASSES, "image")
    with pytest.raises(ConfigError, match="predicts 3 classes but the data has 2"):
        t.check_student(["a", "b"], "image")
    with pytest.raises(ConfigError, match="same label set, in the same order"):
        t.check_student(["c", "b", "a"], "image")
    with pytest.raises(ConfigError, match="takes image inputs but the data is text"):
        t.check_student(CLASSES, "text")


class _Counting(Teacher):
    """A teacher that counts its calls (for the cache's read-back)."""

    kind = "callable"
    name = "counting"

    def __init__(self, shift: float = 0.0) -> None:
        self.calls = 0
        self.shift = shift

    def fingerprint(self) -> str:
        return f"counting-{self.shift}"

    def outputs(self, ds: Dataset, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.calls += 1
        x = np.asarray(ds.inputs, dtype=np.float32)
        return np.stack([x[:, 0] + self.shift, -x[:, 0]], axis=1)


def test_teacher_outputs_are_cached_keyed_by_teacher_and_inputs_not_labels(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    ds = Dataset("tabular", x, np.arange(20) % 2, ["n", "p"], "t")
    t = _Counting()
    first = teacher_outputs(t, ds, cache=cache)
    again = teacher_outputs(t, Dataset("tabular", x, 1 - np.arange(20) % 2, ["n", "p"], "t"), cache=cache)
    np.testing.assert_array_equal(first, again)
    assert t.calls == 1 and len(cache.entries()) == 1 and cache.entries()[0]["backbone"] == "teacher:callable:counting"
    other = _Counting(shift=1.0)
    assert not np.array_equal(teacher_outputs(other, ds, cache=cache), first) and other.calls == 1
    teacher_outputs(t, ds.subset(range(10)), cache=cache)
    assert t.calls == 2 and len(cache.entries()) == 3
    assert teacher_outputs(t, ds, cache=False).shape == (20, 2) and t.calls == 3
