"""The CLI end to end: fit writes a complete run folder; evaluate and predict read it back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.cli_helpers import TINY, run_cli


@pytest.mark.slow
def test_fit_evaluate_predict(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("fit", "--data", "mnist", *TINY, "--epochs", "2", "--set", "data.train_size=600", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy:" in proc.stdout and str(out) in proc.stdout
    for name in ("config.yaml", "metrics.json", "history.json", "history.csv", "confusion_matrix.png",
                 "confusion_matrix.json", "learning_curves.png", "model.safetensors", "model.json", "summary.json"):
        assert (out / name).is_file(), name
    assert not (tmp_path / ".run.partial").exists() and not (out / "checkpoint").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("val", "test"):
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0 and "macro_f1" in metrics[split]
    assert metrics["test"]["n"] == 1000
    cm = json.loads((out / "confusion_matrix.json").read_text())
    assert np.asarray(cm["matrix"]).sum() == 1000
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((out / "history.json").read_text())) == 2

    ev = run_cli("evaluate", str(out), "mnist", "--split", "test", "--out", str(tmp_path / "ev.json"))
    assert ev.returncode == 0, ev.stderr
    again = json.loads((tmp_path / "ev.json").read_text())
    assert again["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, dtype=np.uint8)).save(imgs / f"{i}.png")
    pr = run_cli("predict", str(out), str(imgs), "--out", str(tmp_path / "p.csv"), "--top-k", "2")
    assert pr.returncode == 0, pr.stderr
    df = pd.read_csv(tmp_path / "p.csv", dtype=str)
    assert len(df) == 3 and set(df["predicted"]) <= {str(d) for d in range(10)}

    again = run_cli("fit", "--data", "mnist", *TINY, "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_listing_commands():
    for cmd, expect in (("datasets", "animal-mnist"), ("backbones", "mobilenet_v2.imagenet"), ("methods", "finetune")):
        proc = run_cli(cmd)
        assert proc.returncode == 0 and expect in proc.stdout, proc.stderr
