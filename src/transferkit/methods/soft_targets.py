"""Soft targets from a teacher (knowledge distillation, Hinton et al. 2015): learn the teacher's outputs too.

    L(w) = (1 - a(t)) * CE(y_hat, y) + a(t) * T^2 * KL( softmax(z_teacher / T) || softmax(z_student / T) )

``z_teacher`` are the logits of a saved transferkit model (``teacher``: a folder written by ``save()`` or a finished
run folder, trained on the same label set) on the student's own training batch, augmentation and mixup included (the
"consistent teaching" of Beyer et al. 2022: both see the same view), computed per step without gradients; ``T`` is
the temperature and ``T^2`` keeps the gradient scale independent of it. ``a(t) = a * s(t)`` with the lambda
schedule of :mod:`.regularised`.

The teacher folder is data like any saved model: loading it imports and runs nothing it names, so a teacher whose
backbone is your own ``module:`` factory also needs ``method_params.trust_code: true`` (set it only for a teacher
from a source you trust; the built-in backbones need no opt-in).

The teacher may have another backbone than the student. Image batches are converted from the student's normalisation
and size to the teacher's (undo the student's mean/std, resize bilinearly with antialiasing, apply the teacher's);
text teachers must share the student's tokenizer (the batch holds token ids); tabular ones the feature count.
The teacher is held by the method (frozen, evaluation mode), not saved with the student.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..config import param
from ..errors import ConfigError
from ..model import TransferModel
from .base import FitContext, StepOutput
from .lwf import distillation
from .registry import register
from .regularised import Frozen, RegularisedMethod, ScheduleParams


@dataclass
class SoftTargetParams(ScheduleParams):
    # folder of a saved transferkit model trained on the same classes
    teacher: str | None = field(default=None, metadata=param(required=(
        "Method 'soft-targets' needs a teacher; set model.method_params.teacher to the folder of a saved transferkit "
        "model trained on the same classes.")))
    # a: weight of the distillation term (1 - a on the cross-entropy)
    alpha: float = field(default=0.5, metadata=param(ge=0, le=1))
    temperature: float = field(default=2.0, metadata=param(gt=0))  # T
    trust_code: bool = False  # the teacher folder may name your own module: factory (a saved model is data)


@register
class SoftTargets(RegularisedMethod):
    name: ClassVar[str] = "soft-targets"
    summary: ClassVar[str] = "cross-entropy plus distillation of a saved teacher model's soft targets (KD)"
    Params: ClassVar[type] = SoftTargetParams

    def setup(self, ctx: FitContext) -> None:
        from ..teachers import load_teacher

        super().setup(ctx)
        student = ctx.model
        teacher = load_teacher(self.params.teacher, trust_code=bool(self.params.trust_code))
        if teacher.module is None:
            raise ConfigError(f"Method 'soft-targets' needs a torch teacher (a saved transferkit model); use method "
                              f"'kd' with teacher_mode: cached for the {teacher.kind} teacher '{teacher.name}'.")
        teacher.check_student(list(student.classes), student.preprocessing.modality)
        problem = teacher.online_problem(student.preprocessing)
        if problem is not None:
            raise ConfigError(problem)
        self._teacher = teacher
        self._student_pre, self._student_size = student.preprocessing, student.image_size
        self.teacher = Frozen(teacher.module, copy_module=False)

    def teacher_input(self, x: Any) -> Any:
        """The student's batch as the teacher expects it (:meth:`transferkit.teachers.Teacher.adapt_batch`)."""
        return self._teacher.adapt_batch(x, self._student_pre, self._student_size)

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x, y = self.mix(batch)
        logits = model(x)
        ce = self.classification_loss(logits, y)
        z_teacher = self.teacher(self.teacher_input(x))
        a = self.params.alpha * self.strength()
        kd = distillation(logits, z_teacher, self.params.temperature)
        return StepOutput((1.0 - a) * ce + a * kd, logits)
