"""Independent fits in parallel: local processes, or a Ray cluster (optional extra). No scheduler of our own.

:func:`run_parallel` calls one module-level function on a list of keyword-argument dicts and returns the results in
the same order:

* ``jobs == 1``: in this process, one after the other (no start-up cost; what the tests and small runs use).
* ``backend="local"``, ``jobs > 1``: ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method
  (a fork of a process that already runs torch threads can deadlock), ``jobs`` workers, each limited to
  ``cores // jobs`` torch threads so that the workers do not fight over the cores.
* ``backend="ray"``: each call becomes a Ray task with ``num_cpus = cores // jobs`` on the cluster
  ``ray.init(address="auto")`` finds (or a local one); Ray is an optional extra (``pip install ray``), and without it
  this fails with one sentence saying so.

The function and its arguments travel to the workers by pickling (our own objects, never a user's file).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError

BACKENDS = ("local", "ray")


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Torch threads for each of ``jobs`` parallel workers on ``cores`` cores (at least 1)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, jobs))


def _call_with_threads(fn: Callable[..., Any], threads: int, kwargs: dict[str, Any]) -> Any:
    """Run ``fn(**kwargs)`` in a worker with ``threads`` torch threads (the worker's first act)."""
    import torch

    torch.set_num_threads(threads)
    return fn(**kwargs)


def check_backend(backend: str, jobs: int) -> None:
    """Refuse an unknown backend, a non-positive job count, or Ray when it is not installed."""
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown parallel backend '{backend}'; use {' or '.join(BACKENDS)}.")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a positive whole number, got {jobs!r}.")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("The Ray backend needs Ray, which is not installed; install it with `pip install ray` "
                              "(or use --backend local).") from None


def run_parallel(fn: Callable[..., Any], calls: Sequence[dict[str, Any]], *, jobs: int = 1, backend: str = "local",
                 on_done: Callable[[int, Any], None] | None = None) -> list[Any]:
    """``[fn(**kw) for kw in calls]``, run as the module docstring says; ``on_done(i, result)`` as each finishes.

    ``fn`` must be a module-level function (the workers import it by name). A worker's exception is raised here.
    """
    check_backend(backend, jobs)
    calls = list(calls)
    results: list[Any] = [None] * len(calls)
    if backend == "local" and (jobs == 1 or len(calls) <= 1):
        for i, kw in enumerate(calls):
            results[i] = fn(**kw)
            if on_done is not None:
                on_done(i, results[i])
        return results
    threads = threads_per_job(min(jobs, len(calls)))
    if backend == "ray":
        return _run_ray(fn, calls, threads, on_done)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(calls)), mp_context=ctx) as pool:
        futures = {pool.submit(_call_with_threads, fn, threads, kw): i for i, kw in enumerate(calls)}
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if on_done is not None:
                on_done(i, results[i])
    return results


def _run_ray(fn: Callable[..., Any], calls: list[dict[str, Any]], threads: int,
             on_done: Callable[[int, Any], None] | None) -> list[Any]:  # pragma: no cover - Ray is not installed here
    import ray

    if not ray.is_initialized():
        ray.init()  # the cluster named by RAY_ADDRESS, else a local one
    remote = ray.remote(num_cpus=threads)(_call_with_threads)
    refs = [remote.remote(fn, threads, kw) for kw in calls]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(calls)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        i = index[done[0]]
        results[i] = ray.get(done[0])
        if on_done is not None:
            on_done(i, results[i])
    return results
