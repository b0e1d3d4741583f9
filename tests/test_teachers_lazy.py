"""A saved-model teacher is built only when it runs: a cached-mode fit whose teacher outputs are in the feature cache
never builds the teacher, and the cache key follows the bytes of the teacher's files (issue 13, cached teacher).

Mechanics on a tiny random model and a tiny image task; what the cache saves on a real teacher (MiniLM) is measured by
benchmarks/distil_text.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save, save_file

import transferkit.backbones as backbones
from tests.tiny import TinyConvBackbone
from transferkit import TransferClassifier
from transferkit.data.base import Dataset
from transferkit.errors import RunError
from transferkit.features.cache import FeatureCache
from transferkit.model import MODEL_WEIGHTS, TransferModel, save_model
from transferkit.teachers import load_teacher, teacher_outputs, torch_kinds

CLASSES = ["a", "b", "c"]
TINY = "module:tests.tiny:make_tiny"


def _save_teacher(folder: Path) -> None:
    torch.manual_seed(0)
    model = TransferModel(TinyConvBackbone(), CLASSES)
    model.backbone.spec = lambda: {"type": "factory", "target": "tests.tiny:make_tiny", "kwargs": {}}  # type: ignore[method-assign]
    save_model(model, folder)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every build of a folder teacher's model (``load_model`` as the teacher kinds call it), by folder."""
    seen: list[str] = []
    real = torch_kinds.load_model

    def counted(folder, **kw):  # noqa: ANN001, ANN202
        seen.append(str(folder))
        return real(folder, **kw)

    monkeypatch.setattr(torch_kinds, "load_model", counted)
    return seen


def _rewrite_weights_same_size_and_mtime(folder: Path) -> None:
    """Other weights in ``model.safetensors``: same tensors' names, shapes and dtypes (so the same file size), and the
    modification time put back to the old one: what a memo keyed by (path, size, mtime) would trust."""
    path = folder / MODEL_WEIGHTS
    st = path.stat()
    state = load_file(str(path))
    name = sorted(k for k in state if k.endswith("weight"))[0]
    state[name] = state[name] + 0.5
    data = save(state)
    assert len(data) == st.st_size
    with open(path, "r+b") as fh:  # in place, so even the inode stays
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_a_folder_teacher_knows_its_classes_and_key_without_building_and_builds_once_to_run(
        blobs_images, tmp_path: Path, builds: list[str]) -> None:
    _save_teacher(tmp_path / "t")
    t = load_teacher(tmp_path / "t", trust_code=True)
    t.check_student(CLASSES, "image")
    assert t.classes == CLASSES and t.modality == "image" and t.supports_online() and t.online_problem(
        t.preprocessing) is None
    key = t.fingerprint()
    assert builds == [] and t.describe()["fingerprint"] == key
    x, y = blobs_images
    out = t.outputs(Dataset("image", x, y, CLASSES, "blobs"), batch_size=16)
    assert out.shape == (len(x), 3) and len(builds) == 1
    t.outputs(Dataset("image", x[:5], y[:5], CLASSES, "blobs"))
    assert len(builds) == 1 and t.fingerprint() == key  # built once; the same key before and after building
    with torch.no_grad():  # weights changed in memory after the build: another key
        t.module.head[1].bias[0] += 1e-3
    assert t.fingerprint() != key


def test_a_second_cached_fit_reads_the_teachers_outputs_without_building_it(blobs_images, tmp_path: Path, own_cache,
                                                                            builds: list[str]) -> None:
    _save_teacher(tmp_path / "t")
    x, y = blobs_images
    ds = Dataset("image", x, y, CLASSES, "blobs")
    params = {"teacher": str(tmp_path / "t"), "trust_code": True, "teacher_mode": "cached"}
    kw = {"backbone": TINY, "method": "kd", "method_params": params, "epochs": 2, "batch_size": 16, "progress": False,
          "seed": 0}
    first = TransferClassifier(**kw).fit(ds)
    assert len(builds) == 1 and first.fit_result_.extra["teacher"]["mode"] == "cached"
    second = TransferClassifier(**kw).fit(ds)
    assert len(builds) == 1, "a cache hit built the teacher"
    # the same seed and the same cached teacher outputs: the same student
    np.testing.assert_allclose(second.predict_proba(ds), first.predict_proba(ds), atol=1e-5)

    _rewrite_weights_same_size_and_mtime(tmp_path / "t")
    TransferClassifier(**kw).fit(ds)
    assert len(builds) == 2, "the teacher's weights changed (same size and mtime) but its cached outputs were reused"


def test_the_key_follows_the_weights_bytes_and_a_teacher_changed_while_in_use_is_refused(blobs_images, tmp_path: Path,
                                                                                        builds: list[str]) -> None:
    _save_teacher(tmp_path / "t")
    x, y = blobs_images
    ds = Dataset("image", x, y, CLASSES, "blobs")
    cache = FeatureCache(tmp_path / "cache")
    before = load_teacher(tmp_path / "t", trust_code=True)
    key, out = before.fingerprint(), teacher_outputs(before, ds, cache=cache)
    assert load_teacher(tmp_path / "t", trust_code=True).fingerprint() == key  # the same files, the same key

    _rewrite_weights_same_size_and_mtime(tmp_path / "t")
    after = load_teacher(tmp_path / "t", trust_code=True)
    assert after.fingerprint() != key
    fresh = teacher_outputs(after, ds, cache=cache)
    assert np.abs(fresh - out).max() > 1e-3  # recomputed with the new weights, not read back
    assert len(builds) == 2

    stale = load_teacher(tmp_path / "t", trust_code=True)
    stale.fingerprint()  # the key is taken ...
    _rewrite_weights_same_size_and_mtime(tmp_path / "t")  # ... then the file changes before the model is built
    with pytest.raises(RunError, match="changed while it was in use"):
        stale.outputs(ds)


@pytest.mark.slow
def test_a_catalog_teacher_with_a_head_is_not_built_on_a_cache_hit(blobs_images, tmp_path: Path, own_cache,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The packaged MobileNetV2 + a .safetensors head: the first cached fit builds it (and writes its card), the second
    reads its outputs from the cache and never builds it; a changed head is a new key (outputs recomputed)."""
    built: list[str] = []
    real = backbones.build_catalog

    def counted(name, **kw):  # noqa: ANN001, ANN202
        built.append(name)
        return real(name, **kw)

    monkeypatch.setattr(backbones, "build_catalog", counted)
    torch.manual_seed(0)
    head = tmp_path / "head.safetensors"
    save_file({"weight": torch.randn(3, 1280) * 0.05, "bias": torch.zeros(3)}, str(head))
    x, y = blobs_images
    ds = Dataset("image", x[:24], y[:24], CLASSES, "blobs")
    params = {"teacher": "mobilenet_v2.imagenet", "teacher_head": str(head), "teacher_classes": CLASSES,
              "teacher_mode": "cached"}
    kw = {"backbone": TINY, "method": "kd", "method_params": params, "epochs": 1, "batch_size": 16, "progress": False,
          "seed": 0}
    first = TransferClassifier(**kw).fit(ds)
    assert built == ["mobilenet_v2.imagenet"] and first.fit_result_.extra["teacher"]["kind"] == "catalog"
    t = load_teacher("mobilenet_v2.imagenet", head=str(head), classes=CLASSES)
    key = t.fingerprint()
    second = TransferClassifier(**kw).fit(ds)
    assert built == ["mobilenet_v2.imagenet"], "a cache hit built the catalog teacher"
    np.testing.assert_allclose(second.predict_proba(ds), first.predict_proba(ds), atol=1e-5)
    t.outputs(ds)  # running it builds it, under the same key
    assert len(built) == 2 and t.fingerprint() == key

    save_file({"weight": torch.randn(3, 1280) * 0.05, "bias": torch.ones(3)}, str(head))
    assert load_teacher("mobilenet_v2.imagenet", head=str(head), classes=CLASSES).fingerprint() != key
