"""What a regulariser costs per step: one training step of each method vs plain fine-tuning on the same batch.

A step is what the loop does per batch: the method's ``training_step`` (forward, loss, regulariser), ``backward``
and the optimizer step. Each method gets a fresh model (same seed) and its own optimizer over its parameter groups;
the methods take turns (round-robin over ``--repeats`` rounds, after ``--warmup`` rounds not counted), so that a
busy machine slows all of them alike, and the median step time is reported with its ratio to ``finetune``. The issue
asks for DELTA at most 1.5x a plain fine-tuning step.

    .venv/bin/python benchmarks/regulariser_cost.py                          # MobileNetV2, 32 images, 224 px
    .venv/bin/python benchmarks/regulariser_cost.py --image-size 64 --repeats 5
    .venv/bin/python benchmarks/regulariser_cost.py --backbone minilm-l6     # 32 Rotten Tomatoes texts
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MethodStepper, pick_device, table  # noqa: E402

from transferkit.backbones import build_backbone  # noqa: E402
from transferkit.config import DataConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.data.loaders import (
    make_loader,  # noqa: E402
    to_device,  # noqa: E402
)

METHODS = ["finetune", "l2-sp", "delta", "bss", "lwf"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="mobilenet_v2.imagenet")
    ap.add_argument("--image-size", type=int, default=None, help="default: the backbone's own (224 for MobileNetV2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    device = pick_device(args.device)
    modality = build_backbone(args.backbone, pretrained=False).preprocessing.modality
    name = "rotten-tomatoes" if modality == "text" else "animal-mnist"
    train = load_data(DataConfig(name=name, train_size=max(args.batch_size, 64))).train
    runners = {}
    for m in ["finetune", *[m for m in args.methods if m != "finetune"]]:  # the baseline is always measured
        try:
            runners[m] = MethodStepper(m, backbone=args.backbone, image_size=args.image_size,
                                       batch_size=args.batch_size, train=train, device=device)
        except Exception as e:  # noqa: BLE001 - e.g. lwf on a backbone without a source head: skip that row
            print(f"{m}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
    first = next(iter(runners.values()))
    x, y = next(iter(make_loader(train, first.model.preprocessing, image_size=first.model.image_size, train=False,
                                 batch_size=args.batch_size)))
    batch = to_device((x, y), device)
    times: dict[str, list[float]] = {m: [] for m in runners}
    for r in range(args.warmup + args.repeats):
        for m, runner in runners.items():
            t = runner.step(batch)
            if r >= args.warmup:
                times[m].append(t)
    base = statistics.median(times["finetune"]) if "finetune" in times else None
    rows = []
    for m, ts in times.items():
        med = statistics.median(ts)
        ratio = med / base if base else float("nan")
        rows.append([m, f"{1000 * med:.1f}", f"{1000 * min(ts):.1f}", f"{ratio:.2f}x"])
    size = first.model.image_size if modality == "image" else "-"
    print(f"{args.backbone}, batch {args.batch_size}, image size {size}, device {device}, "
          f"{args.repeats} timed rounds (median)")
    print(table(["method", "step ms (median)", "step ms (min)", "vs finetune"], rows))


if __name__ == "__main__":
    main()
