"""Soft targets from a saved teacher model: ``kd`` (:mod:`.kd`) in its online mode, under its original name.

    L(w) = (1 - a(t)) * CE(y_hat, y) + a(t) * T^2 * KL( softmax(z_teacher / T) || softmax(z_student / T) )

``z_teacher`` are the logits of a saved transferkit model (``teacher``: a folder written by ``save()`` or a finished
run folder, trained on the same label set) on the student's own training batch, augmentation and mixup included (the
"consistent teaching" of Beyer et al. 2022: both see the same view), computed per step without gradients; ``T`` is
the temperature and ``T^2`` keeps the gradient scale independent of it. ``a(t) = a * s(t)`` with the lambda
schedule of :mod:`.regularised`.

The teacher folder is data like any saved model: loading it imports and runs nothing it names, so a teacher whose
backbone is your own ``module:`` factory also needs ``method_params.trust_code: true`` (set it only for a teacher
from a source you trust; the built-in backbones need no opt-in).

The teacher may have another backbone than the student: the batch is converted by
:meth:`transferkit.teachers.Teacher.adapt_batch` (images: undo the student's mean/std, resize bilinearly with
antialiasing, apply the teacher's; text teachers must share the student's tokenizer; tabular ones the feature count).
For other teacher kinds (ONNX, Keras, scikit-learn) and the cached mode, use ``kd``. The teacher is held by the
method (frozen, evaluation mode), not saved with the student.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import param
from ..errors import ConfigError
from .base import FitContext
from .kd import KD
from .registry import register
from .regularised import ScheduleParams


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
class SoftTargets(KD):
    name: ClassVar[str] = "soft-targets"
    summary: ClassVar[str] = "cross-entropy plus distillation of a saved teacher model's soft targets (KD)"
    Params: ClassVar[type] = SoftTargetParams

    def resolve_teacher(self, ctx: FitContext) -> tuple[Any, str]:
        teacher, mode = super().resolve_teacher(ctx)  # no teacher_mode parameter: always online
        if teacher.module is None:
            raise ConfigError(f"Method 'soft-targets' needs a torch teacher (a saved transferkit model); use method "
                              f"'kd' for the {teacher.kind} teacher '{teacher.name}'.")
        return teacher, mode
