"""The one training loop, on Hugging Face Accelerate (CPU, one GPU or many, unchanged).

It knows no method by name: every method-specific thing (which parameters learn at which rate, the loss of a step,
extra batches, epoch-dependent freezing) goes through the :class:`~transferkit.methods.base.Method` interface, whose
vocabulary (:class:`~transferkit.train.contract.FitContext`, ``StepOutput``, ``FitResult``) lives in
:mod:`transferkit.train.contract`, so this package never imports the methods. The pipeline
(:mod:`transferkit.pipeline`) builds the fit's one ``FitContext`` and calls :func:`run`; :func:`fit` is the same loop
for callers that hold the pieces rather than a context (tests, benchmarks).

Per-epoch scores besides the validation metrics come from ``scorers`` (``name -> fn(model) -> float``, e.g. the
target-label-free validators of domain adaptation): each lands in the epoch's history row, and ``train.monitor`` may
name any row key (keys containing "loss" are minimised, all others maximised). Source-sample selection reaches the
loop as ``sample_weights``: the training loader then draws examples in proportion to them (see
:class:`~transferkit.data.loaders.EpochBatchSampler`), so it works in front of any method.

Reproducibility and resume: all RNGs are reseeded at each epoch start from ``(seed, epoch)``, and a checkpoint
(model, method, optimizer, scheduler, history, early-stopping state, best weights) is written atomically at the end
of every epoch. A run killed at any point and resumed repeats the interrupted epoch exactly, so it ends with the
same metrics as an uninterrupted run with the same seed.

Divergence: a non-finite training loss (or non-finite weights at the end of an epoch) stops the run at once with a
:class:`~transferkit.errors.RunError` naming the epoch, the step and the learning rate, before that epoch's
checkpoint is written, so the checkpoint on disk is the last good epoch. Resuming it with a lower ``train.lr`` is
allowed: the optimizer's and the scheduler's learning rates are scaled by the ratio of the new ``train.lr`` to the
checkpoint's. The check costs no device synchronisation per step on a GPU: the losses are kept on the device and
looked at every :data:`FINITE_CHECK_EVERY` steps (every step on a CPU, where reading a value is free); with several
processes it is made once per epoch, on the loss summed over all of them, so every process stops together.

Several processes (``accelerate launch`` / ``torchrun``, one per GPU, or several CPU processes on gloo): the model and
the method are wrapped together as one module (:class:`_Step`) whose forward is the method's training step, and
Accelerate puts that in DistributedDataParallel. DDP then sees one forward per step that covers every trainable
parameter, the method's own included (a domain discriminator, LwF's source-head copy), however many times the method
calls the network inside the step, so all their gradients are averaged across processes. ``find_unused_parameters``
is on because freezing schedules and methods leave some parameters without a gradient in some steps; buffers are not
broadcast every step (L2-SP keeps the source weights as buffers), so batch-norm running statistics are each process's
own and rank 0's are the ones kept. Each process reads its own share of every training loader (the labelled batches
and any a method draws, such as target batches; see ``EpochBatchSampler``'s ``shard``); only rank 0 writes the
checkpoint.
"""

from __future__ import annotations

import copy
import math
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, TrainConfig
from ..data.base import Dataset
from ..data.devices import to_device
from ..errors import RunError
from ..evaluate.metrics import classification_metrics
from ..io import write_with
from ..model import TransferModel
from .contract import FitContext, FitResult, LoopMethod
from .inference import predict_logits, softmax
from .schedules import build_optimizer, build_scheduler
from .seeding import epoch_seed, seed_everything, set_deterministic

CHECKPOINT = "checkpoint.pt"
#: Steps between two looks at the training loss on a GPU (each look waits for the device to catch up).
FINITE_CHECK_EVERY = 16



def make_accelerator(cfg: TrainConfig) -> Any:
    """An Accelerator for this run's device and precision (the singleton state is reset between runs)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    use_cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RunError("'train.device' is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "no"
    if not use_cuda and mp == "fp16":
        mp = "no"  # fp16 autocast has no CPU kernels worth using
    AcceleratorState._reset_state(reset_partial_state=False)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
    return Accelerator(cpu=not use_cuda, mixed_precision=mp, kwargs_handlers=[ddp])


def fit(
    model: TransferModel,
    method: LoopMethod,
    train: Dataset,
    val: Dataset | None,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    extra: dict[str, Dataset] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    scorers: dict[str, Callable[[TransferModel], float]] | None = None,
    sample_weights: Any = None,
) -> FitResult:
    """Train ``model`` with ``method`` on ``train``, keeping the best epoch by ``cfg.monitor`` (see :func:`run`).

    The loop for a caller that holds the pieces rather than a :class:`FitContext`; it builds the context and runs.
    It calls no method hook beyond the loop's own (a LoRA model keeps its adapters unmerged): a whole fit with the
    method's end-of-fit work is :func:`transferkit.pipeline.fit_pipeline`.
    """
    ctx = FitContext(model, train, model_cfg, cfg, extra=dict(extra or {}), val=val,
                     sample_weights=sample_weights, scorers=dict(scorers or {}), checkpoint_dir=checkpoint_dir,
                     resume=resume)
    return run(ctx, method, on_epoch_end=on_epoch_end)


def run(
    ctx: FitContext,
    method: LoopMethod,
    train: Dataset | None = None,
    *,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``ctx.model`` with ``method`` on ``train`` (default ``ctx.train``), keeping the best epoch.

    The monitor ``ctx.train_config.monitor`` is a validation metric of ``ctx.val`` (``val_accuracy``...), or the
    name of one of ``ctx.scorers``; without either (no val split for a ``val_*`` monitor) the last epoch is kept.
    ``ctx.sample_weights`` weigh the rows of ``ctx.train``, so they apply only when the loop trains on it (a method
    whose ``training_data`` is another split trains on that split unweighted; ``ctx.train.with_targets(...)`` is the
    same rows). Fills in ``ctx.make_loader``,
    ``ctx.device`` and ``ctx.steps_per_epoch`` before it calls ``method.setup(ctx)``.
    """
    from ..data.loaders import batches_per_epoch, make_loader

    model, val, cfg = ctx.model, ctx.val, ctx.train_config
    if train is None:
        train = ctx.train
    same_rows = train is ctx.train or train.meta.get("rows_of") is ctx.train  # ctx.train carrying per-row targets
    sample_weights = ctx.sample_weights if same_rows else None
    checkpoint_dir, resume = ctx.checkpoint_dir, ctx.resume
    set_deterministic(cfg.deterministic)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    pre = model.preprocessing
    shard = (accelerator.process_index, accelerator.num_processes) if accelerator.num_processes > 1 else None

    def loader(ds: Dataset, *, train: bool, epoch: int = 0, batch_size: int | None = None, drop_last: bool = False,
               augment: str | None = None, weights: Any = None):
        return make_loader(
            ds, pre, image_size=model.image_size, train=train,
            augment=(augment or cfg.augment) if train else "none", batch_size=batch_size or cfg.batch_size,
            seed=cfg.seed, epoch=epoch, num_workers=cfg.num_workers, drop_last=drop_last,
            pin_memory=device.type == "cuda", weights=weights, shard=shard if train else None,
        )

    scorers = dict(ctx.scorers)
    if sample_weights is not None and len(sample_weights) != len(train):
        raise RunError(f"{len(sample_weights)} sample weights for {len(train)} training examples; give one each.")

    steps_per_epoch = math.ceil(batches_per_epoch(len(train), cfg.batch_size, train=True) / accelerator.num_processes)
    ctx.make_loader, ctx.device, ctx.steps_per_epoch = loader, device, steps_per_epoch
    method.setup(ctx)
    model.to(device)
    method.to(device)
    optimizer = build_optimizer(method.param_groups(model), cfg, fused=device.type == "cuda")
    total_steps = steps_per_epoch * cfg.epochs
    scheduler, sched_when = build_scheduler(optimizer, cfg, total_steps)
    model, step, optimizer = _prepare(accelerator, model, method, optimizer, cfg.epochs)

    history: list[dict[str, Any]] = []
    start_epoch, best_value, best_epoch, bad_epochs = 0, -math.inf, -1, 0
    best_state = _cpu_state(model)
    ckpt_path = checkpoint_dir / CHECKPOINT if checkpoint_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = _load_checkpoint(ckpt_path)
        try:
            model.load_state_dict(state["model"])
            method.load_state_dict(state["method"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history, start_epoch = state["history"], int(state["epoch"])
            best_value, best_epoch, bad_epochs = float(state["best_value"]), int(state["best_epoch"]), int(state["bad"])
            best_state = state["best_state"]
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
            raise RunError(f"The checkpoint '{ckpt_path}' does not fit this run ({_short(e)}) and was not loaded; "
                           "start the run again with --overwrite.") from None
        _rescale_lr(optimizer, scheduler, cfg.lr / float(state.get("train_lr", cfg.lr)))

    sign = -1.0 if "loss" in cfg.monitor else 1.0
    stopped_early = False
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(epoch_seed(cfg.seed, epoch))
        method.on_epoch_start(model, epoch)
        method.train_mode(model)
        train_loader = loader(train, train=True, epoch=epoch, weights=sample_weights)
        try:
            row = _train_epoch(accelerator, model, method, step, optimizer, scheduler, sched_when, train_loader, cfg,
                               epoch, steps_per_epoch, total_steps)
        except _Diverged as d:  # the checkpoint on disk is still the last good epoch's
            raise RunError(d.sentence(cfg, resumable=ckpt_path is not None and epoch > 0)) from None
        row["lr"] = max(g["lr"] for g in optimizer.param_groups)
        if val is not None and len(val):
            logits = predict_logits(model, val, batch_size=max(cfg.batch_size, 128),
                                    loader=lambda ds: loader(ds, train=False, batch_size=max(cfg.batch_size, 128)))
            m = classification_metrics(val.labels, softmax(logits), val.classes, top_k=())
            row.update(val_loss=m["loss"], val_accuracy=m["accuracy"], val_macro_f1=m["macro_f1"])
        if scorers:
            row.update(_run_scorers(model, scorers))
        monitored = cfg.monitor in row
        value = sign * float(row[cfg.monitor]) if monitored else float(epoch)  # nothing to monitor: keep the last
        if sched_when == "epoch":
            scheduler.step(sign * value if monitored else 0.0)
        history.append(row)
        if value > best_value + 1e-12:
            best_value, best_epoch, bad_epochs = value, epoch, 0
            best_state = _cpu_state(model)
        else:
            bad_epochs += 1
        if on_epoch_end is not None:
            on_epoch_end(row)
        if ckpt_path is not None and accelerator.is_main_process:
            _save_checkpoint(ckpt_path, {
                "model": _cpu_state(model), "method": _cpu_dict(method.state_dict()),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": history,
                "epoch": epoch + 1, "best_value": best_value, "best_epoch": best_epoch, "bad": bad_epochs,
                "best_state": best_state, "train_lr": cfg.lr,
            })
        if cfg.early_stopping is not None and monitored and bad_epochs >= cfg.early_stopping:
            stopped_early = True
            break

    # Drop Accelerate's wrappers, the mixed-precision autocast on forward included: the returned model computes in
    # float32 like one rebuilt by load_model, so predictions before and after save/load agree.
    base = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    del step
    return FitResult(
        history=history, best_epoch=best_epoch + 1, best_state=best_state, stopped_early=stopped_early,
        seconds=time.perf_counter() - t0,
        trainable_params=sum(p.numel() for p in base.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in base.parameters()),
    )


def _run_scorers(model: TransferModel, scorers: dict[str, Callable[[TransferModel], float]]) -> dict[str, float]:
    """Each scorer on the model in eval mode without gradients; training mode is restored by the next epoch."""
    model.eval()
    with torch.no_grad():
        out = {name: float(fn(model)) for name, fn in scorers.items()}
    return out


def _train_epoch(accelerator, model, method, step, optimizer, scheduler, sched_when, train_loader, cfg, epoch,
                 steps_per_epoch, total_steps) -> dict[str, Any]:
    from tqdm.auto import tqdm

    device = accelerator.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    labelled = torch.zeros((), device=device, dtype=torch.long)  # rows with a label (not a transfer set's -1)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    watch = _LossWatch(device, every=1 if device.type == "cpu" else FINITE_CHECK_EVERY,
                       per_step=accelerator.num_processes == 1)
    bar = tqdm(train_loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not cfg.progress or not accelerator.is_main_process, mininterval=1.0, dynamic_ncols=True)
    for i, batch in enumerate(bar):
        x, y = to_device(batch, device)
        method.on_step_start(epoch * steps_per_epoch + i, total_steps)
        with accelerator.autocast():
            loss, logits = step(x, y)
        accelerator.backward(loss)
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        if sched_when == "step":
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        n = int(y.shape[0])
        loss_sum += loss.detach().float() * n
        if logits is not None and y.ndim == 1:
            known = y >= 0
            correct += (logits.detach().argmax(1) == y).sum()  # argmax is never -1: unlabelled rows never count
            labelled += known.sum()
        seen += n
        bad = watch.add(i, loss.detach())
        if bad is not None:
            bar.close()
            raise _diverged(epoch, bad, steps_per_epoch, watch.value(bad), optimizer)
        if bar.disable is False and i % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / max(1, seen):.4f}")
    bar.close()
    _check_epoch_finite(accelerator, watch, loss_sum, params, epoch, steps_per_epoch, optimizer)
    return {"epoch": epoch + 1, "train_loss": loss_sum.item() / max(1, seen),
            "train_accuracy": correct.item() / max(1, int(labelled.item()))}


class _Diverged(Exception):
    """Raised inside an epoch when the loss or the weights stopped being finite; :func:`fit` words it for the user."""

    def __init__(self, epoch: int, step: int | None, steps: int, value: float, lr: float) -> None:
        super().__init__(epoch, step, steps, value, lr)
        self.epoch, self.step, self.steps, self.value, self.lr = epoch, step, steps, value, lr

    def sentence(self, cfg: TrainConfig, resumable: bool) -> str:
        """Where it diverged, at which learning rate, and how to continue (from the last good epoch when saved)."""
        where = (f"at epoch {self.epoch + 1}, step {self.step + 1} of {self.steps}: the loss became {self.value}"
                 if self.step is not None else f"in epoch {self.epoch + 1}: the loss or the weights became non-finite")
        lower = f"lower train.lr (e.g. --set train.lr={cfg.lr / 10:g})"
        if not cfg.grad_clip:
            lower += " or set train.grad_clip (e.g. 1.0)"
        then = (f"continue from the last good epoch ({self.epoch}) with --resume" if resumable
                else "train again")
        return f"Training diverged {where} with learning rate {self.lr:.3g}; {lower} and {then}."


class _LossWatch:
    """Finds the first non-finite training loss of an epoch without a device synchronisation per step.

    The losses since the last look stay on the device (one tiny copy per step); every ``every`` steps one
    ``any()`` reads whether one of them is non-finite. With ``per_step=False`` (several processes, where one
    process stopping alone would leave the others waiting in the gradient exchange) it only looks at the end of the
    epoch, through :func:`_check_epoch_finite`.
    """

    def __init__(self, device: torch.device, *, every: int, per_step: bool) -> None:
        self.every = every if per_step else 0
        self.window = torch.zeros(max(1, every), device=device)
        self.start = 0  # the step of window[0]
        self.count = 0  # losses in the window
        self.bad_values: dict[int, float] = {}

    def add(self, i: int, loss: torch.Tensor) -> int | None:
        """Record step ``i``'s loss; the first non-finite step when this look finds one, else None."""
        if not self.every:
            return None
        if self.count == 0:
            self.start = i
        self.window[self.count] = loss.float()
        self.count += 1
        return self.look() if self.count == self.every else None

    def look(self) -> int | None:
        """The first non-finite step among the recorded losses (one device read), else None; empties the window."""
        if not self.count:
            return None
        w = self.window[: self.count]
        self.count = 0
        bad = ~torch.isfinite(w)
        if not bool(bad.any()):
            return None
        k = int(bad.nonzero()[0])
        self.bad_values[self.start + k] = float(w[k])
        return self.start + k

    def value(self, step: int) -> float:
        return self.bad_values.get(step, math.nan)


def _check_epoch_finite(accelerator, watch: _LossWatch, loss_sum: torch.Tensor, params: list[torch.Tensor],
                        epoch: int, steps: int, optimizer) -> None:
    """At the end of an epoch: the losses not looked at yet, then the weights (once, summed over processes)."""
    bad = watch.look()
    if bad is not None:
        raise _diverged(epoch, bad, steps, watch.value(bad), optimizer)
    norms = torch._foreach_norm([p.detach() for p in params]) if params else []
    flags = torch.stack([(~torch.isfinite(loss_sum)).float(),
                         *(((~torch.isfinite(n)).float()) for n in norms)]).sum()
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags, reduction="sum")
    if float(flags) > 0:
        raise _diverged(epoch, None, steps, math.nan, optimizer)


def _diverged(epoch: int, step: int | None, steps: int, value: float, optimizer) -> _Diverged:
    return _Diverged(epoch, step, steps, value, max(g["lr"] for g in optimizer.param_groups))


class _Step(torch.nn.Module):
    """The model and the method as one module whose forward is a training step (for DDP; see the module docstring)."""

    def __init__(self, model: TransferModel, method: LoopMethod) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.method.training_step(self.model, (x, y))
        return out.loss, out.logits


def _trainable_in(model: TransferModel, method: LoopMethod, epoch: int) -> list[torch.nn.Parameter]:
    """The model's parameters that train in ``epoch`` (applies that epoch's freezing; the caller restores it)."""
    method.apply_freezing(model, epoch)
    return [p for p in model.parameters() if p.requires_grad]


def _prepare(accelerator, model, method, optimizer, epochs: int):
    """``(model, step, optimizer)``: ``step(x, y)`` is the training step; with several processes it is a DDP-wrapped
    :class:`_Step` and ``model`` stays the plain module the method sees."""
    if accelerator.num_processes > 1:
        # DDP synchronises only the parameters that require a gradient when it is built, so build it with every
        # parameter that trains in any epoch (freeze-unfreeze and freeze_blocks schedules unfreeze later), then go
        # back to the first epoch's freezing (setup's state); unused ones are handled by find_unused_parameters.
        ever = [p for e in range(epochs) for p in _trainable_in(model, method, e)]
        for q in ever:
            q.requires_grad_(True)
        with warnings.catch_warnings():
            # torch >= 2.12 prefers DDP's forward_sync_buffers, which Accelerate's DDP kwargs cannot pass yet;
            # broadcast_buffers=False still does what the module docstring says.
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*deprecated")
            step, optimizer = accelerator.prepare(_Step(model, method), optimizer)
        method.apply_freezing(model, 0)
        return model, step, optimizer
    model, optimizer = accelerator.prepare(model, optimizer)
    method.to(accelerator.device)
    return model, _Step(model, method), optimizer


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _cpu_dict(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.detach().cpu() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in state.items()}


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint as plain tensors (``weights_only=True``); one sentence when it is anything else or damaged."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunError(f"The checkpoint '{path}' is not a plain tensor file and was not loaded; start the run again "
                       "with --overwrite.") from None
    except Exception as e:  # noqa: BLE001 - a damaged file raises anything from EOFError to IndexError
        raise RunError(f"The checkpoint '{path}' cannot be read ({_short(e)}) and was not loaded; start the run "
                       "again with --overwrite.") from None


def _short(e: BaseException) -> str:
    """The first sentence of an exception's message, without its full stop, for use inside a sentence of ours."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)[0].rstrip(".")[:160]


def _rescale_lr(optimizer: torch.optim.Optimizer, scheduler: Any, factor: float) -> None:
    """Scale every learning rate the optimizer and the scheduler hold by ``factor`` (``train.lr`` changed on resume)."""
    if factor == 1.0:
        return
    for g in optimizer.param_groups:
        g["lr"] *= factor
        if "initial_lr" in g:
            g["initial_lr"] *= factor
    for attr in ("base_lrs", "_last_lr"):
        values = getattr(scheduler, attr, None)
        if isinstance(values, list):
            setattr(scheduler, attr, [v * factor for v in values])


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda tmp: torch.save(state, tmp))
