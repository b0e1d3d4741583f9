"""The one seeded subsample (transferkit.data.sampling): uniform, stratified and per-class draws, and the layering
of data/ (no import of backbones, no cycle between the built-in and the shifted data sets)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from transferkit.data import subsample_train
from transferkit.data.base import Dataset
from transferkit.data.sampling import TRAIN_BUDGET_STREAM, rng_for, sample_rows, subsample
from transferkit.errors import DataError


def _ds(n: int = 120, classes: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=np.float32)[:, None]  # the input is the row number, so a subset shows its indices
    y = rng.integers(0, classes, size=n)
    return Dataset("tabular", x, y, [str(c) for c in range(classes)], "toy")


def _rows(ds: Dataset) -> np.ndarray:
    return ds.inputs[:, 0].astype(np.int64)


def test_uniform_draw_is_seeded_capped_and_in_order() -> None:
    ds = _ds()
    a, b, c = subsample(ds, 30, seed=4), subsample(ds, 30, seed=4), subsample(ds, 30, seed=5)
    assert len(a) == 30 and np.array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)
    assert np.all(np.diff(_rows(a)) > 0)  # original order kept
    assert subsample(ds, 1000, seed=0) is ds and subsample(ds, None) is ds  # nothing dropped: the data set itself


def test_uniform_draw_is_numpys_default_rng_draw() -> None:
    """The draws DELTA and the A-distance made inline before the helper existed, pinned (their figures rest on it)."""
    old = np.sort(np.random.default_rng(7).choice(120, size=40, replace=False))
    assert np.array_equal(sample_rows(120, 40, seed=7), old)


def test_streams_separate_draws_of_one_seed() -> None:
    old = np.sort(np.random.default_rng(np.random.SeedSequence([3, 0x5C0])).choice(120, size=40, replace=False))
    assert np.array_equal(sample_rows(120, 40, seed=3, stream=0x5C0), old)  # the validators' draw, pinned
    assert not np.array_equal(sample_rows(120, 40, seed=3, stream=1), sample_rows(120, 40, seed=3, stream=2))


def test_a_generator_draws_in_turn() -> None:
    rng = rng_for(0, 9)
    first, second = sample_rows(50, 10, seed=rng), sample_rows(50, 10, seed=rng)
    assert not np.array_equal(first, second)
    again = rng_for(0, 9)
    assert np.array_equal(sample_rows(50, 10, seed=again), first)
    with pytest.raises(ValueError, match="stream"):
        rng_for(np.random.default_rng(0), stream=1)


def test_per_class_draw_takes_exactly_k_of_every_class() -> None:
    ds = _ds()
    out = subsample(ds, per_class=5, seed=1, stream=TRAIN_BUDGET_STREAM)
    assert np.array_equal(out.class_counts(), [5, 5, 5])
    assert np.all(np.diff(_rows(out)) > 0)
    old_rng = np.random.default_rng(np.random.SeedSequence([1, 0xFE75]))
    old = np.sort(np.concatenate([old_rng.choice(np.flatnonzero(ds.labels == c), 5, replace=False) for c in range(3)]))
    assert np.array_equal(_rows(out), old)  # the per-class budget of earlier releases, pinned
    with pytest.raises(DataError, match="fewer than the 1000 per class"):
        sample_rows(len(ds), labels=ds.labels, per_class=1000)


def test_stratified_draw_keeps_the_class_mix() -> None:
    y = np.repeat([0, 1], [90, 30])
    keep = sample_rows(len(y), 40, labels=y, stratified=True, seed=2)
    assert len(keep) == 40 and np.bincount(y[keep]).tolist() == [30, 10]
    with pytest.raises(DataError, match="no labels"):
        sample_rows(len(y), 40, stratified=True)


def test_subsample_train_records_the_budget_and_refuses_short_classes() -> None:
    ds = _ds()
    sized = subsample_train(ds, train_size=30, seed=0)
    assert len(sized) == 30 and sized.meta["train_size"] == 30 and "train_size" not in ds.meta
    assert subsample_train(ds, train_size=500) is ds
    assert subsample_train(ds, per_class=4, seed=0).meta["per_class"] == 4
    with pytest.raises(DataError, match="lower data.per_class"):
        subsample_train(ds, per_class=1000)


def test_reading_data_imports_neither_torch_nor_backbones() -> None:
    """data/ sits below backbones/: loading the data package (and the shifted pairs) must not reach up into them."""
    code = (
        "import sys, transferkit.data, transferkit.data.shifted, transferkit.data.sampling\n"
        "bad = [m for m in ('torch', 'transferkit.backbones', 'transferkit.adaptation') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
