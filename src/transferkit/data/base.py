"""The in-memory description of a data set: one split (:class:`Dataset`) and a train/val/test triple (:class:`Splits`).

Every source (built-in data sets, image folders, CSV/TSV/JSONL text, numpy/pandas arrays) produces these, and every
consumer (loaders, the training loop, the feature cache, domain adaptation) reads only these. Inputs stay in their
cheapest form (decoded uint8 arrays, file paths, raw strings, float arrays); turning them into tensors is the
loader's job, because that depends on the backbone's preprocessing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Modality = Literal["image", "text", "tabular"]


@dataclass
class Dataset:
    """One split of examples.

    Attributes:
        modality: ``"image"``, ``"text"`` or ``"tabular"``.
        inputs: for images a uint8 array ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB), or a list of file paths;
            for text a list of strings; for tabular a float32 array ``(N, F)``.
        labels: int64 array ``(N,)`` of indices into ``classes``, or ``None`` for unlabelled data.
        classes: the label names, in index order.
        name: a human-readable name used in reports.
    """

    modality: Modality
    inputs: Any
    labels: np.ndarray | None
    classes: list[str]
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if len(self.labels) != len(self.inputs):
                raise ValueError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_labelled(self) -> bool:
        return self.labels is not None

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Dataset:
        """A new :class:`Dataset` with the rows at ``indices`` (same classes, same modality)."""
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.inputs, np.ndarray):
            inputs: Any = self.inputs[idx]
        else:
            inputs = [self.inputs[i] for i in idx]
        labels = None if self.labels is None else self.labels[idx]
        meta = dict(self.meta)
        meta.pop("rows_of", None)  # a subset no longer has the rows of that data set
        if meta.get("targets") is not None:
            meta["targets"] = np.asarray(meta["targets"])[idx]
        return Dataset(self.modality, inputs, labels, list(self.classes), name or self.name, meta)

    def with_targets(self, targets: np.ndarray) -> Dataset:
        """The same rows carrying per-row float ``targets`` ``(N, K)`` in ``meta["targets"]``: the loaders then yield
        those rows as the batch's ``y`` instead of the labels (and the training loop weighs and shards them as it
        would this data set's rows, ``meta["rows_of"]``)."""
        t = np.ascontiguousarray(targets, dtype=np.float32)
        if t.ndim != 2 or len(t) != len(self):
            raise ValueError(f"targets must have shape ({len(self)}, K), not {t.shape}")
        return Dataset(self.modality, self.inputs, self.labels, list(self.classes), self.name,
                       {**self.meta, "targets": t, "rows_of": self})

    def unlabelled(self) -> Dataset:
        """The same inputs without labels (the target side of domain adaptation)."""
        return Dataset(self.modality, self.inputs, None, list(self.classes), self.name, dict(self.meta))

    def class_counts(self) -> np.ndarray:
        """Number of examples per class (zeros for an unlabelled split)."""
        if self.labels is None:
            return np.zeros(self.num_classes, dtype=np.int64)
        return np.bincount(self.labels, minlength=self.num_classes)

    def fingerprint(self, labels: bool = True) -> str:
        """A SHA-256 of the content (inputs, labels, classes): equal data gives an equal fingerprint.

        File-path inputs are hashed by path, size and modification time, so an edited file changes the print
        without re-reading every image. ``labels=False`` hashes the inputs alone (no labels, no class names): what
        a frozen backbone's features depend on, so relabelled data keeps its cached features.
        """
        h = hashlib.sha256()
        h.update(self.modality.encode())
        if labels:
            h.update("\x00".join(self.classes).encode())
        if isinstance(self.inputs, np.ndarray) and self.inputs.dtype != object:  # an object array's bytes are pointers
            h.update(str(self.inputs.dtype).encode() + str(self.inputs.shape).encode())
            h.update(np.ascontiguousarray(self.inputs).tobytes())
        elif self.modality == "image":
            import os

            for p in self.inputs:
                if isinstance(p, str | os.PathLike):
                    st = os.stat(p)
                    h.update(f"{p}\x00{st.st_size}\x00{st.st_mtime_ns}\x01".encode())
                else:  # an image given as an array (an object array or list of differently sized images)
                    a = np.ascontiguousarray(p)
                    h.update(f"{a.dtype}{a.shape}".encode() + a.tobytes() + b"\x01")
        else:
            for s in self.inputs:
                h.update(str(s).encode("utf-8") + b"\x01")
        if labels and self.labels is not None:
            h.update(self.labels.tobytes())
        return h.hexdigest()


@dataclass
class Splits:
    """A train split plus optional validation and test splits that share one label set."""

    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def modality(self) -> Modality:
        return self.train.modality

    def items(self) -> list[tuple[str, Dataset]]:
        """The present splits as ``(name, dataset)`` pairs, in train/val/test order."""
        return [(k, v) for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v is not None]
