"""A run killed with SIGKILL mid-epoch and resumed ends with the same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.cli_helpers import ROOT, TINY, run_cli

ARGS = ["--data", "mnist", *TINY, "--epochs", "3", "--set", "data.train_size=1500", "--set", "train.batch_size=32",
        "--set", "train.augment=light", "--set", "model.head_dropout=0.2"]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    ref = run_cli("fit", *ARGS, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    ref_metrics = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    ref_history = json.loads((tmp_path / "ref" / "history.json").read_text())

    out = tmp_path / "killed"
    partial = tmp_path / ".killed.partial"
    ckpt = partial / "checkpoint" / "checkpoint.pt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "fit", *ARGS, "--out", str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint after the first epoch"
    time.sleep(0.4)  # well inside the second epoch
    assert proc.poll() is None, "the run finished before it could be killed; make the test data larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and partial.is_dir()

    again = run_cli("fit", *ARGS, "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = run_cli("fit", *ARGS, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()
    assert json.loads((out / "history.json").read_text()) == ref_history
    assert json.loads((out / "metrics.json").read_text()) == ref_metrics
