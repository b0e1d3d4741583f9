"""Shared test set-up: never touch the network, keep torch on the 2 CI cores, and small fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFERKIT_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if "TRANSFERKIT_CACHE_DIR" not in os.environ:  # tests never read or fill the user's feature cache
    import tempfile

    os.environ["TRANSFERKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="transferkit-test-cache-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def blobs_images() -> tuple[np.ndarray, np.ndarray]:
    """A tiny, learnable image task: 3 classes of 16x16 grey images, each a bright square in its own corner."""
    rng = np.random.default_rng(0)
    n = 60
    x = rng.integers(0, 40, size=(n, 16, 16), dtype=np.uint8)
    y = np.arange(n) % 3
    for i, c in enumerate(y):
        r, col = [(0, 0), (0, 8), (8, 4)][c]
        x[i, r : r + 8, col : col + 8] = 220
    return x, y


@pytest.fixture
def own_cache(tmp_path, monkeypatch):  # noqa: ANN001, ANN201
    """A feature cache of the test's own (``TRANSFERKIT_CACHE_DIR`` under tmp_path), for tests that count entries."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRANSFERKIT_CACHE_DIR", str(cache))
    return cache
