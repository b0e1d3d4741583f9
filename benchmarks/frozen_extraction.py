"""Frozen feature extraction speed on CPU: transferkit's path vs eager PyTorch and a bare ONNX Runtime session.

Frozen MobileNetV2-ImageNet (1280-d features) at 224 px over the first N Animal-MNIST training images, measured
side by side in one process, alternately, best of ``--repeats`` (the least noisy estimate on a shared CPU):

(a) eager PyTorch (``torch.inference_mode``, float32) on pre-made, normalised batches;
(b) a bare ONNX Runtime session (default session options) on the same exported model and the same batches;
(c) ``extract_features(backbone, dataset, cache=False)`` end to end from the Dataset: resizing and normalising
    (the usual loader), engine choice with its PyTorch parity check on the first batch, ONNX Runtime, the output.

Everything is warmed up first (one batch each; for (c) one whole call, which exports the model once into the cache
root, so the timed calls measure extraction, not export). Targets (issue 3): (c)/(a) >= 3, (c)/(b) >= 0.9.

    .venv/bin/python benchmarks/frozen_extraction.py [--n 512] [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from transferkit.backbones import build_backbone  # noqa: E402
from transferkit.config import DataConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.data.loaders import make_loader  # noqa: E402
from transferkit.features import default_cache, extract_features  # noqa: E402
from transferkit.features.engines import physical_cores  # noqa: E402
from transferkit.features.onnx_export import exported_model  # noqa: E402

SIZE = 224


def eager(bb: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    n = sum(len(x) for x in batches)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            bb(x)
    return n / (time.perf_counter() - t0)


def bare_ort(session, batches: list[np.ndarray]) -> float:  # noqa: ANN001
    name = session.get_inputs()[0].name
    n = sum(len(x) for x in batches)
    t0 = time.perf_counter()
    for x in batches:
        session.run(None, {name: x})
    return n / (time.perf_counter() - t0)


def toolkit(bb: torch.nn.Module, ds, batch: int) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    feats = extract_features(bb, ds, image_size=SIZE, engine="auto", batch_size=batch, cache=False)
    seconds = time.perf_counter() - t0
    assert feats.shape == (len(ds), 1280)
    return len(ds) / seconds


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ds = load_data(DataConfig(name="animal-mnist")).train.subset(range(args.n), name="animal-mnist[:n]")
    bb = build_backbone("mobilenet_v2.imagenet").eval()
    batches = [x for x, _ in make_loader(ds, bb.preprocessing, image_size=SIZE, train=False, batch_size=args.batch)]
    arrays = [x.numpy() for x in batches]

    toolkit(bb, ds, args.batch)  # warm-up: exports the model once (kept in the cache root), starts the session
    path, _ = exported_model(default_cache(), bb, batches[0], SIZE)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    eager(bb, batches[:1])
    bare_ort(session, arrays[:1])

    a, b, c = [], [], []
    for _ in range(args.repeats):
        a.append(eager(bb, batches))
        b.append(bare_ort(session, arrays))
        c.append(toolkit(bb, ds, args.batch))
    best_a, best_b, best_c = max(a), max(b), max(c)
    rows = [
        ["(a) eager PyTorch, pre-made batches", best_a, f"{min(a):.1f}-{max(a):.1f}", 1.0, best_a / best_b],
        ["(b) bare ONNX Runtime session, pre-made batches", best_b, f"{min(b):.1f}-{max(b):.1f}", best_b / best_a,
         1.0],
        ["(c) transferkit extract_features (from the Dataset)", best_c, f"{min(c):.1f}-{max(c):.1f}", best_c / best_a,
         best_c / best_b],
    ]
    print(f"Frozen MobileNetV2-ImageNet features at {SIZE} px, float32, {args.n} Animal-MNIST images, batch "
          f"{args.batch}, CPU ({physical_cores()} physical cores, onnxruntime {ort.__version__}, torch "
          f"{torch.__version__}), best of {args.repeats}")
    print(table(["path", "images/s (best)", "range", "ratio vs (a)", "ratio vs (b)"], rows))
    print(f"(c)/(a) = {best_c / best_a:.2f} (target >= 3); (c)/(b) = {best_c / best_b:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
