"""The `kd` method's mechanics: per-row targets through the loader, the cached-mode loss, modes and refusals.

Tiny models and small real tabular data (sklearn's breast-cancer set); what a teacher teaches on real data is shown in
test_kd_real.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from tests.tiny import TinyConvBackbone
from transferkit import TransferClassifier
from transferkit.backbones import build_backbone
from transferkit.config import ModelConfig, TrainConfig
from transferkit.data.base import Dataset
from transferkit.data.loaders import make_loader
from transferkit.data.preprocessing import Preprocessing
from transferkit.errors import ConfigError, DataError
from transferkit.methods import create_method
from transferkit.model import TransferModel
from transferkit.teachers.foreign import CallableTeacher
from transferkit.train.contract import FitContext

CLASSES = ["benign", "malignant"]


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), (1 - y).astype(np.int64)  # 0 = benign, 1 = malignant


def test_the_loader_yields_per_row_targets_in_the_order_the_labels_would_come() -> None:
    n = 23
    ds = Dataset("tabular", np.zeros((n, 2), np.float32), np.arange(n), [str(i) for i in range(n)], "rows")
    targets = np.stack([np.arange(n), -np.arange(n)], 1).astype(np.float32)
    with_t = ds.with_targets(targets)
    w = np.linspace(0.1, 2.0, n)
    pre = Preprocessing("tabular")
    for kw in ({"train": False}, {"train": True, "epoch": 3, "weights": w}, {"train": True, "epoch": 1}):
        plain = [y for _, y in make_loader(ds, pre, image_size=None, batch_size=4, seed=7, **kw)]
        carried = [y for _, y in make_loader(with_t, pre, image_size=None, batch_size=4, seed=7, **kw)]
        assert len(plain) == len(carried)
        for a, b in zip(plain, carried, strict=True):
            assert b.dtype == torch.float32 and b.shape == (len(a), 2)
            torch.testing.assert_close(b[:, 0].long(), a)
    sub = with_t.subset([5, 2])
    np.testing.assert_array_equal(sub.meta["targets"][:, 0], [5, 2])
    assert "rows_of" not in sub.meta and with_t.meta["rows_of"] is ds
    bad = Dataset("tabular", ds.inputs, ds.labels, ds.classes, "bad", {"targets": np.zeros((3, 2))})
    with pytest.raises(DataError, match="one row per example"):
        make_loader(bad, pre, image_size=None, batch_size=4, train=True)


def _tabular_ctx(x: np.ndarray, y: np.ndarray, **extra: Dataset) -> FitContext:
    torch.manual_seed(0)
    model = TransferModel(build_backbone(f"mlp:{x.shape[1]}-8"), CLASSES)
    return FitContext(model, Dataset("tabular", x, y, CLASSES, "cancer"), ModelConfig(), TrainConfig(),
                      extra=dict(extra))


def test_cached_mode_loss_matches_hand_computation_and_unlabelled_rows_only_distil(cancer) -> None:
    x, y = cancer[0][:40], cancer[1][:40]
    w = np.random.default_rng(0).normal(size=(x.shape[1], 2)).astype(np.float32)
    teacher = CallableTeacher(lambda b: b @ w, classes=CLASSES, output="logits", fingerprint="linear-w0")
    unl = Dataset("tabular", cancer[0][40:50], None, CLASSES, "unlabelled")
    ctx = _tabular_ctx(x, y, unlabelled=unl)
    m = create_method("kd", {"teacher": teacher, "alpha": 0.3, "temperature": 3.0})
    train = m.training_data(ctx)
    m.setup(ctx)
    assert m.teacher_record["mode"] == "cached" and len(train) == 50
    t = train.meta["targets"]
    np.testing.assert_array_equal(t[:40, 0], y)
    assert (t[40:, 0] == -1).all()
    np.testing.assert_allclose(t[:, 1:], np.concatenate([x, unl.inputs]) @ w, rtol=1e-5, atol=1e-5)
    rows = [0, 1, 2, 41, 45]
    xb, yb = torch.from_numpy(train.inputs[rows]), torch.from_numpy(t[rows])
    model = ctx.model.eval()
    loss = m.training_step(model, (xb, yb)).loss
    zs, zt = model(xb), yb[:, 1:]
    kd = 9.0 * F.kl_div(F.log_softmax(zs / 3, 1), F.softmax(zt / 3, 1), reduction="batchmean")
    want = 0.7 * F.cross_entropy(zs[:3], yb[:3, 0].long()) + 0.3 * kd
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_an_estimator_teaches_from_python_and_the_model_saves_and_reloads(cancer, tmp_path: Path, own_cache) -> None:
    x, y = cancer
    est = LogisticRegression(max_iter=500).fit(x[:200], y[:200])
    kw = {"backbone": f"mlp:{x.shape[1]}-16", "epochs": 2, "batch_size": 32, "progress": False}
    clf = TransferClassifier(method="kd", method_params={"teacher": est}, **kw).fit(x[200:300], y[200:300])
    assert clf.fit_result_.extra["teacher"]["mode"] == "cached"
    assert clf.fit_result_.extra["teacher"]["kind"] == "sklearn"
    clf.save(tmp_path / "m")
    again = TransferClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(x[:20]), clf.predict_proba(x[:20]), atol=1e-5)
    assert '"teacher": "<LogisticRegression>"' in (tmp_path / "m" / "model.json").read_text()
    unl = Dataset("tabular", x[300:360], None, ["0", "1"], "unlabelled")  # rows only the teacher labels
    clf = TransferClassifier(method="kd", method_params={"teacher": est}, **kw).fit(x[200:300], y[200:300],
                                                                                   extra={"unlabelled": unl})
    assert clf.fit_result_.extra["teacher"]["unlabelled_rows"] == 60


def test_the_second_fit_reads_the_teachers_outputs_from_the_cache(cancer, own_cache) -> None:
    x, y = cancer
    calls = []

    def fn(b: np.ndarray) -> np.ndarray:
        calls.append(len(b))
        return np.stack([-b[:, 0], b[:, 0]], 1)

    kw = {"backbone": f"mlp:{x.shape[1]}-8", "epochs": 1, "batch_size": 32, "progress": False, "method": "kd"}
    teacher = CallableTeacher(fn, fingerprint="first-feature-v1")
    for _ in range(2):
        TransferClassifier(method_params={"teacher": teacher}, **kw).fit(x[:100], y[:100])
    assert sum(calls) == 100
    uncached = CallableTeacher(fn)  # no fingerprint: recomputed every fit
    for _ in range(2):
        TransferClassifier(method_params={"teacher": uncached}, **kw).fit(x[:100], y[:100])
    assert sum(calls) == 300


def test_kd_refuses_bad_teachers_and_modes_in_one_sentence(cancer) -> None:
    x, y = cancer[0][:30], cancer[1][:30]
    three = CallableTeacher(lambda b: np.zeros((len(b), 3)))
    cases = [
        ({"teacher": three}, "gives 3 scores per example but the data has 2 classes"),
        ({"teacher": CallableTeacher(lambda b: b[:, :2], classes=["a", "b"])}, "same label set"),
        ({"teacher": LogisticRegression().fit(x, y), "teacher_mode": "online"}, "use teacher_mode: cached"),
    ]
    for params, match in cases:
        m = create_method("kd", params)
        with pytest.raises(ConfigError, match=match) as err:
            m.training_data(_tabular_ctx(x, y))
        assert "\n" not in str(err.value)
    ctx = _tabular_ctx(x, y)
    ctx.train_config = TrainConfig(mixup_alpha=0.2)
    with pytest.raises(ConfigError, match="cannot follow mixup"):
        create_method("kd", {"teacher": LogisticRegression().fit(x, y)}).training_data(ctx)
    image_teacher = TransferModel(TinyConvBackbone(), CLASSES)
    with pytest.raises(ConfigError, match="takes image inputs but the data is tabular"):
        create_method("kd", {"teacher": image_teacher}).training_data(_tabular_ctx(x, y))
