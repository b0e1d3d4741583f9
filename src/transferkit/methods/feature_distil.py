"""What the online distillation methods share: a torch teacher on the student's own batch, and paired tapped layers.

Every method of this family (``fitnets``, ``attention``, ``rkd``, ``dist``) trains with one loss,

    L = CE(y_hat, y) + s(t) * ( R(student outputs; teacher outputs) + alpha * T^2 * KL(p_t^T || p_s^T) ),

where ``R`` is the method's distillation term, ``s(t)`` the lambda schedule of :mod:`.regularised` and the optional
last term Hinton et al.'s logit distillation at temperature ``T`` (``alpha = 0`` by default: the method alone).

**The teacher** (``teacher``: anything :func:`transferkit.teachers.load_teacher` takes, e.g. a transferkit run or
saved-model folder, or a :class:`~transferkit.teachers.Teacher` from Python) runs *online*: each step it sees the
student's own augmented (and mixed) batch, converted by the teacher's ``adapt_batch`` to its normalisation and size
("consistent teaching", Beyer et al. 2022), under ``no_grad`` and in evaluation mode. Features need a torch module
to tap, so a teacher that is not one (ONNX, Keras, scikit-learn, a callable) is refused with a sentence that points
to ``kd`` with ``teacher_mode: cached``; ``teacher_mode: cached`` is refused likewise. The teacher is held by the
method, not saved with the student: the student's folder loads as a plain model.

**Layers** (``student_layers`` / ``teacher_layers``: paired lists of block indices or module paths, the names of the
one tap mechanism :mod:`transferkit.backbones.taps`, e.g. ``["stage2"]`` and ``["features.18"]``; default the last
block of each) are read with :class:`~transferkit.backbones.taps.Taps` during the forward passes the step makes
anyway: no extra pass, and no hook outlives the step. A teacher's layers are paths inside its backbone
(``teacher.module.backbone``), which a transferkit or catalog teacher has.

**A transfer set**: ``fit(..., extra={"unlabelled": rows})`` adds rows without labels (label -1, see
:mod:`.transfer_set`); the teacher sees the student's augmented view of each, the cross-entropy covers the labelled
rows only and the distillation term every row (mixup / cutmix are then refused); ``labelled_share`` repeats the
labelled rows so they are about that share of each epoch (the hint, attention and relational terms teach no classes,
so the head learns from the labelled rows alone).

**Owned modules** (FitNets' projections) are built in ``setup`` from the shapes of one probe pass (two examples, no
gradients, both models in evaluation mode); as submodules of the method they are in its parameter group, at the
head's learning rate, and are dropped with the method after the fit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..backbones.taps import Taps, resolve_layers
from ..config import param
from ..data.base import Dataset
from ..data.devices import to_device
from ..data.sampling import subsample
from ..errors import ConfigError
from ..model import TransferModel, unwrap
from ..teachers import Teacher, load_teacher
from .base import FitContext, StepOutput
from .delta import layer_names
from .lwf import distillation
from .regularised import Frozen, RegularisedMethod, ScheduleParams
from .transfer_set import labelled_ce, transfer_set

TEACHER_MODES = ("online", "auto", "cached")


@dataclass
class TeacherParams(ScheduleParams):
    """The teacher and its mode, shared by the online distillation methods."""

    # a transferkit run or saved-model folder, a catalog backbone name with a head, or a Teacher from Python
    teacher: Any = field(default=None, metadata=param(required=(
        "This distillation method needs a teacher; set model.method_params.teacher to the folder of a saved "
        "transferkit model (or run) trained on the same classes.")))
    # online | auto (both: the teacher runs on the student's batch); cached is refused (features need the module)
    teacher_mode: str = field(default="online", metadata=param(choices=TEACHER_MODES))
    teacher_head: str | None = None  # for a backbone-name teacher: a run folder or .safetensors linear head
    trust_code: bool = False  # the teacher folder may name your own module: factory (a saved model is data)
    alpha: float = field(default=0.0, metadata=param(ge=0))  # weight of the optional logit-KD term
    temperature: float = field(default=4.0, metadata=param(gt=0))  # T of the logit-KD term
    # with a transfer set: the labelled rows are repeated to about this share of each epoch (0: each row once)
    labelled_share: float = field(default=0.0, metadata=param(ge=0, lt=1))


@dataclass
class LayerParams(TeacherParams):
    """Paired layers of the student and the teacher (block indices or module paths; default the last block)."""

    student_layers: list[int | str] | None = field(default=None, metadata=param(check=layer_names))
    teacher_layers: list[int | str] | None = field(default=None, metadata=param(check=layer_names))


class OnlineDistillation(RegularisedMethod):
    """Base of the online distillation methods (see the module docstring); subclasses define :meth:`distil_loss`."""

    Params: ClassVar[type] = LayerParams
    #: whether the method reads tapped layers (``dist`` reads only the logits)
    uses_layers: ClassVar[bool] = True

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self.student_paths: list[str] = []
        self.teacher_paths: list[str] = []
        self.teacher: Teacher | None = None

    # --- set-up -------------------------------------------------------------------------------------------
    def training_data(self, ctx: FitContext) -> Dataset:
        """The labelled split, then the unlabelled rows (label -1) when the fit was given some."""
        return transfer_set(ctx, self.name, self.params.labelled_share)

    def setup(self, ctx: FitContext) -> None:
        super().setup(ctx)
        student = ctx.model
        teacher = self._load_teacher(ctx)
        self.teacher = teacher
        self.teacher_net = Frozen(teacher.module, copy_module=False)
        if self.uses_layers:
            self.student_paths, self.teacher_paths = self._pair_layers(student, teacher.module)
            s_shapes, t_shapes = self._probe_shapes(ctx)
            self.build_owned(s_shapes, t_shapes)

    def _load_teacher(self, ctx: FitContext) -> Teacher:
        p = self.params
        if p.teacher_mode == "cached":
            raise ConfigError(f"Method '{self.name}' distils the teacher's inner layers, so its teacher must run on "
                              "the student's batches; set model.method_params.teacher_mode to online, or use method "
                              "'kd' with teacher_mode: cached.")
        student = ctx.model
        teacher = load_teacher(p.teacher, trust_code=bool(p.trust_code), classes=list(student.classes),
                               head=p.teacher_head)
        if not teacher.supports_online() or teacher.module is None:
            raise ConfigError(f"Method '{self.name}' needs a PyTorch teacher that runs on the student's batches, and "
                              f"the {teacher.kind} teacher '{teacher.name}' is not one; use method 'kd' with "
                              "model.method_params.teacher_mode: cached for it.")
        teacher.check_student(list(student.classes), student.preprocessing.modality)
        return teacher

    def _pair_layers(self, student: TransferModel, teacher_module: nn.Module) -> tuple[list[str], list[str]]:
        """Module paths of the paired student and teacher layers (resolved by the one tap mechanism)."""
        p = self.params
        t_backbone = getattr(teacher_module, "backbone", None)
        if not isinstance(t_backbone, nn.Module) or not hasattr(t_backbone, "blocks"):
            raise ConfigError(f"Method '{self.name}' taps the teacher's layers, so its teacher must be a transferkit "
                              "model or a catalog backbone with a head; use method 'kd' or 'dist' for this teacher.")
        s_names = p.student_layers if p.student_layers is not None else [-1]
        t_names = p.teacher_layers if p.teacher_layers is not None else [-1]
        if len(s_names) != len(t_names):
            raise ConfigError(f"model.method_params.student_layers names {len(s_names)} layers and teacher_layers "
                              f"{len(t_names)}; give the same number of each (they are compared in pairs).")
        if not s_names:
            raise ConfigError("model.method_params.student_layers is empty; name at least one layer or leave it unset "
                              "(the last block).")
        s_points = resolve_layers(student.backbone, s_names, setting="model.method_params.student_layers")
        t_points = resolve_layers(t_backbone, t_names, setting="model.method_params.teacher_layers")
        return [q.path for q in s_points], [q.path for q in t_points]

    def _probe_batch(self, ctx: FitContext) -> Any:
        """Two examples as the student's loader gives them (or, without a loader, two blank images)."""
        model = ctx.model
        if ctx.make_loader is not None and ctx.train is not None and len(ctx.train) > 0:
            x, _ = next(iter(ctx.make_loader(subsample(ctx.train, 2, seed=0), train=False, batch_size=2)))
            return x
        if model.preprocessing.modality == "image":
            size = int(model.image_size or 32)
            return torch.zeros(2, 3, size, size)
        raise ConfigError(f"Method '{self.name}' needs the training data to size its layers; train it through fit().")

    def _probe_shapes(self, ctx: FitContext) -> tuple[list[torch.Size], list[torch.Size]]:
        """The shapes of the tapped outputs on two examples (no gradients, evaluation mode, modes restored)."""
        model = ctx.model
        x = to_device(self._probe_batch(ctx), next(model.parameters()).device)
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            with torch.no_grad():
                s_maps, _ = self.student_outputs(model, x)
                t_maps, _ = self.teacher_outputs(model, x)
        finally:
            for m, mode in modes.items():
                m.training = mode
        return [m.shape for m in s_maps], [m.shape for m in t_maps]

    def build_owned(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        """Build the method's trainable modules from the paired output shapes (none by default)."""

    # --- the two forward passes ---------------------------------------------------------------------------
    def student_outputs(self, model: nn.Module, x: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The student's tapped outputs and logits from its one forward pass."""
        core = unwrap(model)
        if not self.uses_layers:
            return [], model(x)
        with Taps(core.backbone, self.student_paths) as taps:
            logits = model(x)
        return taps.in_order(), logits

    def teacher_outputs(self, model: nn.Module, x: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The teacher's tapped outputs and logits on the student's batch ``x`` (converted; no gradients)."""
        core = unwrap(model)
        assert self.teacher is not None
        xt = self.teacher.adapt_batch(x, core.preprocessing, core.image_size)
        if not self.uses_layers:
            return [], self.teacher_net(xt)
        with Taps(self.teacher_net.module.backbone, self.teacher_paths) as taps:
            logits = self.teacher_net(xt)
        return taps.in_order(), logits

    # --- training -----------------------------------------------------------------------------------------
    def distil_loss(self, s_maps: list[torch.Tensor], t_maps: list[torch.Tensor], logits: torch.Tensor,
                    t_logits: torch.Tensor) -> torch.Tensor:
        """The method's distillation term ``R`` (weights included) from the paired outputs and the logits."""
        raise NotImplementedError

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x, y = self.mix(batch)
        s_maps, logits = self.student_outputs(model, x)
        t_maps, t_logits = self.teacher_outputs(model, x)
        ce = labelled_ce(self, logits, y)  # unlabelled rows (label -1) are taught by the teacher alone
        term = self.distil_loss(s_maps, t_maps, logits, t_logits)
        logs = {"distil": float(term.detach())}
        if self.params.alpha > 0:
            term = term + self.params.alpha * distillation(logits, t_logits, self.params.temperature)
        return StepOutput(ce + self.strength() * term, logits, logs)

    def describe(self) -> dict[str, Any]:
        """The method's parameters for the run record; a teacher given as an object is recorded by its name."""
        params = {f.name: getattr(self.params, f.name) for f in dataclasses.fields(self.params)}
        if not isinstance(params["teacher"], str | type(None)):
            params["teacher"] = self.teacher.name if self.teacher is not None else type(params["teacher"]).__name__
        return {"name": self.name, "params": params}
