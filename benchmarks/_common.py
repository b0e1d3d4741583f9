"""Helpers shared by the benchmark scripts: a Markdown table printer, a wall-clock timer, the ``--device`` choice, the
machine's description and a timed method step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (floats shown with 4 significant digits)."""

    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def pick_device(choice: str) -> Any:
    """The torch device for a ``--device auto|cpu|cuda`` flag (auto: CUDA when there is one)."""
    import torch

    use_cuda = choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def machine(device: Any = None) -> str:
    """The hardware a figure was measured on: the GPU's name, or the CPU's model name, its AVX-512 and AMX support
    and torch's thread count (seeded runs give other numbers on CPUs with other float kernels)."""
    import platform

    import torch

    if device is not None and getattr(device, "type", device) == "cuda":
        return torch.cuda.get_device_name()
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    avx512 = "AVX-512" if "avx512f" in flags else "no AVX-512"
    amx = "AMX" if any(f.startswith("amx") for f in flags) else "no AMX"
    return f"{model} ({avx512}, {amx}), {torch.get_num_threads()} torch threads"


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` holds the seconds taken."""
    out: list[float] = []
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - t0)


class MethodStepper:
    """One method with its own fresh model (seed 0) and optimizer, taking timed training steps on given batches.

    A step is what the training loop does per batch: ``on_step_start``, the method's ``training_step`` (under bf16
    autocast where the GPU has it), ``backward`` and the optimizer step; :meth:`step` returns its duration on
    ``clock`` (``time.perf_counter`` for wall time, ``time.process_time`` for CPU time), synchronising CUDA first.
    ``extra`` is passed to the method as ``FitContext.extra`` (e.g. ``{"target": unlabelled_target}``).
    """

    def __init__(self, method: str, *, backbone: str, image_size: int | None, batch_size: int, train: Any,
                 device: Any, extra: dict[str, Any] | None = None, clock: Any = time.perf_counter) -> None:
        import torch

        from transferkit.backbones import build_backbone
        from transferkit.config import ModelConfig, TrainConfig
        from transferkit.data.loaders import make_loader
        from transferkit.methods import create_method
        from transferkit.methods.base import FitContext
        from transferkit.model import TransferModel
        from transferkit.train.schedules import build_optimizer

        torch.manual_seed(0)
        self.model = TransferModel(build_backbone(backbone), train.classes, image_size=image_size)
        self.method = create_method(method, {})
        cfg = TrainConfig(batch_size=batch_size, progress=False)
        pre = self.model.preprocessing

        def loader(ds, *, train, epoch=0, batch_size=None, drop_last=False, augment=None, weights=None):
            return make_loader(ds, pre, image_size=self.model.image_size, train=train,
                               augment=(augment or "none") if train else "none",
                               batch_size=batch_size or cfg.batch_size, epoch=epoch, drop_last=drop_last,
                               pin_memory=device.type == "cuda", weights=weights)

        self.method.setup(FitContext(self.model, train, ModelConfig(backbone=backbone), cfg, loader,
                                     extra=dict(extra or {}), device=device))
        self.model.to(device)
        self.method.to(device)
        self.opt = build_optimizer(self.method.param_groups(self.model), cfg, fused=device.type == "cuda")
        self.method.train_mode(self.model)
        self.method.on_epoch_start(self.model, 0)
        self.device = device
        self.autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.clock = clock
        self.steps = 0

    def step(self, batch: Any) -> float:
        """One timed training step on ``batch`` (already on the device)."""
        import torch

        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = self.clock()
        self.method.on_step_start(self.steps, 1000)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.method.training_step(self.model, batch)
        out.loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync()
        self.steps += 1
        return self.clock() - t0
