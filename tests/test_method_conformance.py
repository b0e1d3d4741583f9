"""Every registered method honours the method contract: one test, parametrised over ``available_methods()``.

A new method (a built-in one in ``methods.registry.BUILTIN_METHODS`` or a third-party ``@register``) is covered
without editing any list here: it is built with its defaults, fitted for one epoch (the loop's training steps, or
its closed-form fit) through the public estimator on a tiny random image model and 60 tiny images, with target data
supplied for the methods that adapt to one, saved and reloaded with identical predictions, and every constraint its
``Params`` declares refuses a value that breaks it with the toolkit's one-sentence ConfigError naming the key.

The tiny backbone keeps a 'pretrained' source head (off the module tree, as the real adapters do) so that methods
that distil the source classifier (``lwf``) have one. A parameter a method cannot default (the ``teacher`` of
``soft-targets`` and ``kd``: its ``Params`` field declares ``required``) gets a value from :data:`REQUIRED`, which fails
loudly with the field's name when a new required parameter has no entry.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

from tests.tiny import TinyConvBackbone
from transferkit import TransferClassifier
from transferkit.config import constraint_of
from transferkit.data.base import Dataset
from transferkit.errors import ConfigError
from transferkit.methods import available_methods, create_method, get_method_class

TINY = "module:tests.test_method_conformance:make_tiny_with_source_head"
CLASSES = ["a", "b", "c"]


class TinyWithSourceHead(TinyConvBackbone):
    """The tiny backbone plus a 'pretrained' 5-class source classifier, kept off the module tree."""

    def __init__(self) -> None:
        super().__init__()
        self.__dict__["_source_head"] = nn.Linear(16, 5)

    def source_head(self) -> nn.Module:
        return self.__dict__["_source_head"]


def make_tiny_with_source_head() -> TinyWithSourceHead:
    return TinyWithSourceHead()


def _teacher(tmp_path: Path, source: Dataset) -> dict[str, Any]:
    """A saved one-epoch model on the same classes (its backbone is this module's factory: trusted code)."""
    TransferClassifier(backbone=TINY, epochs=1, batch_size=16, progress=False).fit(source).save(tmp_path / "teacher")
    return {"teacher": str(tmp_path / "teacher"), "trust_code": True}


#: values for parameters a method cannot default (``param(required=...)``): field name -> method_params to add
REQUIRED: dict[str, Callable[[Path, Dataset], dict[str, Any]]] = {"teacher": _teacher}


def _data(blobs_images: tuple[np.ndarray, np.ndarray]) -> tuple[Dataset, Dataset]:
    """The labelled source, and a labelled target (the same task, brightness inverted) for methods that want one."""
    x, y = blobs_images
    source = Dataset("image", x, y, CLASSES, "blobs")
    target = Dataset("image", (255 - x).astype(np.uint8), y, CLASSES, "blobs-inverted")
    return source, target


def _constrained(cls: type) -> list[tuple[str, Any]]:
    return [(f.name, c) for f in dataclasses.fields(cls.Params) if (c := constraint_of(f)) is not None]


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_method_builds_fits_round_trips_and_refuses_bad_parameters(name: str, blobs_images, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERKIT_CACHE_DIR", str(tmp_path / "cache"))
    cls = get_method_class(name)
    assert cls.name == name and cls.summary, f"{name}: the registry entry and the class disagree"
    source, target = _data(blobs_images)

    # built with its defaults (plus what it cannot default)
    params: dict[str, Any] = {}
    for field_name, c in _constrained(cls):
        if c.required is not None:
            assert field_name in REQUIRED, f"{name}: give the test a value for required parameter '{field_name}'"
            params.update(REQUIRED[field_name](tmp_path, source))
    assert create_method(name, params).name == name

    # one epoch through the public estimator (the loop, or the method's own closed-form fit)
    clf = TransferClassifier(backbone=TINY, method=name, method_params=params, epochs=1, batch_size=16,
                             progress=False)
    clf.fit(source, target=target)
    assert clf.history_ and all(np.isfinite(v) for v in clf.history_[-1].values() if isinstance(v, float))

    # saved and reloaded: the same predictions
    clf.save(tmp_path / "model")
    again = TransferClassifier.load(tmp_path / "model", trust_code=True)
    np.testing.assert_allclose(again.predict_proba(source), clf.predict_proba(source), atol=1e-5)

    # every declared constraint refuses a value that breaks it, naming the key; a method without one refuses an
    # unknown key the same way
    checks = [(f, c.violation()) for f, c in _constrained(cls)] or [("not_a_parameter", 1)]
    for field_name, bad in checks:
        with pytest.raises(ConfigError, match=f"model.method_params.{field_name}") as err:
            create_method(name, {**params, field_name: bad})
        assert "\n" not in str(err.value) and str(err.value).endswith((".", "?"))


def test_looking_up_one_method_imports_only_its_module() -> None:
    """``probe`` does not pay for DANN, LoRA or self-training's augmentation presets (a fresh interpreter)."""
    code = ("import sys; from transferkit.methods import get_method_class; get_method_class('probe'); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('transferkit.methods.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "transferkit.methods.feature_heads" in out
    for other in ("dann", "cdan", "lora", "self_training", "delta", "soft_targets", "kd", "domain_baselines"):
        assert f"transferkit.methods.{other}" not in out, out


def test_an_unknown_method_name_lists_every_method_without_importing_them() -> None:
    with pytest.raises(ConfigError, match="did you mean 'probe'.*available methods: .*self-training"):
        get_method_class("prboe")
