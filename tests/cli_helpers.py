"""Run the transferkit CLI in a subprocess, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A tiny random backbone from timm (no download): keeps CLI mechanics tests fast.
TINY = ["--backbone", "timm:test_resnet", "--set", "model.pretrained=false", "--set", "model.image_size=32",
        "--set", "train.progress=false"]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "transferkit.cli", *args], capture_output=True, text=True, cwd=cwd or ROOT,
        env=env, timeout=timeout,
    )


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, no traceback, and one line on stderr naming every fragment."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("transferkit: error:")]
    assert len(errors) == 1, proc.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]
