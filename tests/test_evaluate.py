"""Tests for transferkit.evaluate: metrics against hand-computed values, figures, and the written files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from transferkit.evaluate import (
    classification_metrics,
    confusion_matrix_png,
    format_metrics_table,
    learning_curves_png,
    write_metrics_json,
    write_predictions_csv,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["cat", "dog", "fox"]
# Arg-max predictions: [cat, dog, dog, dog, fox, cat]; true: [cat, cat, dog, dog, fox, fox].
Y = np.array([0, 0, 1, 1, 2, 2])
P = np.array([
    [0.7, 0.2, 0.1],  # true cat, pred cat
    [0.1, 0.6, 0.3],  # true cat, pred dog; cat is only 3rd -> top-2 miss
    [0.1, 0.8, 0.1],  # true dog, pred dog
    [0.2, 0.5, 0.3],  # true dog, pred dog
    [0.1, 0.1, 0.8],  # true fox, pred fox
    [0.5, 0.1, 0.4],  # true fox, pred cat; fox 2nd -> top-2 hit
])


# --------------------------------------------------------------------------------------------------- metrics


def test_metrics_match_hand_computed_values():
    m = classification_metrics(Y, P, CLASSES)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class F1: cat P=1/2 R=1/2 -> 0.5; dog P=2/3 R=1 -> 0.8; fox P=1 R=1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.1, 0.8, 0.5, 0.8, 0.4])))


def test_confusion_matrix_rows_are_true_classes():
    cm = classification_metrics(Y, P, CLASSES)["confusion_matrix"]
    assert cm == [
        [1, 1, 0],  # true cat: 1 right, 1 predicted dog
        [0, 2, 0],  # true dog: both right
        [1, 0, 1],  # true fox: 1 predicted cat, 1 right
    ]
    # the asymmetric cells pin the orientation: true cat -> dog happened, true dog -> cat did not
    assert cm[0][1] == 1 and cm[1][0] == 0


def test_per_class_precision_recall_support():
    pc = classification_metrics(Y, P, CLASSES)["per_class"]
    assert list(pc) == CLASSES
    assert pc["cat"]["recall"] == pytest.approx(0.5)
    assert pc["dog"]["recall"] == pytest.approx(1.0)
    assert pc["fox"]["recall"] == pytest.approx(0.5)
    assert pc["dog"]["precision"] == pytest.approx(2 / 3)
    assert pc["fox"]["precision"] == pytest.approx(1.0)
    assert pc["dog"]["f1"] == pytest.approx(0.8)
    assert [pc[c]["support"] for c in CLASSES] == [2, 2, 2]


def test_top_k_only_below_num_classes():
    m = classification_metrics(Y, P, CLASSES, top_k=(1, 2, 5))
    assert m["top2_accuracy"] == pytest.approx(5 / 6)
    assert m["top1_accuracy"] == m["accuracy"]
    assert "top5_accuracy" not in m  # k >= C is trivially 1 and is left out
    assert not any(k.startswith("top") for k in classification_metrics(Y, P, CLASSES, top_k=()))


def test_top5_on_many_classes():
    rng = np.random.default_rng(0)
    n, c = 200, 10
    proba = rng.dirichlet(np.ones(c), size=n)
    y = rng.integers(0, c, size=n)
    m = classification_metrics(y, proba, [f"c{i}" for i in range(c)])
    ranks = (proba > proba[np.arange(n), y][:, None]).sum(axis=1)  # classes strictly more likely than the truth
    assert m["top5_accuracy"] == pytest.approx(np.mean(ranks < 5))
    assert m["accuracy"] <= m["top5_accuracy"] <= 1.0


def test_metrics_are_plain_json():
    m = classification_metrics(Y, P, CLASSES)
    assert json.loads(json.dumps(m)) == m  # no numpy scalars anywhere (json.dumps would raise on them)


def test_macro_f1_ignores_class_absent_from_labels_and_predictions():
    classes = ["a", "b", "never"]
    y = np.array([0, 1])
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    m = classification_metrics(y, proba, classes)
    assert m["macro_f1"] == pytest.approx(1.0)
    assert m["per_class"]["never"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_loss_is_clipped_not_infinite():
    m = classification_metrics(np.array([0, 1]), np.array([[0.0, 1.0], [0.0, 1.0]]), ["a", "b"])
    assert math.isfinite(m["loss"])
    assert m["loss"] == pytest.approx(-math.log(1e-15) / 2)


@pytest.mark.parametrize(
    ("y", "proba", "match"),
    [
        (np.array([], dtype=int), np.zeros((0, 3)), "0 examples"),
        (Y, P[:, :2], "columns"),
        (Y[:5], P, "labels but proba has"),
        (np.array([0, 0, 1, 1, 2, 3]), P, "outside the valid range"),
        (np.array([0, 0, 1, 1, 2, -1]), P, "outside the valid range"),
        (Y.astype(float) + 0.5, P, "integer"),
        (Y, P[0], "2-D"),
        (Y, np.where(np.eye(6, 3) > 0, np.nan, P), "NaN"),
        (Y, P - 0.5, "negative"),
    ],
)
def test_metrics_validation_errors(y, proba, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, proba, CLASSES)


def test_metrics_validation_classes_and_top_k():
    with pytest.raises(ValueError, match="unique"):
        classification_metrics(Y, P, ["cat", "cat", "fox"])
    with pytest.raises(ValueError, match="top_k"):
        classification_metrics(Y, P, CLASSES, top_k=(0,))


def test_integral_float_labels_are_accepted():
    assert classification_metrics(Y.astype(np.float32), P, CLASSES)["accuracy"] == pytest.approx(4 / 6)


# --------------------------------------------------------------------------------------------------- plots


def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    return img.shape[1], img.shape[0]  # width, height


def test_confusion_matrix_png(tmp_path):
    cm = classification_metrics(Y, P, CLASSES)["confusion_matrix"]
    out = tmp_path / "sub" / "cm.png"
    confusion_matrix_png(cm, CLASSES, out, title="val")
    w, h = _png_size(out)
    assert 300 <= w <= 1500 and 300 <= h <= 1500
    assert [p.name for p in out.parent.iterdir()] == ["cm.png"]  # no temp file left behind


def test_confusion_matrix_png_grows_with_classes_and_handles_empty_rows(tmp_path):
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    confusion_matrix_png(np.eye(3, dtype=int) * 5, CLASSES, small)
    classes = [f"a rather long class name number {i}" for i in range(25)]
    cm = np.zeros((25, 25), dtype=int)
    cm[:20, :20] = np.random.default_rng(0).integers(0, 9, size=(20, 20))  # 5 classes with no examples at all
    confusion_matrix_png(cm, classes, big, normalize=False)
    (ws, hs), (wb, hb) = _png_size(small), _png_size(big)
    assert wb > ws * 2 and hb > hs * 2
    assert wb <= 110 * 24 and hb <= 110 * 24  # capped


def test_confusion_matrix_png_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="square"):
        confusion_matrix_png(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="classes"):
        confusion_matrix_png(np.zeros((3, 3)), ["a", "b"], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


HISTORY = [
    {"epoch": 1, "train_loss": 1.2, "train_accuracy": 0.55, "val_loss": 0.9, "val_accuracy": 0.70,
     "val_macro_f1": 0.66, "lr": 1e-3},
    {"epoch": 2, "train_loss": 0.7, "train_accuracy": 0.78, "val_loss": 0.6, "val_accuracy": 0.82,
     "val_macro_f1": 0.80, "lr": 8e-4},
    {"epoch": 3, "train_loss": 0.5, "train_accuracy": 0.85, "val_loss": 0.65, "val_accuracy": 0.81,
     "val_macro_f1": None, "lr": 3e-4},
    {"epoch": 4, "train_loss": 0.4, "val_loss": 0.7, "val_accuracy": 0.80, "lr": 0.0},
]


def test_learning_curves_png(tmp_path):
    out = tmp_path / "curves.png"
    learning_curves_png(HISTORY, out)
    w, h = _png_size(out)
    assert (w, h) == (1100, 462)  # 10 x 4.2 inches at 110 dpi
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


@pytest.mark.parametrize(
    "history",
    [
        [{"epoch": 1, "train_loss": 0.9}],  # a single epoch, no validation, no accuracy
        [{"train_loss": 0.9, "val_loss": None}, {"train_loss": 0.5, "val_loss": None}],  # no epoch key
        [{"epoch": 1}, {"epoch": 2}],  # nothing recorded at all
    ],
)
def test_learning_curves_tolerate_missing_values(tmp_path, history):
    out = tmp_path / "curves.png"
    learning_curves_png(history, out, best_epoch=1)
    assert _png_size(out) == (1100, 462)


def test_learning_curves_reject_empty_history(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        learning_curves_png([], tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_savefig_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    def broken_savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(PNG_MAGIC + b"half a picture")
        raise OSError("disk full")

    old = tmp_path / "keep.png"
    old.write_bytes(b"old contents")
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        confusion_matrix_png(np.eye(3, dtype=int), CLASSES, tmp_path / "cm.png")
    with pytest.raises(OSError, match="disk full"):
        learning_curves_png(HISTORY, tmp_path / "curves.png")
    with pytest.raises(OSError, match="disk full"):
        learning_curves_png(HISTORY, old)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]
    assert old.read_bytes() == b"old contents"  # the previous file survives a failed overwrite


def test_plots_do_not_use_pyplot(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from transferkit.evaluate import confusion_matrix_png, learning_curves_png\n"
        f"confusion_matrix_png(np.eye(2, dtype=int), ['a', 'b'], {str(tmp_path / 'cm.png')!r})\n"
        f"learning_curves_png([{{'epoch': 1, 'train_loss': 1.0}}], {str(tmp_path / 'lc.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert 'torch' not in sys.modules\n"
    )
    src = Path(__file__).resolve().parents[1] / "src"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(src), "MPLBACKEND": "TkAgg"})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cm.png").exists() and (tmp_path / "lc.png").exists()


# --------------------------------------------------------------------------------------------------- files


def test_predictions_csv_round_trips_with_pandas(tmp_path):
    ids = ["img/1.png", 'a "quoted", comma', "x"]
    proba = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.4, 0.4, 0.2]])  # last row: a tie -> lower index wins
    out = tmp_path / "predictions.csv"
    write_predictions_csv(out, ids, proba, ["cat", "dog, big", "fox"], top_k=2)
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ["input", "predicted", "probability", "top2", "top2_probability"]
    assert df["input"].tolist() == ids
    assert df["predicted"].tolist() == ["fox", "cat", "cat"]
    assert df["top2"].tolist() == ["dog, big", "dog, big", "dog, big"]
    assert df["probability"].tolist() == [0.5, 0.6, 0.4]  # exact: written at full precision
    assert df["top2_probability"].tolist() == [0.3, 0.3, 0.4]
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_predictions_csv_default_columns_and_validation(tmp_path):
    out = tmp_path / "p.csv"
    write_predictions_csv(out, ["a", "b"], np.array([[0.9, 0.1], [0.3, 0.7]]), ["neg", "pos"])
    df = pd.read_csv(out)
    assert list(df.columns) == ["input", "predicted", "probability"]
    assert df["predicted"].tolist() == ["neg", "pos"]
    with pytest.raises(ValueError, match="top_k"):
        write_predictions_csv(out, ["a", "b"], np.array([[0.9, 0.1], [0.3, 0.7]]), ["neg", "pos"], top_k=3)
    with pytest.raises(ValueError, match="ids"):
        write_predictions_csv(out, ["a"], np.array([[0.9, 0.1], [0.3, 0.7]]), ["neg", "pos"])
    with pytest.raises(ValueError, match="columns"):
        write_predictions_csv(out, ["a", "b"], np.array([[0.9, 0.1], [0.3, 0.7]]), ["neg", "pos", "x"])


def test_write_metrics_json_round_trips(tmp_path):
    metrics = {"val": classification_metrics(Y, P, CLASSES), "test": {"accuracy": np.float32(0.5), "n": np.int64(3)}}
    out = tmp_path / "metrics.json"
    write_metrics_json(out, metrics)
    back = json.loads(out.read_text())
    assert back["val"] == metrics["val"]
    assert back["test"] == {"accuracy": 0.5, "n": 3}


def test_format_metrics_table():
    table = format_metrics_table({
        "val": classification_metrics(Y, P, CLASSES),
        "test": {"accuracy": 0.9275, "n": 400},
    })
    lines = table.splitlines()
    assert lines[0].split() == ["split", "accuracy", "macro-F1", "loss", "n"]
    assert lines[1].split()[:3] == ["val", "0.6667", f"{(0.5 + 0.8 + 2 / 3) / 3:.4f}"]
    assert lines[1].split()[-1] == "6"
    assert lines[2].split() == ["test", "0.9275", "-", "-", "400"]
    assert len({len(line) for line in lines[:2]}) == 1  # columns line up


def test_long_class_names_keep_both_ends():
    from transferkit.evaluate.plots import _short

    short = _short("a rather long class name number 12")
    assert len(short) <= 24 and short.startswith("a rather") and short.endswith("number 12")
    assert _short("cat") == "cat"


@pytest.mark.parametrize("seed", range(12))
def test_classification_metrics_equal_sklearn_bit_for_bit(seed: int) -> None:
    """The numpy metrics are scikit-learn's: same numbers to the last bit, with absent classes, ties and top-k."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    from transferkit.evaluate.metrics import classification_metrics

    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    n = int(rng.integers(1, 300))
    y = rng.integers(0, max(1, k - int(rng.integers(0, 2))), size=n)  # sometimes a class never occurs
    logits = rng.normal(size=(n, k))
    if seed % 3 == 0:
        logits = np.round(logits)  # ties between scores
    if seed % 4 == 1:
        logits[:, -1] -= 50  # a class never predicted
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    classes = [f"c{i}" for i in range(k)]
    m = classification_metrics(y, p, classes, top_k=(1, 2, 3, 5))
    y_pred = p.argmax(1)
    labels = np.arange(k)
    assert m["accuracy"] == float(accuracy_score(y, y_pred))
    assert m["macro_f1"] == float(f1_score(y, y_pred, average="macro", zero_division=0))
    for t in (2, 3, 5):
        if t < k:
            assert m[f"top{t}_accuracy"] == float(top_k_accuracy_score(y, p, k=t, labels=labels))
    prec, rec, f1, support = precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=0)
    for i, name in enumerate(classes):
        assert m["per_class"][name] == {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                                        "support": int(support[i])}
    assert m["confusion_matrix"] == confusion_matrix(y, y_pred, labels=labels).tolist()
