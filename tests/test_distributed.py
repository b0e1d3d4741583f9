"""Training in several processes: two CPU processes on gloo, launched by torchrun, as several GPUs would be.

- The gradient exchange is exact: two processes with batch 20 each end with the weights of one process with batch 40
  (the shards of an epoch's order are the halves of the one-process batches, and DDP averages their gradients),
  also when a freezing schedule unfreezes the backbone after the first epoch.
- A method's own trainable parameters (DANN's domain discriminator) are averaged too: both ranks end identical,
  although each read different source and target batches.
- ``torchrun -m transferkit fit`` writes one complete run folder (rank 0) and every rank exits 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

WORKER = Path(__file__).parent / "workers" / "ddp_fit.py"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _ranks(out: Path) -> dict[int, dict]:
    """The per-rank reports the worker wrote beside OUT (one file per rank: the ranks share one stdout pipe)."""
    rows = [json.loads(p.read_text()) for p in sorted(out.parent.glob(f"{out.name}.rank*.json"))]
    return {r["rank"]: r for r in rows}


@pytest.mark.parametrize("method", ["finetune", "freeze-unfreeze"])  # the second unfreezes the backbone in epoch 2
def test_two_processes_equal_one_process_with_the_joint_batch(tmp_path: Path, method: str) -> None:
    from safetensors.torch import load_file

    two, one = tmp_path / "two.safetensors", tmp_path / "one.safetensors"
    _torchrun(str(WORKER), method, "20", str(two))
    ranks = _ranks(two)
    single = subprocess.run([sys.executable, str(WORKER), method, "40", str(one)], capture_output=True, text=True,
                            env=_env(), timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert set(ranks) == {0, 1} and ranks[0]["world"] == 2
    assert ranks[0]["model"] == ranks[1]["model"]
    a, b = load_file(two), load_file(one)
    assert set(a) == set(b) and a
    assert ranks[0]["model"] != ranks[0]["start"]  # it trained
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-4, k


def test_method_parameters_are_averaged_across_processes(tmp_path: Path) -> None:
    out = tmp_path / "dann.safetensors"
    _torchrun(str(WORKER), "dann", "20", str(out))
    ranks = _ranks(out)
    assert set(ranks) == {0, 1}
    assert ranks[0]["method_params"] > 0  # the domain discriminator trains
    assert ranks[0]["model"] == ranks[1]["model"]
    assert ranks[0]["method"] == ranks[1]["method"]


def test_cli_fit_under_torchrun_writes_one_complete_run_folder(tmp_path: Path) -> None:
    cfg = {
        "data": {"name": "skada-covariate-source"}, "target": {"name": "skada-covariate-target"},
        "model": {"backbone": "mlp:2-16", "pretrained": False, "method": "dann"},
        "train": {"epochs": 2, "batch_size": 20, "lr": 0.02, "schedule": "constant", "warmup_fraction": 0.0,
                  "device": "cpu", "progress": False},
        "out": str(tmp_path / "run"),
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = _torchrun("-m", "transferkit", "fit", str(path))
    assert out.stdout.count("run folder:") == 1  # rank 0 reports, rank 1 stays quiet
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val", "test", "target_test"} <= set(metrics) and metrics["test"]["accuracy"] > 0.6
    assert (run / "model.safetensors").is_file() and (run / "learning_curves.png").is_file()
    assert not (tmp_path / ".run.partial").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml",
                                                                                                         "run"]
