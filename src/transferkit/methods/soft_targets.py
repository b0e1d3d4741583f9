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
import torch.nn.functional as F

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


def _stats(pre: Any) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(pre.mean if pre.mean is not None else (0.0, 0.0, 0.0), dtype=torch.float32)
    std = torch.tensor(pre.std if pre.std is not None else (1.0, 1.0, 1.0), dtype=torch.float32)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


@register
class SoftTargets(RegularisedMethod):
    name: ClassVar[str] = "soft-targets"
    summary: ClassVar[str] = "cross-entropy plus distillation of a saved teacher model's soft targets (KD)"
    Params: ClassVar[type] = SoftTargetParams

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self._convert = "none"

    def setup(self, ctx: FitContext) -> None:
        from ..model import load_model

        super().setup(ctx)
        teacher = load_model(self.params.teacher, trust_code=bool(self.params.trust_code))
        student = ctx.model
        if list(teacher.classes) != list(student.classes):
            raise ConfigError(
                f"The teacher at '{self.params.teacher}' was trained on classes {teacher.classes[:5]} but the data "
                f"has {student.classes[:5]}; give a teacher trained on the same label set, in the same order."
            )
        t_pre, s_pre = teacher.preprocessing, student.preprocessing
        if t_pre.modality != s_pre.modality:
            raise ConfigError(f"The teacher takes {t_pre.modality} inputs but the student {s_pre.modality}; "
                              "give a teacher for the same kind of data.")
        if t_pre.modality == "text" and (t_pre.tokenizer, t_pre.max_length) != (s_pre.tokenizer, s_pre.max_length):
            raise ConfigError("A text teacher must use the student's tokenizer and max_length (the batch holds token "
                              "ids); choose a teacher and student with the same tokenizer.")
        if t_pre.modality == "image":
            same = (teacher.image_size, t_pre.mean, t_pre.std) == (student.image_size, s_pre.mean, s_pre.std)
            self._convert = "none" if same else "image"
            s_mean, s_std = _stats(s_pre)
            t_mean, t_std = _stats(t_pre)
            self.register_buffer("_s_mean", s_mean, persistent=False)
            self.register_buffer("_s_std", s_std, persistent=False)
            self.register_buffer("_t_mean", t_mean, persistent=False)
            self.register_buffer("_t_std", t_std, persistent=False)
            self._t_size = int(teacher.image_size)
        self.teacher = Frozen(teacher, copy_module=False)

    def teacher_input(self, x: Any) -> Any:
        """The student's batch as the teacher expects it (see the module docstring)."""
        if self._convert != "image":
            return x
        raw = x.float() * self._s_std + self._s_mean
        if raw.shape[-1] != self._t_size or raw.shape[-2] != self._t_size:
            raw = F.interpolate(raw, size=(self._t_size, self._t_size), mode="bilinear", align_corners=False,
                                antialias=True)
        return (raw - self._t_mean) / self._t_std

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x, y = self.mix(batch)
        logits = model(x)
        ce = self.classification_loss(logits, y)
        z_teacher = self.teacher(self.teacher_input(x))
        a = self.params.alpha * self.strength()
        kd = distillation(logits, z_teacher, self.params.temperature)
        return StepOutput((1.0 - a) * ce + a * kd, logits)
