"""Micro-batching: concurrent requests share one forward pass.

A request puts its inputs on an asyncio queue and awaits a future. One collector task takes the first waiting
request, then keeps taking requests until the group holds ``max_batch`` inputs or ``max_wait`` seconds have passed
since that first one, runs ONE ``predict_proba`` over all their inputs in a worker thread (so the event loop keeps
accepting connections and queueing requests meanwhile), and hands each request its own rows. Requests that arrive
while a forward runs wait in the queue and form the next group at once, so under load the batches fill up without
any added wait; an idle server adds at most ``max_wait`` to a lone request.

A request's inputs always stay together in one forward; a request with more inputs than ``max_batch`` runs alone.
The worker is a single thread, with batching on or off, so forwards never compete for the CPU cores with each other
(torch and ONNX Runtime already use every core inside one forward).

Hand-written because no maintained library does this for FastAPI with an in-process torch or ONNX Runtime model:
the serving frameworks that batch (Triton, TorchServe, Ray Serve, BentoML) are servers of their own, run models in
other processes and bring their own HTTP layer; this is about a hundred lines on asyncio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _Job:
    items: list[Any]
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchStats:
    """What the server has done so far: requests answered, forward passes, and the batch sizes seen (inputs per
    forward, with counts), for ``GET /stats``."""

    requests: int = 0
    inputs: int = 0
    forwards: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    requests_per_forward: Counter[int] = field(default_factory=Counter)
    forward_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "inputs": self.inputs,
            "forwards": self.forwards,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "requests_per_forward": {str(k): v for k, v in sorted(self.requests_per_forward.items())},
            "max_batch_seen": max(self.batch_sizes, default=0),
            "mean_batch": round(self.inputs / self.forwards, 3) if self.forwards else 0.0,
            "forward_seconds": round(self.forward_seconds, 3),
        }


class Batcher:
    """Runs ``predict(inputs) -> (N, C) probabilities`` for requests, grouping concurrent ones when ``enabled``.

    Call :meth:`start` inside the running event loop (the app's lifespan) and :meth:`stop` at shutdown.
    """

    def __init__(self, predict: Callable[[list[Any]], np.ndarray], *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 enabled: bool = True) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be at least 0, not {max_wait_ms}")
        self.predict = predict
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.enabled = bool(enabled)
        self.stats = BatchStats()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-fwd")
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="transferkit-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, items: list[Any]) -> np.ndarray:
        """The probabilities of ``items`` (one row each), computed with other waiting requests' inputs if batching."""
        if not self.enabled or self._queue is None:
            proba = await self._forward(items, requests=1)
            self.stats.requests += 1
            return proba
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(list(items), future))
        proba = await future
        self.stats.requests += 1
        return proba

    async def _forward(self, items: list[Any], requests: int) -> np.ndarray:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        proba = await loop.run_in_executor(self._executor, self.predict, items)
        self.stats.forward_seconds += time.perf_counter() - t0
        self.stats.forwards += 1
        self.stats.inputs += len(items)
        self.stats.batch_sizes[len(items)] += 1
        self.stats.requests_per_forward[requests] += 1
        return proba

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        carried: _Job | None = None  # a request that did not fit into the previous group
        while True:
            first = carried if carried is not None else await queue.get()
            carried = None
            group, n = [first], len(first.items)
            deadline = loop.time() + self.max_wait
            while n < self.max_batch:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                if n + len(job.items) > self.max_batch:
                    carried = job
                    break
                group.append(job)
                n += len(job.items)
            group = [j for j in group if not j.future.cancelled()]  # clients that went away
            if not group:
                continue
            items = [x for j in group for x in j.items]
            try:
                proba = await self._forward(items, requests=len(group))
            except Exception as e:  # noqa: BLE001 - handed to every waiting request, which answers for itself
                for j in group:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            start = 0
            for j in group:
                rows = proba[start : start + len(j.items)]
                start += len(j.items)
                if not j.future.done():
                    j.future.set_result(rows)
