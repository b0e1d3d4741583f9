"""``transferkit compare``: the grid of methods x seeds on a shifted pair, its files, and its user errors."""

from __future__ import annotations

import csv

import pytest
import yaml

from tests.cli_helpers import ROOT, assert_user_error, run_cli


def _config(tmp_path, **target):
    cfg = yaml.safe_load((ROOT / "examples" / "mnist_to_mnist_m.yaml").read_text())
    cfg["data"]["train_size"] = 300
    cfg["target"] = {"name": "mnist-m", "train_size": 300, **target}
    cfg["train"].update(epochs=1, progress=False)
    cfg["out"] = str(tmp_path / "cmp")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_compare_writes_table_csv_plot_and_validator_choices(tmp_path):
    proc = run_cli("compare", str(_config(tmp_path)), "--methods", "source-only,dann", "--seeds", "2",
                   "--embedding", "pca")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "cmp"
    assert not (tmp_path / ".cmp.partial").exists()
    for name in ("runs.csv", "summary.csv", "summary.md", "validators.csv", "embedding.png", "compare.json",
                 "config.yaml"):
        assert (out / name).is_file(), name
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert {(r["method"], r["seed"]) for r in runs} == {("source-only", "0"), ("source-only", "1"), ("dann", "0"),
                                                         ("dann", "1")}
    for r in runs:
        assert 0.0 <= float(r["target_accuracy"]) <= 1.0 and 0.0 <= float(r["a_distance"]) <= 2.0
    md = (out / "summary.md").read_text()
    assert "| dann | 2 |" in md and "Δ vs source-only" in md and "| source-only | 2 |" in md
    validators = list(csv.DictReader((out / "validators.csv").open()))
    assert {"snd", "im", "iw_val_accuracy"} <= {v["validator"] for v in validators}
    assert (out / "embedding.png").read_bytes()[:4] == b"\x89PNG"
    assert "dann" in proc.stdout


def test_compare_without_target_is_one_sentence(tmp_path):
    cfg = yaml.safe_load((ROOT / "examples" / "mnist_to_mnist_m.yaml").read_text())
    del cfg["target"]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert_user_error(run_cli("compare", str(path), "--methods", "dann"), "target")


def test_compare_unknown_method_is_refused_before_training(tmp_path):
    proc = run_cli("compare", str(_config(tmp_path)), "--methods", "source-only,danm")
    assert_user_error(proc, "danm", "dann")
    assert not (tmp_path / "cmp").exists() and not (tmp_path / ".cmp.partial").exists()
