"""Bad input gets one clear sentence, a non-zero exit and no traceback, and leaves no run folder behind.

The CLI runs in-process (``transferkit.cli.main`` with ``capsys``): the sentence, the exit status and the folders
left behind are the same as from a subprocess. Only ``--help`` starts the real module, whose point is the console
entry's import path.
"""

from __future__ import annotations

import pickle

import pytest

from tests.cli_helpers import TINY, assert_user_error, image_folder, main_in_process, run_cli


def test_help_is_fast_and_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("fit", "evaluate", "predict", "datasets", "backbones"):
        assert cmd in proc.stdout


def test_unknown_config_key_suggests(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epocs: 2\n")
    proc = main_in_process(capsys, "fit", str(cfg), "--out", str(tmp_path / "run"))
    assert_user_error(proc, "train.epocs", "did you mean 'train.epochs'")
    assert not (tmp_path / "run").exists()


def test_unknown_dataset_name(capsys):
    proc = main_in_process(capsys, "fit", "--data", "animal-mnst", "--out", "/tmp/never-written")
    assert_user_error(proc, "animal-mnist")


def test_empty_class_folder(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs")
    (root / "empty").mkdir()
    proc = main_in_process(capsys, "fit", "--data", str(root), *TINY, "--out", str(tmp_path / "run"))
    assert_user_error(proc, "empty")
    assert not (tmp_path / "run").exists()


def test_single_class_dataset(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", classes=("only",))
    proc = main_in_process(capsys, "fit", "--data", str(root), *TINY, "--out", str(tmp_path / "run"))
    assert_user_error(proc, "class")


def test_csv_without_label_column(tmp_path, capsys):
    csv = tmp_path / "t.csv"
    csv.write_text("text,sentiment\ngood film,pos\nbad film,neg\n")
    proc = main_in_process(capsys, "fit", "--data", str(csv), "--backbone", "minilm-l6", "--out", str(tmp_path / "run"))
    assert_user_error(proc, "label")


@pytest.mark.slow
def test_corrupt_empty_and_non_image_files_are_skipped_with_warning(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", n=8)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "dog" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "notes.txt").write_text("not an image")
    proc = main_in_process(capsys, "fit", "--data", str(root), *TINY, "--epochs", "1", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    for name in ("broken.png", "empty.jpg"):
        assert name in proc.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_weights_of_wrong_shape(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"conv1.weight": torch.zeros(3, 3, 1, 1)}, str(bad))
    root = image_folder(tmp_path / "imgs")
    proc = main_in_process(capsys, "fit", "--data", str(root), *TINY, "--set", f"model.weights={bad}",
                           "--out", str(tmp_path / "r"))
    assert_user_error(proc, "shape")
    assert not (tmp_path / "r").exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_weights_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": _Evil(str(marker))}, fh)
    root = image_folder(tmp_path / "imgs")
    proc = main_in_process(capsys, "fit", "--data", str(root), *TINY, "--set", f"model.weights={evil}",
                           "--out", str(tmp_path / "r"))
    assert_user_error(proc)
    assert not marker.exists()


def test_evaluate_missing_run(tmp_path, capsys):
    proc = main_in_process(capsys, "evaluate", str(tmp_path / "nope"), "mnist")
    assert_user_error(proc, "nope")
