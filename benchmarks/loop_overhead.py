"""Training-loop overhead: ``TransferClassifier.fit`` with its default settings vs a minimal hand-written PyTorch loop.

Same model (MobileNetV2-ImageNet + a new linear head), same data (Animal-MNIST training images at 64 px), one epoch,
same batch size and the same maths as transferkit's default recipe: AdamW (weight decay 1e-4, head at 10x the
backbone's learning rate), gradient clipping at norm 1, cosine schedule after a 5 % linear warm-up, float32.

Both are timed from their first line: the hand-written loop from building the model to its last optimiser step,
transferkit from the call of ``fit`` to its return (building the model, the Accelerator, the data loader, the
progress bar, deterministic kernels, per-step bookkeeping: everything it does besides the maths counts against it).
The hand-written loop is what a plain script does: inputs as one pre-made, normalised tensor, PyTorch's default
(non-deterministic) kernels, no progress bar. The variants switch one default off at a time, to say what costs what.
Each is run ``--repeats`` times, alternating, in one process; the best images/second of each is compared (best-of-n
is the least noisy estimate on a shared CPU). ``--clock cpu`` times with the process's CPU time instead of the wall
clock: on a CPU shared with other jobs it counts only this process's work (on a quiet machine the two agree, as the
loop does not wait on anything but the CPU).

    .venv/bin/python benchmarks/loop_overhead.py [--n 1024] [--repeats 3] [--clock wall|cpu] [--variants default ...]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

from transferkit import TransferClassifier  # noqa: E402
from transferkit.backbones import build_backbone  # noqa: E402
from transferkit.config import DataConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.data.base import Dataset  # noqa: E402
from transferkit.data.loaders import make_loader  # noqa: E402
from transferkit.model import TransferModel  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter
BACKBONE, IMAGE_SIZE, LR, WEIGHT_DECAY, CLIP, WARMUP = "mobilenet_v2.imagenet", 64, 1e-3, 1e-4, 1.0, 0.05
#: transferkit's settings per variant; everything not named keeps TrainConfig's default.
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "no-progress": {"progress": False},
    "non-deterministic": {"deterministic": False},
    "neither": {"progress": False, "deterministic": False},
}


def hand_written(x: torch.Tensor, y: torch.Tensor, classes: list[str], batch: int) -> float:
    """Images/second of a plain PyTorch loop doing transferkit's default maths, timed from building the model."""
    torch.use_deterministic_algorithms(False)  # PyTorch's default (transferkit's fit leaves it switched on)
    _sync()
    t0 = clock()
    torch.manual_seed(0)
    model = TransferModel(build_backbone(BACKBONE), classes, image_size=IMAGE_SIZE).to(DEVICE)
    model.train()
    opt = torch.optim.AdamW([
        {"params": model.backbone.parameters(), "lr": LR},
        {"params": model.head.parameters(), "lr": LR * 10},
    ], weight_decay=WEIGHT_DECAY)
    total = math.ceil(len(x) / batch)
    warm = max(1, int(WARMUP * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
    x, y = x.to(DEVICE), y.to(DEVICE)
    perm = torch.randperm(len(x), device=DEVICE)
    for i in range(0, len(x), batch):
        idx = perm[i : i + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    _sync()
    return len(x) / (clock() - t0)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def toolkit(train: Dataset, batch: int, settings: dict[str, object]) -> tuple[float, float]:
    """Images/second of ``TransferClassifier.fit`` timed from its call, and the wall seconds it spent before the
    first epoch and after the last (the whole call minus the loop's own wall clock)."""
    clf = TransferClassifier(backbone=BACKBONE, method="finetune", image_size=IMAGE_SIZE, epochs=1, batch_size=batch,
                             lr=LR, mixed_precision="no", **settings)
    _sync()
    t0, w0 = clock(), time.perf_counter()
    clf.fit(train)
    _sync()
    seconds, wall = clock() - t0, time.perf_counter() - w0
    return len(train) / seconds, wall - clf.fit_result_.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clock", default="wall", choices=list(CLOCKS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    train = load_data(DataConfig(name="animal-mnist", train_size=args.n)).train
    pre = build_backbone(BACKBONE).preprocessing
    xs, ys = zip(*make_loader(train, pre, image_size=IMAGE_SIZE, train=False, batch_size=256), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    runs: dict[str, list[float]] = {"hand-written": []}
    outside: dict[str, list[float]] = {}
    jobs: list[tuple[str, Callable[[], None]]] = [("hand-written", lambda: runs["hand-written"].append(
        hand_written(x, y, train.classes, args.batch)))]
    for name in args.variants:
        def run(name: str = name) -> None:
            speed, extra = toolkit(train, args.batch, VARIANTS[name])
            runs.setdefault(name, []).append(speed)
            outside.setdefault(name, []).append(extra)
        jobs.append((name, run))
    for r in range(args.repeats):
        for name, job in jobs:
            job()
            print(f"repeat {r + 1}: {name} {runs[name][-1]:.1f} images/s", flush=True)
    hand = max(runs["hand-written"])
    rows = [["hand-written loop (pre-made tensors)", "-", hand, _range(runs["hand-written"]), "-", 1.0]]
    for name in args.variants:
        label = "transferkit fit, " + (", ".join(f"{k}={v}" for k, v in VARIANTS[name].items()) or "default settings")
        rows.append([label, _settings(VARIANTS[name]), max(runs[name]), _range(runs[name]),
                     f"{min(outside[name]):.2f}", max(runs[name]) / hand])
    print(f"MobileNetV2 fine-tuning at {IMAGE_SIZE} px, float32, {args.n} images, 1 epoch, batch {args.batch}, "
          f"best of {args.repeats}, {args.clock} clock; {machine(DEVICE)}")
    print(table(["loop", "progress / deterministic", "images/s (best)", "range", "wall s outside the epoch loop (min)",
                 "ratio vs hand-written"], rows))


def _settings(s: dict[str, object]) -> str:
    return f"{'on' if s.get('progress', True) else 'off'} / {'on' if s.get('deterministic', True) else 'off'}"


def _range(v: list[float]) -> str:
    return f"{min(v):.1f}-{max(v):.1f}"


if __name__ == "__main__":
    main()
