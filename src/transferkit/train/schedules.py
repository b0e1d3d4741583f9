"""Learning-rate schedules: linear warm-up then cosine decay or constant, or reduce-on-plateau (per epoch)."""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau, str]:
    """Return ``(scheduler, when)`` where ``when`` is ``"step"`` (call after each step) or ``"epoch"``.

    cosine: ``lr(t) = lr0 * t / w`` for ``t < w`` warm-up steps, then ``lr0 * 0.5 * (1 + cos(pi * (t - w) / (T - w)))``.
    """
    warmup = int(round(cfg.warmup_fraction * total_steps))
    if cfg.schedule == "plateau":
        mode = "min" if "loss" in cfg.monitor else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=1), "epoch"

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - warmup)
        t = min(1.0, (step - warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "step"


def build_optimizer(groups: list[dict], cfg: TrainConfig, *, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or SGD with Nesterov momentum; biases and norms get no weight decay.

    ``fused`` (for CUDA parameters) runs one kernel per parameter group instead of several per tensor: the
    per-block groups of layer-wise learning rates would otherwise cost many small kernel launches per step.
    """
    split: list[dict] = []
    for g in groups:
        decay = [p for p in g["params"] if p.ndim > 1]
        no_decay = [p for p in g["params"] if p.ndim <= 1]
        for params, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if params:
                split.append({**g, "params": params, "weight_decay": wd, "initial_lr": g["lr"]})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(split, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, fused=fused or None)
    return torch.optim.AdamW(split, lr=cfg.lr, fused=fused or None)
