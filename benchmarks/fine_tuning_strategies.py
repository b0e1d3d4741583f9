"""Fine-tuning strategies side by side on Animal-MNIST: plain fine-tuning, freeze-unfreeze (with and without the
batch-norm re-estimation before the head phase) and the linear probe, with the same recipe and seeds.

Recipe (the one ``tests/test_integration.py`` uses): MobileNetV2-ImageNet, 1,000 training images, 64 px, 3 epochs,
batch 64, AdamW lr 1e-3 (head x10), cosine; freeze-unfreeze trains the head alone in epoch 1. Reports test accuracy,
the validation accuracy after the first epoch (for freeze-unfreeze: the head alone) and the training loss of epoch
2 (the first unfrozen one), per seed, and each strategy's mean test accuracy relative to plain fine-tuning measured in
the same run.

    .venv/bin/python benchmarks/fine_tuning_strategies.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from transferkit import TransferClassifier  # noqa: E402
from transferkit.config import DataConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402

RECIPE = dict(backbone="mobilenet_v2.imagenet", image_size=64, batch_size=64, epochs=3, progress=False)
STRATEGIES = {
    "finetune": dict(method="finetune"),
    "freeze-unfreeze": dict(method="freeze-unfreeze", method_params={"head_epochs": 1}),
    "freeze-unfreeze, source BN statistics": dict(method="freeze-unfreeze",
                                                  method_params={"head_epochs": 1, "recalibrate_bn": False}),
    "linear-probe": dict(method="linear-probe"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    args = ap.parse_args()
    splits = load_data(DataConfig(name="animal-mnist", train_size=1000))
    rows, accs = [], {}
    for name in args.strategies:
        for seed in args.seeds:
            t0 = time.perf_counter()
            clf = TransferClassifier(**RECIPE, **STRATEGIES[name], seed=seed).fit(splits)
            acc = clf.evaluate(splits.test)["accuracy"]
            accs.setdefault(name, []).append(acc)
            h = clf.history_
            rows.append([name, seed, acc, h[0]["val_accuracy"], h[1]["train_loss"], h[0]["train_loss"],
                         time.perf_counter() - t0])
            print(rows[-1], flush=True)
    print(f"\nAnimal-MNIST test split ({len(splits.test)} images), seeds {args.seeds}")
    print(table(["strategy", "seed", "test accuracy", "val acc after epoch 1", "train loss epoch 2",
                 "train loss epoch 1", "seconds"], rows))
    base = statistics.mean(accs["finetune"]) if "finetune" in accs else None
    summary = [[k, statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0,
                (statistics.mean(v) / base) if base else "-"] for k, v in accs.items()]
    print()
    print(table(["strategy", "mean test accuracy", "std", "vs finetune"], summary))


if __name__ == "__main__":
    main()
