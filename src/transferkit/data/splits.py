"""Seeded, exact, stratified splits: every split transferkit makes itself goes through :func:`stratified_split`.

Implemented with numpy only, so the same data and the same seed always give the same splits, on any machine and any
scikit-learn version (the fixed splits of the built-in data sets depend on it). Free of torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from .base import Dataset, Splits


def _largest_remainder(total: int, weights: Sequence[float], rng: np.random.Generator | None = None) -> np.ndarray:
    """Integers that sum to ``total`` and are as close as possible to ``total * weights`` (Hamilton's method).

    Ties among equal remainders are broken by ``rng`` when given (so no part is favoured systematically), else by
    position.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full_like(w, 1.0 / len(w))
    exact = total * w
    counts = np.floor(exact + 1e-9).astype(np.int64)
    short = int(total - counts.sum())
    if short > 0:
        rem = exact - counts
        # round remainders so that floating noise does not decide between really equal parts
        key = np.round(rem, 9)
        tie = rng.random(len(w)) if rng is not None else -np.arange(len(w), dtype=np.float64)
        order = np.lexsort((-tie, -key))
        counts[order[:short]] += 1
    return counts


def stratified_split(labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``len(fractions)`` parts with the class mix of ``labels`` in every part.

    The part sizes are exact: they sum to ``len(labels)`` and each is the largest-remainder rounding of
    ``len(labels) * fraction`` (``fractions`` are normalised to sum to 1). Each class is then shared out among the
    parts in proportion (largest-remainder again, done so the per-class counts add up to the part sizes), and which
    examples of a class go where is a seeded random permutation. Every part is returned in a seeded random order, so
    sources that are sorted by label (MNIST files often are) come out shuffled.

    A class too small to appear in every part (say 2 examples and 3 parts) simply lands in fewer parts; the function
    never fails on small classes, which is the same as falling back to a plain seeded split for those classes.

    Implemented with numpy only (instead of scikit-learn's ``train_test_split``) so that the fixed splits of the
    built-in data sets cannot change with a scikit-learn release.

    Args:
        labels: class index (or any hashable label) per example.
        fractions: share of the examples in each part, e.g. ``(0.7, 0.1, 0.2)`` for train/val/test.
        seed: the seed of the split; equal inputs and seed give equal parts.

    Returns:
        One int64 index array per part.
    """
    y = np.asarray(labels)
    n = len(y)
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) == 0 or np.any(fr < 0) or fr.sum() <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, not {list(fractions)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    sizes = _largest_remainder(n, fr)
    classes, y_idx = np.unique(y, return_inverse=True)
    class_counts = np.bincount(y_idx, minlength=len(classes))
    # Allocate each class among the parts; the column sums must hit `sizes` exactly. Work part by part: the per-class
    # quota of part k is what remains of the class times (part size / what remains overall), rounded so it sums to
    # the part size (sklearn's _approximate_mode does the same for one cut).
    alloc = np.zeros((len(classes), len(fr)), dtype=np.int64)
    remaining = class_counts.copy()
    for k in range(len(fr) - 1):
        need = int(sizes[k])
        left = int(remaining.sum())
        if need == 0 or left == 0:
            continue
        take = _largest_remainder(need, remaining / left, rng) if need < left else remaining.copy()
        # a class cannot give more than it has left: move the overflow to classes that still have room
        over = np.maximum(take - remaining, 0)
        take -= over
        spare = int(over.sum())
        while spare > 0:
            room = remaining - take
            cand = np.flatnonzero(room > 0)
            pick = cand[np.argsort(-room[cand], kind="stable")][: min(spare, len(cand))]
            take[pick] += 1
            spare -= len(pick)
        alloc[:, k] = take
        remaining -= take
    alloc[:, -1] = remaining
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y_idx == c))
        bounds = np.concatenate([[0], np.cumsum(alloc[c])])
        for k in range(len(fr)):
            parts[k].append(members[bounds[k] : bounds[k + 1]])
    out = []
    for p in parts:
        idx = np.concatenate(p) if p else np.zeros(0, dtype=np.int64)
        out.append(rng.permutation(idx).astype(np.int64))
    return out


def split_dataset(ds: Dataset, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Split one labelled :class:`Dataset` into train/val/test with :func:`stratified_split`.

    A fraction of 0 leaves that split out (``None``).
    """
    check_fractions(val_fraction, test_fraction)
    if ds.labels is None:
        raise DataError(f"Data set '{ds.name}' has no labels, so it cannot be split into train/val/test; add labels.")
    parts = stratified_split(ds.labels, [1.0 - val_fraction - test_fraction, val_fraction, test_fraction], seed)
    names = ("train", "val", "test")
    sub = [ds.subset(p, name=ds.name) if len(p) else None for p in parts]
    for s, nm in zip(sub, names):
        if s is not None:
            s.meta["split"] = nm
    if sub[0] is None:
        raise DataError(f"Data set '{ds.name}' is too small to split; add examples or lower val/test fractions.")
    return Splits(sub[0], sub[1], sub[2])


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0) or val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must each be in [0, 1) and sum to "
            "less than 1; lower them."
        )
