"""Seeds and determinism.

The loop reseeds every RNG at the start of each epoch from ``(seed, epoch)``. A run resumed at epoch e therefore
draws exactly the batches, augmentations and dropout masks the uninterrupted run drew in epoch e, without storing
RNG states in the checkpoint (which keeps checkpoints loadable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    seed = int(seed) % (2**31 - 1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for each (run seed, epoch)."""
    return (int(seed) * 1_000_003 + 7919 * (epoch + 1)) % (2**31 - 1)


def set_deterministic(enabled: bool) -> None:
    """Prefer deterministic kernels (warn, do not fail, where an op has none).

    Deterministic mode in torch also fills every new uninitialised tensor with NaN, a debugging aid that catches ops
    reading memory they never wrote; it changes no result of a correct op, and it was a quarter of the CPU time of a
    training step (``benchmarks/loop_overhead.py``: 0.387 s a step with it, 0.346 s without, 0.351 s non-deterministic),
    so it stays off. A resumed run still ends with the same metrics as an uninterrupted one (tests/test_resume.py).
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
