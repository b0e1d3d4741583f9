"""What a compression stage costs and delivers: file size, parameters, MACs, CPU latency, throughput, accuracy.

Latency is the median wall time of a batch over ``repeats`` runs after ``warmup`` runs, for batch 1 and batch 32,
on the same preprocessed inputs, in the same process, for every stage; eager PyTorch and ONNX Runtime use the same
number of intra-op threads (torch's). Throughput is batch-32 examples per second. The machine may be shared: ratios
between stages measured in one run mean more than absolute times.

Stages measured one after the other minutes apart see whatever load the shared machine had then (the unpruned model in
ONNX Runtime measured at 12.9 to 27.0 ms at batch 32 over three seeds of one benchmark, BENCHMARKS.md "Compression:
real recovery", now replaced by "Compression: iterative recovery"), so a speed-up between two stages is better read
from :func:`interleaved_latency`: the engines run in turn, round after round, and each one's figure is the median over
the rounds of its per-round medians; it also reports the calling thread's CPU time per run, which at one intra-op
thread (torch and ONNX Runtime then compute on the calling thread) is the work itself, whatever else the machine runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..data.base import Dataset
from ..data.loaders import make_loader


def loader_batches(model: Any, ds: Dataset, *, limit: int | None = None, batch_size: int = 64,
                   seed: int = 0) -> list[tuple[Any, torch.Tensor]]:
    """``ds`` (at most ``limit`` examples, a seeded random sample) as the model's preprocessed ``(x, y)`` batches."""
    if limit is not None and limit < len(ds):
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=limit, replace=False))
        ds = ds.subset(idx)
    loader = make_loader(ds, model.preprocessing, image_size=model.image_size, train=False, batch_size=batch_size)
    return list(loader)


def median_seconds(fn: Callable[[], Any], *, repeats: int = 10, warmup: int = 2) -> float:
    """The median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_latency(runs: dict[str, Callable[[], Any]], *, rounds: int = 5, repeats: int = 10,
                        warmup: int = 2) -> dict[str, dict[str, float]]:
    """``{name: {"wall_ms": .., "cpu_ms": ..}}``: each of ``runs`` timed in turn, ``rounds`` times (the order rotated
    every round, so no engine always follows another), its per-round medians over ``repeats`` calls, then the median
    over the rounds; ``cpu_ms`` is the calling thread's CPU time (see the module docstring)."""
    names = list(runs)
    for name in names:
        for _ in range(warmup):
            runs[name]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            w, c = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.thread_time()
                runs[name]()
                c.append(time.thread_time() - c0)
                w.append(time.perf_counter() - t0)
            wall[name].append(statistics.median(w))
            cpu[name].append(statistics.median(c))
    return {n: {"wall_ms": 1000 * statistics.median(wall[n]), "cpu_ms": 1000 * statistics.median(cpu[n])}
            for n in names}


def batch_of(batches: list[tuple[Any, torch.Tensor]], n: int) -> Any:
    """The first ``n`` inputs of ``batches`` as one batch (repeated when there are fewer)."""
    from ..data.devices import to_device

    xs = [to_device(x, torch.device("cpu")) for x, _ in batches]
    if torch.is_tensor(xs[0]):
        x = torch.cat(xs)
        while len(x) < n:
            x = torch.cat([x, x])
        return x[:n].contiguous()
    keys = xs[0].keys()
    out = {k: torch.cat([b[k] for b in xs]) for k in keys}
    while len(next(iter(out.values()))) < n:
        out = {k: torch.cat([v, v]) for k, v in out.items()}
    return {k: v[:n].contiguous() for k, v in out.items()}


def torch_latency(model: torch.nn.Module, x: Any, *, repeats: int = 10) -> float:
    """Median seconds of one eager forward pass of ``model`` on ``x`` (CPU, eval mode, no gradients)."""
    model.to("cpu").eval()

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return median_seconds(run, repeats=repeats)


def onnx_latency(sess: Any, names: list[str], x: Any, *, repeats: int = 10) -> float:
    """Median seconds of one ONNX Runtime run of ``sess`` on ``x``."""
    from .onnx_model import OUTPUT, input_feed

    feed = input_feed(names, x)
    return median_seconds(lambda: sess.run([OUTPUT], feed), repeats=repeats)


def accuracy(logits: np.ndarray, batches: list[tuple[Any, torch.Tensor]]) -> float:
    """Top-1 accuracy of ``logits`` against the labels of ``batches``."""
    labels = np.concatenate([y.numpy() for _, y in batches])
    return float(np.mean(logits.argmax(1) == labels))
