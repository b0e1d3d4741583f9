"""Frozen features of a whole data set, computed once and cached: :func:`extract_features`.

The data flows batch by batch: the inputs (:mod:`.batches`: the usual loader's resizing, normalisation and
tokenisation) are prepared, the engine (:mod:`.engines`) computes their features, and each batch of features is
written straight into the cache entry's memory-mapped ``features.npy``. Nothing holds the whole data set's features
in memory, so data larger than memory works.

Where the inputs are prepared was measured (``benchmarks/frozen_extraction.py``, 2-core CPU): on CPU they are made
in the calling thread between engine calls. ONNX Runtime already keeps every core busy, so a loader thread running
ahead cannot add throughput; it only competes with the engine's threads (with its torch ops on one thread it was 2-3x
slower, with the default threads 5-25% slower than inline, the worst under load from other processes). A loader
worker process would add a shared-memory copy of every batch on top. On a GPU the CPU is otherwise idle while the
GPU computes, so there the inputs are prepared in a background thread, ``PREFETCH`` batches ahead, into pinned
memory.

With a cache the flow is: look the key up (no lock: entries appear atomically); on a miss take the key's lock, look
again (another process may just have written it), compute into a temporary entry, publish it (see
:mod:`.cache`). A second process asking for the same key meanwhile waits on the lock and then reads the entry.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ..backbones import feature_backbone
from ..backbones.base import Backbone
from ..backbones.deferred import is_deferred
from ..backbones.taps import eval_mode
from ..data.base import Dataset
from ..errors import BackboneError, DataError
from ..version import __version__
from .batches import frozen_batches
from .cache import FeatureCache, default_cache
from .engines import OnnxEngine, TorchEngine, check_engine, select_engine, warn_once
from .keys import describe_spec, feature_key, resolved_image_size
from .onnx_export import mark_failed

PREFETCH = 2  # batches the loader thread may run ahead (GPU engine only, see the module docstring)


def _resolve_cache(cache: FeatureCache | bool | None) -> FeatureCache | None:
    if cache is True:
        return default_cache()
    if cache is False or cache is None:
        return None
    if isinstance(cache, FeatureCache):
        return cache
    raise TypeError(f"cache must be a FeatureCache, True, False or None, not {type(cache).__name__}")


class _Prefetch:
    """Iterate ``items`` in a background thread, ``depth`` items ahead; errors are re-raised in the consumer."""

    _DONE = object()

    def __init__(self, items: Iterable[Any], depth: int = PREFETCH) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(items,), daemon=True, name="transferkit-prefetch")
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterable[Any]) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    return
            self._put((True, self._DONE))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            self._put((False, e))

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                ok, item = self.queue.get()
                if not ok:
                    raise item
                if item is self._DONE:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


class _Direct:
    """The inputs made in the calling thread, between engine calls (CPU engines)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def close(self) -> None:
        pass


def compute_features(
    backbone: Backbone,
    data: Dataset,
    out: np.ndarray,
    *,
    image_size: int | None,
    engine: str,
    batch_size: int,
    models: FeatureCache,
    progress: bool = False,
) -> str:
    """Fill ``out`` (``(len(data), D)``) with ``backbone``'s features of ``data``; returns the engine name used."""
    from tqdm.auto import tqdm

    if is_deferred(backbone):  # a packaged backbone known from its card: it runs now, so build it first
        backbone.materialise()

    gpu = engine != "onnx" and torch.cuda.is_available()  # the engine will be PyTorch on the GPU
    inputs = frozen_batches(data, backbone.preprocessing, image_size=image_size, batch_size=batch_size,
                            slots=PREFETCH + 3 if gpu else 2, pin_memory=gpu)
    batches = _Prefetch(inputs) if gpu and PREFETCH > 0 else _Direct(inputs)
    eng: TorchEngine | OnnxEngine | None = None
    done = 0
    bar = tqdm(total=len(data), desc="features", unit="ex", disable=not progress, leave=False, mininterval=1.0)
    with eval_mode(backbone), contextlib.closing(batches), bar:
        try:
            for x in batches:
                if eng is None:
                    eng, feats = select_engine(backbone, engine, x, image_size, models)
                else:
                    try:
                        feats = eng(x)
                    except Exception as e:
                        if not isinstance(eng, OnnxEngine):
                            raise
                        eng, feats = _after_onnx_failure(eng, e, backbone, engine, x, models)
                out[done : done + len(feats)] = feats
                done += len(feats)
                bar.update(len(feats))
        finally:
            if eng is not None:
                eng.close()
    if done != len(out):
        raise RuntimeError(f"the loader gave {done} examples for a data set of {len(out)}")
    return eng.name if eng is not None else "none"


def _after_onnx_failure(
    eng: OnnxEngine, error: Exception, backbone: Backbone, engine: str, x: Any, models: FeatureCache
) -> tuple[TorchEngine, np.ndarray]:
    """ONNX Runtime failed on a later batch: ``auto`` finishes with PyTorch (always right), ``onnx`` stops."""
    reason = f"ONNX Runtime failed on a batch ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    mark_failed(models, eng.path.parent.name, reason)
    if engine == "onnx":
        raise BackboneError(f"engine 'onnx' cannot be used for this backbone: {reason}; use engine 'torch' or 'auto'.")
    warn_once(str(eng.path), f"{reason}; continuing with PyTorch.")
    torch_engine = TorchEngine(backbone)
    return torch_engine, torch_engine(x)


def extract_features(
    backbone: Backbone | str,
    data: Dataset,
    *,
    image_size: int | None = None,
    engine: str = "auto",
    batch_size: int = 64,
    cache: FeatureCache | bool | None = True,
    progress: bool = False,
) -> np.ndarray:
    """Frozen features of every example of ``data``, float32 ``(N, D)`` in data order.

    Args:
        backbone: a backbone (tapped or fused ones included) or a name for :func:`feature_backbone`.
        data: the examples; labels are ignored (relabelled data reuses cached features).
        image_size: square side images are resized to (default: the backbone's own).
        engine: ``"auto"`` (ONNX Runtime on CPU after a parity check, PyTorch on a GPU), ``"onnx"`` or ``"torch"``.
        batch_size: examples per forward pass.
        cache: ``True``: the default cache (``$TRANSFERKIT_CACHE_DIR`` or ``~/.cache/transferkit``); a
            :class:`FeatureCache`; ``False``/``None``: compute without caching (exported ONNX models are still kept
            in the default cache root, as they do not depend on the data).
        progress: show a progress bar.

    Returns:
        A read-only memory map of the cache entry when cached, else an in-memory array.

    Raises:
        DataError: the data's modality is not the backbone's.
        BackboneError: ``engine="onnx"`` on a backbone that ONNX cannot run faithfully.
        ConfigError: an unknown engine.
    """
    check_engine(engine)
    bb = feature_backbone(backbone) if isinstance(backbone, str) else backbone
    if data.modality != bb.preprocessing.modality:
        raise DataError(
            f"Data set '{data.name}' holds {data.modality} data but the backbone reads {bb.preprocessing.modality}; "
            f"choose a backbone for {data.modality} data."
        )
    if batch_size <= 0:
        raise DataError(f"batch_size must be a positive number, not {batch_size}.")
    store = _resolve_cache(cache)
    size = resolved_image_size(bb, data, image_size)
    shape = (len(data), int(bb.feature_dim))
    if len(data) == 0:
        return np.zeros(shape, dtype=np.float32)
    models = store if store is not None else default_cache()
    run = dict(image_size=size, engine=engine, batch_size=batch_size, models=models, progress=progress)
    if store is None:
        out = np.empty(shape, dtype=np.float32)
        compute_features(bb, data, out, **run)
        return out
    parts = feature_key(bb, data, size)
    key = store.key(parts)
    hit = store.get(key)
    if hit is not None and hit.shape == shape:
        return hit
    with store.lock(key):
        hit = store.get(key)
        if hit is not None and hit.shape == shape:
            return hit
        if store.entry_dir(key).exists():  # unreadable, or of a shape this key cannot give: replace it
            store.remove(key)
        meta: dict[str, Any] = {"key_parts": parts, "backbone": describe_spec(parts["backbone"]),
                                "data": data.name, "transferkit": __version__}
        t0 = time.perf_counter()
        with store.writing(key, shape, meta) as out:
            meta["engine"] = compute_features(bb, data, out, **run)
            meta["seconds"] = round(time.perf_counter() - t0, 3)
    result = store.get(key)
    if result is None:  # pragma: no cover - the entry was removed between publishing and reading it
        raise DataError(f"The feature cache entry {key} vanished while it was read; run again.")
    return result
