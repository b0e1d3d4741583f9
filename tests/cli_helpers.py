"""Run the transferkit CLI: in a subprocess, the way a user does, or in-process where a process proves nothing more."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def main_in_process(capsys: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``transferkit.cli.main(args)`` in this process (milliseconds, not an interpreter start-up), its exit status
    and captured output shaped like :func:`run_cli`'s, so :func:`assert_user_error` reads both.

    ``capsys`` is pytest's fixture. Use :func:`run_cli` only where the real process is the point (the console
    script's import path, a kill, a second process).
    """
    from transferkit.cli import main

    capsys.readouterr()  # start from nothing captured
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own errors
        code = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["transferkit", *args], code, out, err)


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, no traceback, and one line on stderr naming every fragment."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("transferkit: error:")]
    assert len(errors) == 1, proc.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), n: int = 6, size: int = 20) -> Path:
    """``root/<class>/<i>.png``: ``n`` random RGB images per class (mechanics only, nothing to learn)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root
