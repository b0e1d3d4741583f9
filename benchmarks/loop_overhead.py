"""Training-loop overhead: transferkit's fine-tuning vs a minimal hand-written PyTorch loop.

Same model (MobileNetV2 + new linear head), same data (Animal-MNIST training images at 64 px), same batch size,
optimizer (AdamW) and learning rates, no gradient clipping, constant LR; the two are run alternately several times in
one process and the best images/second of each is compared (best-of-n is the least noisy estimate on a shared CPU).
The hand-written loop gets its inputs as one pre-made, normalised tensor, so everything transferkit does besides the
maths (data loader, Accelerate, method hooks, progress bar, bookkeeping) counts against it.

    .venv/bin/python benchmarks/loop_overhead.py [--n 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from transferkit.backbones import build_backbone  # noqa: E402
from transferkit.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.data.loaders import make_loader  # noqa: E402
from transferkit.methods import create_method  # noqa: E402
from transferkit.model import TransferModel  # noqa: E402
from transferkit.train.loop import fit  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build(classes: list[str]) -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(build_backbone("mobilenet_v2.imagenet"), classes, image_size=64).to(DEVICE)


def hand_written(x: torch.Tensor, y: torch.Tensor, classes: list[str], batch: int, lr: float) -> float:
    model = build(classes)
    model.train()
    opt = torch.optim.AdamW([
        {"params": model.backbone.parameters(), "lr": lr},
        {"params": model.head.parameters(), "lr": lr * 10},
    ], weight_decay=1e-4)
    x, y = x.to(DEVICE), y.to(DEVICE)
    perm = torch.randperm(len(x), device=DEVICE)
    _sync()
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        idx = perm[i : i + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync()
    return len(x) / (time.perf_counter() - t0)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def toolkit(train, classes: list[str], batch: int, lr: float) -> float:
    model = build(classes)
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=lr, grad_clip=None, schedule="constant", warmup_fraction=0.0,
                      progress=False, deterministic=False, mixed_precision="no")
    res = fit(model, create_method("finetune"), train, None, ModelConfig(image_size=64), cfg)
    return len(train) / res.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    train = load_data(DataConfig(name="animal-mnist", train_size=args.n)).train
    pre = build(train.classes).preprocessing
    xs, ys = zip(*make_loader(train, pre, image_size=64, train=False, batch_size=256), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    hand, tk = [], []
    for _ in range(args.repeats):
        hand.append(hand_written(x, y, train.classes, args.batch, 1e-3))
        tk.append(toolkit(train, train.classes, args.batch, 1e-3))
    rows = [
        ["hand-written loop (pre-made tensors)", max(hand), f"{min(hand):.1f}-{max(hand):.1f}", 1.0],
        ["transferkit fit (finetune)", max(tk), f"{min(tk):.1f}-{max(tk):.1f}", max(tk) / max(hand)],
    ]
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"MobileNetV2 fine-tuning at 64 px, float32, {args.n} images, batch {args.batch}, {where}, "
          f"best of {args.repeats}")
    print(table(["loop", "images/s (best)", "range", "ratio vs hand-written"], rows))


if __name__ == "__main__":
    main()
