"""The one seeded subsample of the toolkit: which rows of a data set to keep when fewer are wanted.

Every part that works on fewer rows than it was given draws them here: the training budget of a run
(``data.train_size``, ``data.per_class``) and the few labelled target examples (:func:`subsample_train`), the
label-free validators' target sample, the examples batch-norm statistics are re-estimated on, DELTA's attention
estimate, the proxy A-distance's features and the domain classifier's fitting rows. Three kinds of draw:

* **uniform** (default): at most ``max_examples`` rows, without replacement;
* **stratified** (``stratified=True``): at most ``max_examples`` rows with the class mix of the whole, through
  :func:`~transferkit.data.splits.stratified_split` (exact sizes per class);
* **per class** (``per_class=k``): exactly ``k`` rows of every class.

The kept rows are always returned in their original order (sorted indices), so a subsample of a sorted source stays
sorted and a subset is reproducible from its indices. A draw is a pure function of ``(seed, stream)``: ``stream``
is an integer that separates two draws made from the same run seed (the validators' target sample and the
per-class budget must not pick the same rows just because they share the seed); callers that must keep the draws of
earlier releases pass the stream they always used. A ``numpy.random.Generator`` can be passed instead of a seed when
several draws must come from one stream in turn (the domain classifier draws its source rows, then its target rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from .base import Dataset
from .splits import stratified_split

#: The stream of the per-class and stratified training budget (``data.per_class``, ``train.target_labels_per_class``).
TRAIN_BUDGET_STREAM = 0xFE75


def rng_for(seed: int | np.random.Generator, stream: int | None = None) -> np.random.Generator:
    """The generator of one draw: ``seed`` itself if it is a generator, else one seeded from ``(seed, stream)``.

    ``rng_for(s)`` draws exactly what ``numpy.random.default_rng(s)`` draws.
    """
    if isinstance(seed, np.random.Generator):
        if stream is not None:
            raise ValueError("a stream is given by the generator itself; pass a seed to choose one")
        return seed
    entropy = int(seed) if stream is None else [int(seed), int(stream)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def sample_rows(
    n: int,
    max_examples: int | None = None,
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    per_class: int | None = None,
    stratified: bool = False,
    seed: int | np.random.Generator = 0,
    stream: int | None = None,
) -> np.ndarray:
    """Sorted int64 indices of the rows of ``range(n)`` to keep (see the module docstring for the three draws).

    Args:
        n: number of rows.
        max_examples: keep at most this many (``None``: no cap); all ``n`` rows when ``n <= max_examples``.
        labels: class index per row; needed by ``per_class`` and ``stratified``.
        per_class: keep exactly this many rows of every class present in ``labels`` (``max_examples`` is ignored).
        stratified: draw ``max_examples`` rows with the class mix of ``labels`` (seeded by the integer ``seed``
            alone, as :func:`~transferkit.data.splits.stratified_split` is).
        seed: an integer seed, or a generator to draw from (uniform and per-class draws).
        stream: separates draws made with the same seed (see the module docstring).

    Raises:
        DataError: ``per_class`` larger than a class, or ``per_class``/``stratified`` without labels.
    """
    if per_class is not None:
        y = _labels_of(labels, n, "a per-class subsample")
        rng = rng_for(seed, stream)
        keep = []
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            if len(members) < per_class:
                raise DataError(f"Class {c} has {len(members)} examples, fewer than the {per_class} per class asked "
                                "for; ask for fewer per class.")
            keep.append(rng.choice(members, size=per_class, replace=False))
        return np.sort(np.concatenate(keep)).astype(np.int64) if keep else np.zeros(0, dtype=np.int64)
    if max_examples is None or n <= max_examples:
        return np.arange(n, dtype=np.int64)
    if stratified:
        if isinstance(seed, np.random.Generator) or stream is not None:
            raise ValueError("a stratified subsample is seeded by an integer seed alone")
        y = _labels_of(labels, n, "a stratified subsample")
        return np.sort(stratified_split(y, [max_examples, n - max_examples], int(seed))[0])
    return np.sort(rng_for(seed, stream).choice(n, size=max_examples, replace=False)).astype(np.int64)


def subsample(
    ds: Dataset,
    max_examples: int | None = None,
    *,
    per_class: int | None = None,
    stratified: bool = False,
    seed: int | np.random.Generator = 0,
    stream: int | None = None,
) -> Dataset:
    """The rows of ``ds`` that :func:`sample_rows` keeps, as a :class:`Dataset` in their original order.

    ``ds`` itself (not a copy) when a cap keeps every row, so callers can tell that nothing was dropped.
    """
    if per_class is None and (max_examples is None or len(ds) <= max_examples):
        return ds
    keep = sample_rows(len(ds), max_examples, labels=ds.labels, per_class=per_class, stratified=stratified,
                       seed=seed, stream=stream)
    return ds.subset(keep)


def subsample_train(
    ds: Dataset, *, train_size: int | None = None, per_class: int | None = None, seed: int = 0
) -> Dataset:
    """Keep part of a training split: at most ``train_size`` examples (stratified), or exactly ``per_class`` per class.

    Both are seeded by ``seed`` and keep the split's existing order among the kept rows. ``train_size`` larger
    than the split keeps everything. The kept split records the budget in its ``meta``.

    Raises:
        DataError: the split is unlabelled, or a class has fewer than ``per_class`` examples.
    """
    if ds.labels is None:
        raise DataError(f"Training split of '{ds.name}' has no labels, so it cannot be subsampled per class.")
    if per_class is not None:
        counts = ds.class_counts()
        short = [f"{ds.classes[c]} ({counts[c]})" for c in range(ds.num_classes) if counts[c] < per_class]
        if short:
            raise DataError(
                f"per_class={per_class} but some classes have fewer training examples: {', '.join(short[:10])}; "
                "lower data.per_class."
            )
        out = subsample(ds, per_class=per_class, seed=seed, stream=TRAIN_BUDGET_STREAM)
    elif train_size is not None:
        if train_size >= len(ds):
            return ds
        out = subsample(ds, train_size, stratified=True, seed=seed)
    else:
        return ds
    out.meta.update({"train_size": train_size, "per_class": per_class, "subsample_seed": seed})
    return out


def _labels_of(labels: Sequence[int] | np.ndarray | None, n: int, what: str) -> np.ndarray:
    if labels is None:
        raise DataError(f"The data has no labels, so {what} cannot be drawn; give labelled data.")
    y = np.asarray(labels)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} rows")
    return y
