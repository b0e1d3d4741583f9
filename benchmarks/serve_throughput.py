"""Serving throughput and latency with and without micro-batching, against a real uvicorn on 127.0.0.1.

    PYTHONPATH=src .venv/bin/python benchmarks/serve_throughput.py [--model RUN_OR_EXPORT] [--requests 400]
        [--concurrency 32] [--rounds 2] [--image-size 64]

Without ``--model`` it first fine-tunes MobileNetV2 (ImageNet weights) for one epoch on 300 Animal-MNIST images at
``--image-size`` and serves that. Each round starts ``transferkit serve`` twice (micro-batching on with the default
``--max-batch 32 --max-wait-ms 5``, then ``--no-batching``), warms it up, and sends ``--requests`` single-image POSTs
from ``--concurrency`` concurrent clients (asyncio + httpx, one process); the load test is bounded in requests and
in time (every request has a timeout) and stops by itself. Reports requests/s, latency p50/p95 (ms, client side),
forward passes and the mean inputs per forward (the server's ``/stats``), and the on/off throughput ratio of each
round (the same run, so the same machine load). The client shares the CPU with the server: absolute figures are
lower than a separate load generator would measure; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402


def _fit_model(out: Path, image_size: int) -> Path:
    from transferkit import TransferClassifier, load_data
    from transferkit.config import DataConfig

    splits = load_data(DataConfig(name="animal-mnist", train_size=300))
    clf = TransferClassifier(backbone="mobilenet_v2.imagenet", method="finetune", image_size=image_size, epochs=1,
                             batch_size=32, progress=False, seed=0).fit(splits.train)
    clf.save(out)
    return out


def _images(n: int) -> list[tuple[str, bytes]]:
    import io

    from PIL import Image

    from transferkit import load_data
    from transferkit.config import DataConfig

    test = load_data(DataConfig(name="animal-mnist")).test
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(test.inputs[i]).save(buf, format="PNG")
        out.append((f"test{i}.png", buf.getvalue()))
    return out


async def _load(url: str, images: list[tuple[str, bytes]], requests: int, concurrency: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for name, data in images[:8]:  # warm-up: first forwards, connection set-up
            (await client.post("/predict", files={"file": (name, data, "image/png")})).raise_for_status()
        before = (await client.get("/stats")).json()
        counter = iter(range(requests))

        async def worker() -> None:
            for i in counter:
                name, data = images[i % len(images)]
                t0 = time.perf_counter()
                r = await client.post("/predict", files={"file": (name, data, "image/png")})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        after = (await client.get("/stats")).json()
    lat = sorted(latencies)
    forwards = after["forwards"] - before["forwards"]
    return {
        "rps": requests / wall,
        "p50": 1000 * statistics.median(lat),
        "p95": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))],
        "forwards": forwards,
        "mean_batch": (after["inputs"] - before["inputs"]) / max(1, forwards),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a run, saved-model or exported folder (default: fine-tune a small one)")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args()

    from transferkit.serving.process import local_server

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        model = Path(args.model) if args.model else _fit_model(Path(tmp) / "model", args.image_size)
        images = _images(64)
        rows, ratios = [], []
        for rnd in range(args.rounds):
            res = {}
            for label, flags in (("on", []), ("off", ["--no-batching"])):
                with local_server(model, *flags) as server:
                    res[label] = asyncio.run(_load(server.url, images, args.requests, args.concurrency))
                r = res[label]
                rows.append([rnd, label, args.requests, args.concurrency, r["rps"], r["p50"], r["p95"],
                             r["forwards"], r["mean_batch"]])
            ratios.append(res["on"]["rps"] / res["off"]["rps"])
            rows[-2].append(f"{ratios[-1]:.2f}x")
            rows[-1].append("")
    print(f"machine: {machine()}; client and server share it (2 cores, loaded by other jobs: see BENCHMARKS.md)")
    print(f"model: {args.model or f'MobileNetV2 fine-tuned, {args.image_size} px'}")
    print(table(["round", "batching", "requests", "clients", "req/s", "p50 ms", "p95 ms", "forwards",
                 "inputs/forward", "on/off req/s"], rows))
    print(f"throughput ratio on/off: mean {statistics.mean(ratios):.2f}x over {len(ratios)} rounds "
          f"({', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    sys.exit(main())
