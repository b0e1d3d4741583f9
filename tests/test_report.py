"""report.html: what the builder makes of a folder's files (escaping, any script, missing and damaged files, folder
kinds), what a fit records for it, ``transferkit report``, and the report of a real comparison folder.

The browser checks of a real run's report are in tests/test_report_browser.py.
"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import yaml

from tests.cli_helpers import ROOT, assert_user_error, main_in_process
from transferkit.data.base import Dataset
from transferkit.evaluate.metrics import calibration_error
from transferkit.report import build_report, record_predictions, register_kind, section, write_report
from transferkit.report import registry as report_registry
from transferkit.report.html import data_uri

CLASSES = ["<script>alert(1)</script>", "猫", "قطة", 'a "quoted" & <b>bold</b> name']


def _run_folder(tmp_path, classes=CLASSES):
    """A run folder's JSON files as app/fit.py writes them (no model: the builder never reads one)."""
    folder = tmp_path / "run"
    folder.mkdir(parents=True)
    n = len(classes)
    cm = (np.eye(n, dtype=int) * 8 + 1).tolist()
    per_class = {c: {"precision": 0.5 + i / 10, "recall": 0.9 - i / 10, "f1": 0.6 + (i % 2) / 10, "support": 8 + n - 1}
                 for i, c in enumerate(classes)}
    test = {"accuracy": 0.8, "macro_f1": 0.75, "top5_accuracy": 1.0, "loss": 0.5, "n": int(np.sum(cm)),
            "per_class": per_class}
    (folder / "metrics.json").write_text(json.dumps({"val": {"accuracy": 0.7, "macro_f1": 0.6, "n": 10},
                                                     "test": test}))
    (folder / "confusion_matrix.json").write_text(json.dumps({"split": "test", "classes": classes, "matrix": cm}))
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5 + e / 10,
                "val_accuracy": 0.5 + e / 12} for e in (1, 2, 3)]
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "summary.json").write_text(json.dumps({"method": {"name": "probe", "params": {"C": None}},
                                                     "backbone": "mobilenet_v2.imagenet", "best_epoch": 2}))
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": {"path": "<img src=x onerror=alert(2)>"},
                                                        "model": {"method": "probe"}}))
    return folder


def _text(html: str) -> str:
    """The page's text (tags dropped, entities decoded), as a reader sees it."""
    import html as html_lib

    return html_lib.unescape(re.sub(r"<[^>]+>", "", html))


def test_user_provided_names_are_escaped_and_any_script_displays(tmp_path):
    html = build_report(_run_folder(tmp_path))
    # nothing a user named becomes markup: no script element, no attribute, no tag from a class name or the config
    assert "<script" not in html.lower() and not re.search(r"<[^>]*onerror", html)
    assert "<img src=x" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    text = _text(html)
    for c in CLASSES:  # and every name reads exactly as written, Chinese and Arabic in UTF-8
        assert c in text
    assert '<meta charset="utf-8">' in html and "Content-Security-Policy" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no external resource of any kind


def test_sections_show_confusion_counts_and_shares_and_per_class_worst_first(tmp_path):
    html = build_report(_run_folder(tmp_path))
    text = _text(html)
    assert "Counts" in text and "Row-normalised" in text
    # 8 + 1 on the diagonal of 4 classes: 9 of 12 in a row = 75 %
    assert ">9</td>" in html and ">75</td>" in html
    per = html[html.index('id="per-class"'):html.index('id="curves"')]
    order = [per.index(_escaped(c)) for c in CLASSES]
    f1 = [0.6 + (i % 2) / 10 for i in range(len(CLASSES))]
    recall = [0.9 - i / 10 for i in range(len(CLASSES))]
    expected = sorted(range(len(CLASSES)), key=lambda i: (f1[i], recall[i]))
    assert sorted(range(len(CLASSES)), key=lambda i: order[i]) == expected
    assert "data:image/png;base64," in html  # the learning curves, drawn again from history.json


def _escaped(name: str) -> str:
    import html as html_lib

    return html_lib.escape(name, quote=True)


def test_missing_and_damaged_files_become_notes_not_errors(tmp_path):
    folder = _run_folder(tmp_path)
    (folder / "metrics.json").write_text("{not json")
    (folder / "wrong_examples.json").write_text(json.dumps({"split": "test", "n": 3, "n_wrong": 1, "examples": [
        {"index": 0, "true": "猫", "predicted": "<b>x</b>", "confidence": 0.9, "true_probability": 0.05,
         "thumbnail": '" onerror="alert(1)'}]}))
    html = build_report(folder)
    assert "metrics.json is not valid JSON" in html
    assert "thumbnail not readable" in html and 'onerror="alert' not in html  # a crafted thumbnail is not embedded
    assert "has no environment.json" in html
    # the confusion matrix still shows: one damaged file costs only what is built from it
    assert "Row-normalised" in html


def test_data_uri_accepts_only_base64_of_the_named_image_type():
    png = _png_bytes()
    assert data_uri(png).startswith("data:image/png;base64,")
    assert data_uri(base64.b64encode(png).decode()) == data_uri(png)
    assert data_uri(base64.b64encode(b"GIF89a....").decode()) is None
    assert data_uri('abc" onload="x') is None


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_record_predictions_keeps_the_most_confidently_wrong_with_previews(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 3
    ds = Dataset("image", images, labels, ["a", "b", "c"])
    proba = np.full((20, 3), 0.1)
    proba[np.arange(20), labels] = 0.8  # right ...
    wrong = {4: 0.95, 7: 0.6, 11: 0.99, 15: 0.7}  # ... except these, at these confidences
    for i, p in wrong.items():
        proba[i] = (1 - p) / 2
        proba[i, (labels[i] + 1) % 3] = p
    record_predictions(tmp_path, "test", ds, proba, ds.classes, n_examples=3)
    data = json.loads((tmp_path / "wrong_examples.json").read_text())
    assert data["n_wrong"] == 4 and data["n"] == 20
    assert [e["index"] for e in data["examples"]] == [11, 4, 15]  # most confident first, at most n_examples
    assert data["examples"][0]["predicted"] == ds.classes[(labels[11] + 1) % 3]
    from PIL import Image

    thumb = Image.open(io.BytesIO(base64.b64decode(data["examples"][0]["thumbnail"])))
    assert thumb.size == (28, 28) and np.array_equal(np.asarray(thumb), images[11])
    with np.load(tmp_path / "predictions_test.npz", allow_pickle=False) as z:
        assert z["top_index"].shape == (20, 3) and np.array_equal(z["top_index"][:, 0], proba.argmax(1))
        assert np.allclose(z["true_proba"], proba[np.arange(20), labels])

    texts = Dataset("text", ["x" * 1000, "short"], np.array([0, 1]), ["neg", "pos"])
    record_predictions(tmp_path, "val", texts, np.array([[0.2, 0.8], [0.9, 0.1]]), texts.classes)
    ex = json.loads((tmp_path / "wrong_examples.json").read_text())["examples"]
    assert [e["index"] for e in ex] == [1, 0] and len(ex[1]["text"]) < 300 and ex[1]["text"].endswith("\u2026")


def test_expected_calibration_error_matches_its_definition():
    conf = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 0, 1, 1])
    # two bins in use: (0.95: acc 0.5) and (0.55: acc 1.0), each half of the examples
    assert calibration_error(conf, correct) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    assert calibration_error(np.array([0.8] * 10), np.array([1] * 8 + [0] * 2)) == pytest.approx(0.0)


def test_a_new_folder_kind_adds_its_sections_and_includes_the_run_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(report_registry, "_KINDS", dict(report_registry._KINDS))
    monkeypatch.setattr(report_registry, "_SECTIONS", list(report_registry._SECTIONS))
    build_report(_run_folder(tmp_path / "a"))  # the built-in kinds are registered
    register_kind("ensemble", lambda f: (f / "ensemble.json").is_file(), priority=20, includes=("run",),
                  title="Ensemble")

    @section("Members", kinds=("ensemble",), order=15)
    def members(ctx):  # noqa: ANN001, ANN202
        return f"<p>{len(ctx.json('ensemble.json')['members'])} members</p>"

    folder = _run_folder(tmp_path)
    (folder / "ensemble.json").write_text(json.dumps({"members": ["r1", "r2", "r3"]}))
    html = build_report(folder)
    assert "Ensemble: run" in html and "3 members" in html and 'id="confusion"' in html
    assert html.index('id="metrics"') < html.index('id="members"') < html.index('id="confusion"')


def test_cli_report_rebuilds_and_refuses_what_is_not_a_folder_it_knows(tmp_path, capsys):
    folder = _run_folder(tmp_path)
    proc = main_in_process(capsys, "report", str(folder))
    assert proc.returncode == 0 and (folder / "report.html").is_file() and "report.html" in proc.stdout
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # written atomically: no temporary left
    out = tmp_path / "elsewhere" / "r.html"
    assert main_in_process(capsys, "report", str(folder), "--out", str(out)).returncode == 0 and out.is_file()
    assert_user_error(main_in_process(capsys, "report", str(tmp_path / "missing")), "is not a folder")
    (tmp_path / "empty").mkdir()
    assert_user_error(main_in_process(capsys, "report", str(tmp_path / "empty")), "not a folder transferkit wrote")


def test_write_report_names_the_folder_not_its_partial_name(tmp_path):
    partial = tmp_path / ".myrun.partial"
    _run_folder(tmp_path).rename(partial)
    html = write_report(partial).read_text(encoding="utf-8")
    assert "transferkit report: myrun" in html and ".partial" not in _text(html).split("Configuration")[0]


@pytest.mark.slow
def test_compare_folder_report_shows_a_distance_validators_and_embedding(tmp_path):
    """A real (small) comparison: MNIST -> MNIST-M, the digits CNN, source-only and DANN, one seed, one epoch."""
    from transferkit.app.compare import run_compare
    from transferkit.config import RunConfig

    cfg = yaml.safe_load((ROOT / "examples" / "mnist_to_mnist_m.yaml").read_text())
    cfg["data"]["train_size"] = 200
    cfg["target"] = {"name": "mnist-m", "train_size": 200}
    cfg["train"].update(epochs=1, progress=False)
    cfg["out"] = str(tmp_path / "cmp")
    result = run_compare(RunConfig.from_dict(cfg), ["source-only", "dann"], [0], embedding="pca", max_points=150,
                         progress=False)
    html = (result.out / "report.html").read_text(encoding="utf-8")
    for anchor in ("methods", "a-distance", "validators", "embedding", "config", "environment"):
        assert f'id="{anchor}"' in html, anchor
    text = _text(html)
    a_dist = {r["method"]: r["a_distance"] for r in result.runs}
    for method, value in a_dist.items():  # the report shows the measured values, not placeholders
        assert f"{value:.3f}" in text, (method, value)
    assert "snd" in text and "oracle epoch" in text
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" alt="2-D embedding', html)
    assert "environment.json" not in text  # recorded, so no note that it is missing
