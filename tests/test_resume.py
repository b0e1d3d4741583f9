"""A run killed with SIGKILL mid-epoch and resumed ends with the same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cli_helpers import ROOT, TINY, run_cli

ARGS = ["--data", "mnist", *TINY, "--epochs", "3", "--set", "data.train_size=1500", "--set", "train.batch_size=32",
        "--set", "train.augment=light", "--set", "model.head_dropout=0.2"]
#: Optimizer steps of the second epoch the child takes before it kills itself (an epoch here has about 40).
STEPS_INTO_EPOCH_2 = 5

# The CLI in a child that SIGKILLs itself from torch's global optimizer-step hook, STEPS_INTO_EPOCH_2 steps after the
# first epoch's checkpoint appeared: the kill lands at the same point of the second epoch on every run and machine,
# between two steps, after a complete checkpoint (a sleep before an outside kill would race with the training).
_KILL_MID_EPOCH = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    from torch.optim.optimizer import register_optimizer_step_post_hook

    checkpoint, after = Path(sys.argv[1]), int(sys.argv[2])
    seen = []

    def kill_mid_epoch(optimizer, args, kwargs):
        if seen or checkpoint.is_file():
            seen.append(1)
        if len(seen) == after:
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_post_hook(kill_mid_epoch)
    from transferkit.cli import main

    sys.exit(main(sys.argv[3:]))
    """
)


def _fit_killed_in_epoch_2(out: Path, checkpoint: Path, tmp_path: Path) -> int:
    """Run ``fit`` into ``out`` in a child that kills itself mid-way through epoch 2; its exit status."""
    script = tmp_path / "kill_mid_epoch.py"
    script.write_text(_KILL_MID_EPOCH)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_OFFLINE": "1"}
    cmd = [sys.executable, str(script), str(checkpoint), str(STEPS_INTO_EPOCH_2), "fit", *ARGS, "--out", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=600).returncode


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    ref = run_cli("fit", *ARGS, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    ref_metrics = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    ref_history = json.loads((tmp_path / "ref" / "history.json").read_text())

    out = tmp_path / "killed"
    partial = tmp_path / ".killed.partial"
    ckpt = partial / "checkpoint" / "checkpoint.pt"
    assert _fit_killed_in_epoch_2(out, ckpt, tmp_path) == -signal.SIGKILL, "the run ended before the kill"
    assert ckpt.is_file() and not out.exists() and partial.is_dir()

    again = run_cli("fit", *ARGS, "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = run_cli("fit", *ARGS, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()
    assert json.loads((out / "history.json").read_text()) == ref_history
    assert json.loads((out / "metrics.json").read_text()) == ref_metrics
