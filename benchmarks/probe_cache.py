"""Linear probe on frozen, cached features: first run (extract + fit) vs second run (cache hit + fit).

For each (data set, backbone) pair the same ``method="probe"`` estimator is fitted twice against a fresh, empty
feature cache, then evaluated on the held-out test split. The first run extracts features of the train, val and
test splits (ONNX Runtime on CPU); the second reads them back. Reports both wall times (fit + test evaluation), the
speed-up, and the test accuracy of each run (they must agree).

    .venv/bin/python benchmarks/probe_cache.py [--pairs animal-mnist:mobilenet_v2.imagenet,rotten-tomatoes:minilm-l6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

DEFAULT_PAIRS = "animal-mnist:mobilenet_v2.imagenet,rotten-tomatoes:minilm-l6,rotten-tomatoes:bow-hash"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma-separated data:backbone pairs")
    ap.add_argument("--image-size", type=int, default=None, help="image size (default: the backbone's own)")
    ap.add_argument("--engine", default="auto", choices=["auto", "onnx", "torch"])
    args = ap.parse_args()
    os.environ["TRANSFERKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="tk-probe-bench-")

    from transferkit import TransferClassifier
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    rows = []
    for pair in args.pairs.split(","):
        data, _, backbone = pair.partition(":")
        splits = load_data(DataConfig(name=data))
        runs = []
        for _ in range(2):
            clf = TransferClassifier(backbone=backbone, method="probe", image_size=args.image_size, progress=False,
                                     method_params={"engine": args.engine})
            t0 = time.perf_counter()
            clf.fit(splits)
            acc = clf.evaluate(splits.test)["accuracy"]
            runs.append((time.perf_counter() - t0, acc, clf.history_[-1].get("C")))
        (t1, a1, c1), (t2, a2, _) = runs
        rows.append([data, backbone, len(splits.train), c1, round(t1, 1), round(t2, 2), round(t1 / t2, 1), a1, a2])
        print(table(["data", "backbone", "train", "C", "first run s", "second run s", "speed-up", "test acc 1",
                     "test acc 2"], rows[-1:]), flush=True)
    print()
    print(table(["data", "backbone", "train", "C", "first run s", "second run s", "speed-up", "test acc 1",
                 "test acc 2"], rows))


if __name__ == "__main__":
    main()
