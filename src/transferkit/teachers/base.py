"""The teacher contract: anything that predicts class scores, behind one small interface (issue 13, item 2).

A :class:`Teacher` gives ``(N, C)`` logit-like scores for the raw examples of a :class:`~transferkit.data.base.Dataset`
(:meth:`Teacher.outputs`, with the teacher's own preprocessing). Distillation methods use them in one of two modes:

* **cached**: the outputs on every training example are computed once (:func:`transferkit.teachers.teacher_outputs`)
  and kept in the feature cache; any teacher kind works (ONNX, Keras, scikit-learn, callables, torch models, a text
  teacher with another tokenizer, a teacher of another modality of the same examples);
* **online**: torch teachers only (``module`` is not ``None``): the teacher sees the student's own augmented batch
  each step ("consistent teaching", Beyer et al. 2022), converted by :meth:`Teacher.adapt_batch`.

Scores are logit-like: the softmax of a row is the teacher's probabilities. A teacher that only gives probabilities
returns ``log(p + 1e-8)`` (:func:`log_probabilities`), whose softmax is ``p`` up to the 1e-8 floor.

The kinds live in :mod:`.torch_kinds` (transferkit run/saved-model folders, catalog backbones with a head) and
:mod:`.foreign` (ONNX, Keras 3, scikit-learn, callables); :func:`transferkit.teachers.load_teacher` picks one.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import Dataset
from ..data.preprocessing import Preprocessing
from ..errors import ConfigError

KINDS = ("transferkit", "catalog", "onnx", "keras", "sklearn", "callable")
PROBABILITY_FLOOR = 1e-8


def log_probabilities(p: np.ndarray) -> np.ndarray:
    """``log(p + 1e-8)`` as float32: the logit-like scores of a probability-only teacher."""
    return np.log(np.asarray(p, dtype=np.float64) + PROBABILITY_FLOOR).astype(np.float32)


def looks_like_probabilities(scores: np.ndarray, tol: float = 1e-3) -> bool:
    """Whether every row is non-negative and sums to one (within ``tol``): a softmax / ``predict_proba`` output."""
    s = np.asarray(scores, dtype=np.float64)
    return bool(s.ndim == 2 and s.size and (s >= 0).all() and np.allclose(s.sum(axis=1), 1.0, atol=tol))


def sha256_text(*parts: Any) -> str:
    """SHA-256 (hex) of the parts' ``str()`` joined with NUL bytes."""
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()


class Teacher(ABC):
    """Anything that predicts: the interface every distillation method reads (see the module docstring).

    Attributes:
        kind: ``"transferkit"``, ``"catalog"``, ``"onnx"``, ``"keras"``, ``"sklearn"`` or ``"callable"``.
        classes: the output order when known (checked against the student's classes), else ``None``.
        num_outputs: the number of output columns when known before running it, else ``None``.
        modality: ``"image"``, ``"text"``, ``"tabular"`` or ``None`` (any).
        module: torch teachers only: the frozen, eval-mode module, ``forward(teacher_batch) -> logits`` (a
            :class:`~transferkit.model.TransferModel`, so its ``.backbone`` can be tapped by module path).
        preprocessing / image_size: torch teachers only: what the module's inputs look like.
        name: a short description for messages and run records.
    """

    kind: str = ""
    classes: list[str] | None = None
    num_outputs: int | None = None
    modality: str | None = None
    module: nn.Module | None = None
    preprocessing: Preprocessing | None = None
    image_size: int | None = None
    name: str = "teacher"
    #: whether :func:`~transferkit.teachers.teacher_outputs` may keep the outputs in the feature cache (False for a
    #: teacher whose fingerprint cannot capture what it computes: a callable without a given fingerprint)
    cacheable: bool = True

    @abstractmethod
    def fingerprint(self) -> str:
        """SHA-256 of everything that fixes the outputs (weights or file bytes, preprocessing): the cache key."""

    @abstractmethod
    def outputs(self, ds: Dataset, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """``(N, C)`` float32 logit-like scores on the raw examples of ``ds``, in order."""

    def supports_online(self) -> bool:
        """Whether the teacher can run on the student's batches each step (a torch module)."""
        return self.module is not None

    def online_problem(self, student_pre: Preprocessing) -> str | None:
        """Why the student's batches cannot be fed to this teacher (one sentence), or ``None`` when they can."""
        if self.module is None:
            return (f"The {self.kind} teacher '{self.name}' cannot run on the student's batches; use "
                    "teacher_mode: cached.")
        return None

    def adapt_batch(self, x: Any, student_pre: Preprocessing, student_image_size: int | None) -> Any:
        """The student's (augmented) batch as this teacher expects it; only torch teachers run online."""
        raise ConfigError(f"The {self.kind} teacher '{self.name}' cannot run on the student's batches; use "
                          "teacher_mode: cached.")

    def describe(self) -> dict[str, Any]:
        """What the run record says about the teacher."""
        return {"kind": self.kind, "name": self.name, "modality": self.modality,
                "classes": len(self.classes) if self.classes is not None else self.num_outputs,
                "fingerprint": self.fingerprint()}

    def check_student(self, classes: list[str], modality: str) -> None:
        """Refuse, in one sentence, a teacher whose classes or modality do not fit the student's data."""
        check_fit(self, classes, modality)


def check_fit(teacher: Teacher, classes: list[str], modality: str, outputs: int | None = None) -> None:
    """The class count / order and modality checks of :meth:`Teacher.check_student` (``outputs``: a measured
    column count, for teachers that only know it after running)."""
    if teacher.modality is not None and teacher.modality != modality:
        raise ConfigError(f"The teacher '{teacher.name}' takes {teacher.modality} inputs but the data is {modality}; "
                          "give a teacher for the same kind of data.")
    if teacher.classes is not None:
        if len(teacher.classes) != len(classes):
            raise ConfigError(f"The teacher '{teacher.name}' predicts {len(teacher.classes)} classes but the data has "
                              f"{len(classes)}; give a teacher trained on the same label set.")
        if list(teacher.classes) != list(classes):
            raise ConfigError(f"The teacher '{teacher.name}' was trained on classes {list(teacher.classes)[:5]} but "
                              f"the data has {list(classes)[:5]}; give a teacher trained on the same label set, in "
                              "the same order.")
    n = outputs if outputs is not None else teacher.num_outputs
    if n is not None and n != len(classes):
        raise ConfigError(f"The teacher '{teacher.name}' gives {n} scores per example but the data has "
                          f"{len(classes)} classes; give a teacher trained on the same label set.")


def _stats(pre: Preprocessing, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(pre.mean if pre.mean is not None else (0.0, 0.0, 0.0), dtype=torch.float32, device=device)
    std = torch.tensor(pre.std if pre.std is not None else (1.0, 1.0, 1.0), dtype=torch.float32, device=device)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def convert_images(x: torch.Tensor, src: Preprocessing, src_size: int | None, dst: Preprocessing,
                   dst_size: int | None) -> torch.Tensor:
    """A normalised image batch of one backbone as another expects it: undo ``src``'s mean/std, resize bilinearly
    with antialiasing to ``dst_size``, apply ``dst``'s mean/std (unchanged when both agree)."""
    if (src_size, src.mean, src.std) == (dst_size, dst.mean, dst.std):
        return x
    s_mean, s_std = _stats(src, x.device)
    t_mean, t_std = _stats(dst, x.device)
    raw = x.float() * s_std + s_mean
    if dst_size and (raw.shape[-1] != dst_size or raw.shape[-2] != dst_size):
        raw = F.interpolate(raw, size=(dst_size, dst_size), mode="bilinear", align_corners=False, antialias=True)
    return (raw - t_mean) / t_std
