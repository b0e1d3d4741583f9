"""The one fit pipeline and the method contract's entry points.

A method plug-in defined here (registered at run time, as a third-party method would be) uses each hook the
pipeline calls (``training_data``, ``fit_closed_form``, ``finish``, ``needs``); every fit builds its
:class:`FitContext` exactly once; no method runs the training loop, and no caller outside the methods and the
pipeline reads a method's flags; a saved model says how it predicts, and old model folders still load.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import transferkit
from transferkit import TransferClassifier
from transferkit.data.base import Dataset, Splits
from transferkit.errors import ConfigError, RunError
from transferkit.methods import registry
from transferkit.methods.base import FitContext, FitResult, Method
from transferkit.train import contract

SRC = Path(transferkit.__file__).parent
TINY = "module:tests.tiny:make_tiny"
TAB = dict(backbone="mlp:2", pretrained=False, lr=0.05, batch_size=8, progress=False, schedule="constant")


pytestmark = pytest.mark.usefixtures("own_cache")  # every test here reads and writes its own feature cache


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``register`` for this test only: the registry is restored afterwards."""
    registry.available_methods()  # the built-ins are registered in the real registry first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry.register


def _tabular(n: int = 48, seed: int = 0) -> Splits:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = (rng.normal(size=(n, 2)) + 3.0 * y[:, None]).astype(np.float32)
    ds = Dataset("tabular", x, y, ["a", "b"], "blobs")
    return Splits(ds.subset(range(0, 32)), ds.subset(range(32, n)))


def _images(blobs_images: tuple[np.ndarray, np.ndarray]) -> Splits:
    x, y = blobs_images
    ds = Dataset("image", x, y, ["c0", "c1", "c2"], "blobs")
    return Splits(ds.subset(range(0, 45)), ds.subset(range(45, 60)))


def test_a_plugin_trains_on_its_training_data_and_finishes_the_chosen_model(plugins) -> None:
    seen: list[int] = []

    @plugins
    class FirstHalf(Method):
        name: ClassVar[str] = "_test-first-half"
        summary: ClassVar[str] = "trains on the first half of the training split"

        def training_data(self, ctx: FitContext) -> Dataset:
            return ctx.train.subset(range(len(ctx.train) // 2))

        def training_step(self, model, batch):
            seen.append(int(batch[1].shape[0]))
            return super().training_step(model, batch)

        def finish(self, model, result: FitResult) -> None:
            result.extra["finished_on"] = sorted(model.classes)

    data = _tabular()
    clf = TransferClassifier(method="_test-first-half", epochs=1, **TAB).fit(data)
    assert sum(seen) == len(data.train) // 2  # one epoch over the method's split, not the whole one
    assert clf.fit_result_.extra["finished_on"] == ["a", "b"]
    assert clf.method_["name"] == "_test-first-half"


def test_a_closed_form_plugin_replaces_the_loop(plugins) -> None:
    @plugins
    class ZeroHead(Method):
        name: ClassVar[str] = "_test-zero-head"
        summary: ClassVar[str] = "a head of zeros, in closed form"

        def fit_closed_form(self, ctx: FitContext, val: Dataset | None) -> FitResult:
            with torch.no_grad():
                for p in ctx.model.head.parameters():
                    p.zero_()
            return FitResult(history=[{"epoch": 1, "val_rows": len(val)}], best_epoch=1,
                             best_state=ctx.model.state_dict())

        def training_step(self, model, batch):
            raise AssertionError("the loop ran although the method fits in closed form")

    data = _tabular()
    clf = TransferClassifier(method="_test-zero-head", epochs=3, **TAB).fit(data)
    assert clf.history_ == [{"epoch": 1, "val_rows": len(data.val)}]
    np.testing.assert_allclose(clf.predict_proba(data.val), 0.5)


def test_a_declared_need_is_supplied_or_the_fit_is_refused(plugins) -> None:
    got: dict[str, Any] = {}

    @plugins
    class NeedsTarget(Method):
        name: ClassVar[str] = "_test-needs-target"
        summary: ClassVar[str] = "declares the unlabelled target"
        needs: ClassVar[frozenset[str]] = frozenset({"target"})

        def setup(self, ctx: FitContext) -> None:
            got.update(ctx.extra)
            super().setup(ctx)

    src, tgt = _tabular(seed=0), _tabular(seed=1)
    with pytest.raises(ConfigError, match="Method '_test-needs-target' needs unlabelled target data"):
        TransferClassifier(method="_test-needs-target", epochs=1, **TAB).fit(src)
    TransferClassifier(method="_test-needs-target", epochs=1, **TAB).fit(src, target=tgt)
    assert got["target"].labels is None and "target_oracle" not in got  # the oracle's labels only when declared


@pytest.mark.parametrize("method, data, extra", [
    ("finetune", "tabular", {}),
    ("target-oracle", "tabular", {}),
    ("dann", "tabular", {}),
    ("probe", "images", {}),
    ("mlp-head", "images", {"head": "mlp", "head_hidden": 8}),
])
def test_every_fit_builds_its_context_exactly_once(monkeypatch, blobs_images, method, data, extra) -> None:
    built: list[FitContext] = []
    original = contract.FitContext.__init__

    def counting(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(contract.FitContext, "__init__", counting)
    if data == "tabular":
        splits, params = _tabular(), {**TAB, **extra}
    else:
        splits, params = _images(blobs_images), {"backbone": TINY, "batch_size": 16, "progress": False, **extra}
    target = _tabular(seed=1) if method in ("target-oracle", "dann") else None
    TransferClassifier(method=method, epochs=1, **params).fit(splits, target=target)
    assert len(built) == 1


def test_no_method_runs_the_loop_and_no_caller_reads_method_flags() -> None:
    for path in (SRC / "methods").glob("*.py"):
        assert not re.search(r"train\.loop|train import loop|fit_loop", path.read_text()), path
    callers = [SRC / "api.py", SRC / "cli.py", *(SRC / "app").glob("*.py")]
    for path in callers:
        text = path.read_text()
        assert not re.search(r"\.(frozen_backbone|uses_target_labels|needs)\b|method_params\[", text), path
        assert "get_method_class" not in text, path


def test_the_saved_model_says_how_it_predicts_and_old_folders_still_load(blobs_images, tmp_path: Path) -> None:
    clf = TransferClassifier(method="probe", backbone=TINY, progress=False,
                             method_params={"engine": "torch", "C": 1.0}).fit(_images(blobs_images))
    folder = clf.save(tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["inference"] == {"frozen_backbone": True, "engine": "torch"}
    reference = clf.predict_proba(_images(blobs_images).val)

    old = {k: v for k, v in meta.items() if k != "inference"}  # a folder saved before the entry existed
    (folder / "model.json").write_text(json.dumps({**old, "frozen_backbone": True}))
    loaded = TransferClassifier.load(folder, trust_code=True)
    assert loaded.model_.inference == {"frozen_backbone": True, "engine": "torch"} and loaded.frozen_backbone_
    np.testing.assert_allclose(loaded.predict_proba(_images(blobs_images).val), reference, atol=1e-5)

    (folder / "model.json").write_text(json.dumps({**meta, "inference": {"frozen_backbone": "yes"}}))
    with pytest.raises(RunError, match="'inference' must have frozen_backbone true or false"):
        TransferClassifier.load(folder, trust_code=True)
