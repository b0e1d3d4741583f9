"""Pretrained vs random initialisation with the same recipe on Animal-MNIST (the main job's recipe).

Both runs use examples/animal_mnist.yaml's settings (3,000 training images, 64 px, 3 epochs, AdamW, cosine);
only the backbone's initial weights differ. Reports test accuracy and wall time per run, over the given seeds.

    .venv/bin/python benchmarks/pretrained_vs_scratch.py [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from transferkit import TransferClassifier  # noqa: E402
from transferkit.config import load_yaml  # noqa: E402
from transferkit.data import load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    cfg = load_yaml(ROOT / "examples" / "animal_mnist.yaml")
    splits = load_data(cfg.data)
    rows = []
    accs: dict[str, list[float]] = {}
    for backbone in ("mobilenet_v2.imagenet", "mobilenet_v2.random"):
        for seed in args.seeds:
            params = {**dataclasses.asdict(cfg.model), **dataclasses.asdict(cfg.train)}
            params.update(backbone=backbone, seed=seed, progress=False)
            t0 = time.perf_counter()
            clf = TransferClassifier(**params).fit(splits)
            acc = clf.evaluate(splits.test)["accuracy"]
            accs.setdefault(backbone, []).append(acc)
            rows.append([backbone, seed, acc, time.perf_counter() - t0])
    print(f"Animal-MNIST test split ({len(splits.test)} images), recipe examples/animal_mnist.yaml")
    print(table(["backbone", "seed", "test accuracy", "seconds"], rows))
    pre, rnd = statistics.mean(accs["mobilenet_v2.imagenet"]), statistics.mean(accs["mobilenet_v2.random"])
    print(f"\npretrained mean {pre:.4f}, random-init mean {rnd:.4f}, gap {100 * (pre - rnd):.1f} points")


if __name__ == "__main__":
    main()
