"""Logit knowledge distillation (Hinton et al. 2015) from any teacher, online or from cached outputs.

    L(w) = (1 - a(t)) * CE(y_hat, y) + a(t) * T^2 * KL( softmax(z_t / T) || softmax(z_s / T) )

``z_s`` are the student's logits, ``z_t`` the teacher's logit-like scores on the same example (a probability-only
teacher gives ``log(p + 1e-8)``, whose softmax at ``T = 1`` is ``p``), ``T`` is the temperature (softer targets as it
grows; the ``T^2`` keeps the gradient scale independent of it) and ``a(t) = alpha * s(t)`` follows the lambda
schedule of :mod:`.regularised`. The gradient of the KL term with respect to ``z_s`` is
``T * (softmax(z_s / T) - softmax(z_t / T))``: the student is pulled towards the teacher's whole distribution, the
"dark knowledge" of which wrong classes are nearly right.

The teacher (``teacher``) is anything :func:`transferkit.teachers.load_teacher` accepts: a transferkit run or saved
model folder, a catalog backbone with ``teacher_head``, an ``.onnx`` or ``.keras`` file (with
``teacher_preprocessing``), and from Python a :class:`~transferkit.teachers.Teacher`, a fitted ``TransferClassifier``,
a scikit-learn estimator with ``predict_proba`` or a callable. Its classes must be the data's (names and order when
it knows them, the count otherwise). Two modes (``teacher_mode``):

* ``online``: a torch teacher sees the student's own augmented batch each step ("consistent teaching", Beyer et al.
  2022), converted to its preprocessing by :meth:`Teacher.adapt_batch` (images re-normalised and resized, text when
  the tokenizers match); mixup / cutmix mix the batch both see. Costs one teacher forward pass per step.
* ``cached``: the teacher's outputs on every (un-augmented) training example are computed once and kept in the
  feature cache (:func:`transferkit.teachers.teacher_outputs`); the next run with the same teacher and data reads
  them. :meth:`training_data` hands the loop ``ctx.train.with_targets([label, z_t])``, so each batch's ``y`` carries
  the label and the teacher's scores of its rows (same sampler, weights and sharding) and the loop needs no teacher.
  Any teacher kind works, and a text teacher with another tokenizer, or of another modality of the same examples.
  Mixup / cutmix are refused here: the teacher never saw the mixed example.
* ``auto`` (default): online for a torch teacher whose inputs can be adapted, cached otherwise.

Unlabelled rows (a *transfer set*, both modes): ``fit(..., extra={"unlabelled": rows})`` adds examples without labels
that only the teacher labels (the usual way to distil a teacher into a student with few labels: its outputs on every
row it can see; see :mod:`.transfer_set`). Their label is -1; the cross-entropy averages over the batch's labelled rows
only, the distillation term over all:

    L = (1 - a) * mean_{i labelled} CE_i + a * T^2 * mean_{i} KL_i

Online, the teacher sees the student's augmented view of every row, labelled or not (Beyer et al.'s function
matching); cached, its outputs on the un-augmented rows are computed once. The loop then trains on the labelled rows
followed by the unlabelled ones, so ``ctx.sample_weights`` (which weigh the labelled rows only) do not apply, and
mixup / cutmix are refused. ``labelled_share`` repeats the labelled rows to about that share of each epoch (default 0:
each row once; see :mod:`.transfer_set`).

The teacher is held by the method (frozen, evaluation mode), never saved with the student.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..config import param
from ..data.base import Dataset
from ..errors import ConfigError
from ..model import TransferModel
from .base import FitContext, FitResult, StepOutput
from .lwf import distillation
from .registry import register
from .regularised import Frozen, RegularisedMethod, ScheduleParams
from .transfer_set import UNLABELLED, check_no_mixing, concatenate, labelled_ce, labelled_repeats, transfer_set

MODES = ("auto", "online", "cached")


@dataclass
class KDParams(ScheduleParams):
    # the teacher: a model or run folder, a backbone name (+ teacher_head), an .onnx / .keras file, or from Python a
    # Teacher, fitted TransferClassifier, estimator with predict_proba, or callable
    teacher: Any = field(default=None, metadata=param(required=(
        "Method 'kd' needs a teacher; set model.method_params.teacher to a saved model or run folder, a backbone name "
        "with teacher_head, or an .onnx or .keras file.")))
    teacher_mode: str = field(default="auto", metadata=param(choices=MODES))
    # a: weight of the distillation term (1 - a on the cross-entropy)
    alpha: float = field(default=0.5, metadata=param(ge=0, le=1))
    temperature: float = field(default=4.0, metadata=param(gt=0))  # T
    trust_code: bool = False  # a teacher folder may name your own module: factory (a saved model is data)
    teacher_head: str | None = None  # for a backbone-name teacher: a run folder or .safetensors linear head
    teacher_classes: list[str] | None = None  # the output order of a teacher that does not know it
    teacher_preprocessing: dict[str, Any] | None = None  # ONNX / Keras inputs (see transferkit.teachers.foreign)
    teacher_batch_size: int = field(default=64, metadata=param(ge=1))  # batches of the cached mode's teacher pass
    cache: bool = True  # cached mode: keep the teacher's outputs in the feature cache (False: compute every run)
    # with a transfer set: the labelled rows are repeated to about this share of each epoch (0: each row once)
    labelled_share: float = field(default=0.0, metadata=param(ge=0, lt=1))


@register
class KD(RegularisedMethod):
    name: ClassVar[str] = "kd"
    summary: ClassVar[str] = "logit distillation (Hinton KD) from any teacher: online on the student's batch, or cached"
    Params: ClassVar[type] = KDParams

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self._teacher: Any = None
        self._mode: str | None = None
        self._num_classes = 0
        self.teacher_record: dict[str, Any] = {}

    # --- the teacher ---------------------------------------------------------------------------------------------
    def resolve_teacher(self, ctx: FitContext) -> tuple[Any, str]:
        """Load the teacher once, check it against the student, and choose the mode: ``(teacher, mode)``."""
        from ..teachers import load_teacher

        if self._teacher is not None and self._mode is not None:
            return self._teacher, self._mode
        p = self.params
        teacher = load_teacher(p.teacher, trust_code=bool(getattr(p, "trust_code", False)),
                               classes=getattr(p, "teacher_classes", None), head=getattr(p, "teacher_head", None),
                               preprocessing=getattr(p, "teacher_preprocessing", None))
        student = ctx.model
        modality = ctx.train.modality if ctx.train is not None else student.preprocessing.modality
        teacher.check_student(list(student.classes), modality)
        mode = getattr(p, "teacher_mode", "online")
        problem = teacher.online_problem(student.preprocessing)
        if mode == "auto":
            mode = "online" if problem is None else "cached"
        elif mode == "online" and problem is not None:
            raise ConfigError(problem)
        self._teacher, self._mode, self._num_classes = teacher, mode, len(student.classes)
        self.teacher_record = {"kind": teacher.kind, "name": teacher.name, "mode": mode}
        return teacher, mode

    def training_data(self, ctx: FitContext) -> Dataset:
        """Online: the labelled split (then the unlabelled rows, label -1). Cached: the same rows carrying
        ``[label, z_t]`` per row (see the docstring)."""
        from ..teachers import teacher_outputs
        from ..teachers.base import check_fit

        teacher, mode = self.resolve_teacher(ctx)
        if mode != "cached":
            return transfer_set(ctx, self.name, getattr(self.params, "labelled_share", 0.0))
        cfg = ctx.train_config
        check_no_mixing(ctx, "The cached teacher mode cannot follow mixup or cutmix (the teacher never saw the mixed "
                             "examples); use teacher_mode: online or turn mixing off")
        t0 = time.perf_counter()
        z = teacher_outputs(teacher, ctx.train, cache=None if self.params.cache else False,
                            batch_size=int(self.params.teacher_batch_size), progress=cfg.progress)
        self.teacher_record["seconds"] = round(time.perf_counter() - t0, 3)
        check_fit(teacher, list(ctx.model.classes), ctx.train.modality, outputs=int(z.shape[1]))
        labels = np.asarray(ctx.train.labels, dtype=np.float32).reshape(-1, 1)
        unlabelled = ctx.extra.get(UNLABELLED)
        if unlabelled is None or len(unlabelled) == 0:
            return ctx.train.with_targets(np.concatenate([labels, z], axis=1))
        z_u = teacher_outputs(teacher, unlabelled, cache=None if self.params.cache else False,
                              batch_size=int(self.params.teacher_batch_size), progress=cfg.progress)
        self.teacher_record["seconds"] = round(time.perf_counter() - t0, 3)
        self.teacher_record["unlabelled_rows"] = len(unlabelled)
        k = labelled_repeats(len(ctx.train), len(unlabelled), getattr(self.params, "labelled_share", 0.0))
        both = concatenate(ctx.train, unlabelled, k)
        targets = np.concatenate([np.concatenate([labels, z], axis=1)] * k
                                 + [np.concatenate([np.full((len(unlabelled), 1), -1.0, np.float32), z_u], axis=1)])
        return both.with_targets(targets)

    def setup(self, ctx: FitContext) -> None:
        super().setup(ctx)
        teacher, mode = self.resolve_teacher(ctx)
        if mode == "online":
            self._student_pre, self._student_size = ctx.model.preprocessing, ctx.model.image_size
            self.teacher = Frozen(teacher.module, copy_module=False)

    def teacher_input(self, x: Any) -> Any:
        """The student's batch as the teacher expects it (:meth:`transferkit.teachers.Teacher.adapt_batch`)."""
        return self._teacher.adapt_batch(x, self._student_pre, self._student_size)

    # --- the step ------------------------------------------------------------------------------------------------
    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x, y = batch
        if y.ndim == 2 and y.shape[1] == self._num_classes + 1 and y.dtype.is_floating_point:  # cached targets
            y, z_teacher = y[:, 0].long(), y[:, 1:]
            logits = model(x)
        else:
            x, y = self.mix((x, y))
            logits = model(x)
            z_teacher = self.teacher(self.teacher_input(x))
        ce = labelled_ce(self, logits, y)  # unlabelled rows (label -1) are taught by the teacher alone
        a = self.params.alpha * self.strength()
        kd = distillation(logits, z_teacher, self.params.temperature)
        return StepOutput((1.0 - a) * ce + a * kd, logits)

    def finish(self, model: TransferModel, result: FitResult) -> None:
        if self.teacher_record:
            result.extra["teacher"] = dict(self.teacher_record)

    def describe(self) -> dict[str, Any]:
        """The resolved parameters, the teacher as a short description (it may be a Python object)."""
        params = {f.name: getattr(self.params, f.name) for f in dataclasses.fields(self.params)}
        t = params.get("teacher")
        if not isinstance(t, str | type(None)):
            params["teacher"] = f"<{type(t).__name__}>"
        out = {"name": self.name, "params": params}
        if self.teacher_record:
            out["teacher"] = dict(self.teacher_record)
        return out
