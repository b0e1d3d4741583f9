"""``transferkit distil``: a run folder plus the teacher and the student side by side (accuracy, size, latency).

Real data, small models: an MLP teacher (2-64-64) fitted on a skada tabular set teaches a 2-8 student with the
``soft-targets`` method (the logit-KD method ``kd`` comes with the teachers package). The side-by-side figures are
checked against what the two run folders say on their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import assert_user_error, main_in_process

DATA = "skada-conditional-source"


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transferkit.cli import main

    out = tmp_path_factory.mktemp("teacher") / "run"
    code = main(["fit", "--data", DATA, "--backbone", "mlp:2-64-64", "--method", "finetune", "--epochs", "8",
                 "--set", "train.progress=false", "--set", "train.lr=3e-3", "--out", str(out)])
    assert code == 0
    return out


def _config(tmp_path: Path, teacher: Path | None, method: str = "soft-targets") -> Path:
    params = f"\n  method_params:\n    teacher: {teacher}\n    alpha: 0.7" if teacher is not None else ""
    cfg = tmp_path / "distil.yaml"
    cfg.write_text(
        f"data:\n  name: {DATA}\nmodel:\n  backbone: mlp:2-8\n  method: {method}{params}\n"
        "train:\n  epochs: 4\n  lr: 3.0e-3\n  progress: false\n"
    )
    return cfg


@pytest.mark.slow
def test_distil_writes_the_run_folder_and_teacher_and_student_side_by_side(teacher_run, tmp_path, capsys):
    out = tmp_path / "student"
    proc = main_in_process(capsys, "distil", str(_config(tmp_path, teacher_run)), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("model.safetensors", "metrics.json", "summary.json", "distillation.json", "distillation.md"):
        assert (out / name).is_file(), name
    c = json.loads((out / "distillation.json").read_text())
    t, s = c["teacher"], c["student"]
    assert c["split"] == "test" and c["method"] == "soft-targets"
    # the figures agree with what each run folder measured by itself
    assert t["accuracy"] == pytest.approx(json.loads((teacher_run / "metrics.json").read_text())["test"]["accuracy"],
                                          abs=1e-4)
    assert s["accuracy"] == pytest.approx(json.loads((out / "metrics.json").read_text())["test"]["accuracy"], abs=1e-4)
    assert t["parameters"] == 2 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2  # MLP 2-64-64 and its 2-class head
    assert s["parameters"] == 2 * 8 + 8 + 8 * 2 + 2
    assert t["size_mb"] == pytest.approx((teacher_run / "model.safetensors").stat().st_size / 1e6, abs=1e-3)
    assert s["size_mb"] == pytest.approx((out / "model.safetensors").stat().st_size / 1e6, abs=1e-3)
    assert t["size_mb"] > s["size_mb"]
    for row in (t, s):
        assert row["latency_ms_batch1"] > 0 and row["latency_ms_batch32"] > 0
    assert t["kind"] == "transferkit" and t["latency_includes_preprocessing"] is False
    table = (out / "distillation.md").read_text()
    assert "| CPU latency, batch 32 (ms) |" in table and f"{s['accuracy']:.4f}" in table
    assert table.strip() in proc.stdout
    assert json.loads((out / "summary.json").read_text())["distillation"]["teacher"]["accuracy"] == t["accuracy"]


@pytest.mark.slow
def test_fit_with_a_teacher_writes_the_same_files(teacher_run, tmp_path, capsys):
    out = tmp_path / "fitted"
    proc = main_in_process(capsys, "fit", str(_config(tmp_path, teacher_run)), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "distillation.json").read_text())["student"]["parameters"] == 42


def test_distil_without_a_teacher_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "none"
    proc = main_in_process(capsys, "distil", str(_config(tmp_path, None, method="finetune")), "--out", str(out))
    assert_user_error(proc, "needs a method with a teacher", "method_params.teacher")
    assert not out.exists()
