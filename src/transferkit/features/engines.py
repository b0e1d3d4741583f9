"""Engines that run a frozen backbone on one loader batch and return float32 features ``(N, D)`` as numpy.

* :class:`TorchEngine`: the backbone itself under ``torch.inference_mode`` in float32, on CPU or a GPU.
* :class:`OnnxEngine`: the exported model (:mod:`.onnx_export`) in an ONNX Runtime session with every graph
  optimisation on and one intra-op thread per physical core (more threads than cores only contend on a CPU-bound
  graph). Sessions are kept per model file for the life of the process, so repeated extractions skip the
  session start-up (graph optimisation, a few hundred milliseconds).

:func:`select_engine` picks one for ``engine="auto" | "onnx" | "torch"``: ``auto`` is PyTorch on a GPU and ONNX
Runtime on CPU, but an exported model is trusted only after a numeric parity check on the first real batch,

    max_{i, j} |f_onnx(x)_{ij} - f_torch(x)_{ij}| <= 1e-4  over the last PARITY_ROWS rows of that batch,

and ``auto`` falls back to PyTorch (with one warning) when the export, the session or the check fails, so it never
returns wrong features. The check runs PyTorch on a few rows only: eager PyTorch is several times slower than ONNX
Runtime here, and checking a whole batch would cost most of what the export saves; it runs on one thread (see
:func:`_one_thread`). The rows are the *last* ones of
the batch, while the export traced the first two: an exporter that baked example values into the graph as
constants is caught too. ONNX Runtime runs the whole first batch, so a batch axis that is not really dynamic fails
the check as well.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backbones.base import Backbone
from ..errors import BackboneError, ConfigError
from .cache import FeatureCache
from .onnx_export import ExportError, exported_model, mark_failed

ENGINES = ("auto", "onnx", "torch")
PARITY_TOLERANCE = 1e-4
PARITY_ROWS = 2
_SESSIONS: dict[str, Any] = {}
_MAX_SESSIONS = 4
_WARNED: set[str] = set()


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads and cores outside its affinity not counted)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        physical = usable
    return max(1, min(usable, physical))


def onnx_session(path: str | Path) -> Any:
    """An ONNX Runtime CPU session for the model at ``path`` (optimisation level all, threads = physical cores)."""
    import onnxruntime as ort

    key = str(path)
    session = _SESSIONS.get(key)
    if session is not None:
        return session
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = physical_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # (threads keep ONNX Runtime's default spin-waiting: turning it off was slower)
    session = ort.InferenceSession(key, sess_options=opts, providers=["CPUExecutionProvider"])
    if len(_SESSIONS) >= _MAX_SESSIONS:
        _SESSIONS.pop(next(iter(_SESSIONS)))
    _SESSIONS[key] = session
    return session


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").contiguous().numpy()


def last_rows(batch: Any, k: int) -> Any:
    """The last ``k`` examples of a batch (a tensor or a dict of tensors)."""
    if isinstance(batch, Mapping):
        return {n: (v[-k:] if torch.is_tensor(v) else v) for n, v in batch.items()}
    return batch[-k:]


class TorchEngine:
    """The backbone in PyTorch on ``device`` (inference mode, float32: no autocast; PyTorch's own TF32 settings for
    GPU convolutions apply); moved there for the run and back home by :meth:`close`."""

    name = "torch"

    def __init__(self, backbone: Backbone, device: torch.device | str | None = None) -> None:
        self.backbone = backbone
        first = next(iter(backbone.parameters()), None)
        self.home = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device) if device is not None else self.home
        if self.device != self.home:
            backbone.to(self.device)

    def __call__(self, batch: Any) -> np.ndarray:
        from ..data.devices import to_device

        with torch.inference_mode():
            out = self.backbone(to_device(batch, self.device))
        return out.float().cpu().numpy()

    def close(self) -> None:
        if self.device != self.home:
            self.backbone.to(self.home)


class OnnxEngine:
    """An exported backbone in ONNX Runtime (CPU)."""

    name = "onnx"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.session = onnx_session(path)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Any) -> np.ndarray:
        if isinstance(batch, Mapping):
            feeds = {n: _numpy(batch[n]) for n in self.inputs}
        else:
            feeds = {self.inputs[0]: _numpy(batch)}
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)

    def close(self) -> None:
        pass


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b|`` (infinite when the shapes differ or either holds a NaN where the other does not)."""
    if a.shape != b.shape:
        return float("inf")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    both_nan = np.isnan(a) & np.isnan(b)
    diff[both_nan] = 0.0
    return float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """PyTorch on one intra-op thread for the block (the parity check's forward pass of two examples).

    Two examples are too little work to split across cores, and with other processes on the CPU the extra OpenMP
    threads wait for each other at every layer: measured here under load, 3 s on two threads against 0.1 s on one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def warn_once(key: str, message: str) -> None:
    """Warn with ``message`` the first time ``key`` comes up in this process."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ConfigError(f"engine is '{engine}' but must be one of: {', '.join(ENGINES)}.")
    return engine


def select_engine(
    backbone: Backbone, engine: str, first: Any, image_size: int | None, cache: FeatureCache
) -> tuple[TorchEngine | OnnxEngine, np.ndarray]:
    """The engine to use for ``backbone``, and its features of the first batch ``first`` (already computed).

    Raises:
        BackboneError: ``engine="onnx"`` and the backbone cannot be exported, run or trusted in ONNX Runtime.
    """
    check_engine(engine)
    cuda = torch.cuda.is_available()
    if engine == "torch" or (engine == "auto" and cuda):
        eng = TorchEngine(backbone, "cuda" if cuda else "cpu")
        return eng, eng(first)
    key = "?"
    try:
        path, key = exported_model(cache, backbone, first, image_size)
        onnx = OnnxEngine(path)
        out = onnx(first)
    except ExportError as e:
        return _fallback(backbone, engine, first, key, f"it cannot be exported to ONNX ({e})")
    except Exception as e:  # noqa: BLE001 - ONNX Runtime refusing the model (or no room to write it): fall back
        reason = f"the ONNX path failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        if key != "?":
            mark_failed(cache, key, reason)
        return _fallback(backbone, engine, first, key, reason)
    k = min(PARITY_ROWS, len(out))
    with _one_thread():
        reference = TorchEngine(backbone)(last_rows(first, k))
    diff = max_abs_difference(out[-k:], reference)
    if not diff <= PARITY_TOLERANCE:
        reason = f"its ONNX features differ from PyTorch's by {diff:.2e} (more than {PARITY_TOLERANCE:.0e})"
        mark_failed(cache, key, reason)
        return _fallback(backbone, engine, first, key, reason)
    return onnx, out


def _fallback(backbone: Backbone, engine: str, first: Any, key: str, reason: str) -> tuple[TorchEngine, np.ndarray]:
    if engine == "onnx":
        raise BackboneError(
            f"engine 'onnx' cannot be used for this backbone: {reason}; use engine 'torch', or 'auto', which falls "
            "back to PyTorch by itself."
        )
    warn_once(key, f"Extracting features with PyTorch instead of ONNX Runtime: {reason}.")
    eng = TorchEngine(backbone)
    return eng, eng(first)
