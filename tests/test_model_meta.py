"""A damaged or hand-edited ``model.json`` is one sentence naming the file, never a KeyError deep in the rebuild."""

from __future__ import annotations

import json

import pytest

from transferkit import TransferClassifier
from transferkit.errors import RunError
from transferkit.model import load_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)).astype(np.float32), np.arange(20) % 2
    folder = tmp_path_factory.mktemp("m") / "model"
    TransferClassifier(backbone="mlp:3", epochs=1, progress=False).fit(x, y).save(folder)
    return folder


def _edit(saved, tmp_path, edit):
    import shutil

    dest = tmp_path / "copy"
    shutil.copytree(saved, dest)
    meta = json.loads((dest / "model.json").read_text())
    edit(meta)
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


EDITS = {
    "no-head": lambda m: m.pop("head"),
    "no-classes": lambda m: m.pop("classes"),
    "no-preprocessing": lambda m: m.pop("preprocessing"),
    "head-a-string": lambda m: m.update(head="linear"),
    "head-kind-unknown": lambda m: m["head"].update(kind="transformer"),
    "head-hidden-text": lambda m: m["head"].update(hidden="many"),
    "head-dropout-one": lambda m: m["head"].update(dropout=1.0),
    "one-class": lambda m: m.update(classes=["a"]),
    "duplicate-classes": lambda m: m.update(classes=["a", "a"]),
    "classes-numbers": lambda m: m.update(classes=[0, 1]),
    "image-size-negative": lambda m: m.update(image_size=-3),
}


def test_the_saved_model_loads(saved):
    assert load_model(saved).classes == ["0", "1"]


@pytest.mark.parametrize("name", EDITS)
def test_damaged_model_json_is_one_sentence(saved, tmp_path, name):
    folder = _edit(saved, tmp_path, EDITS[name])
    with pytest.raises(RunError, match="model.json' is damaged"):
        load_model(folder)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[1, 2]", b'"text"', b"{not json"])
def test_model_json_that_is_not_an_object(saved, tmp_path, content):
    folder = _edit(saved, tmp_path, lambda m: None)
    (folder / "model.json").write_bytes(content)
    with pytest.raises(RunError, match="damaged"):
        load_model(folder)
