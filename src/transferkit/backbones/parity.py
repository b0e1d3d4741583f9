"""The parity check: a converted module is trusted only when it reproduces the source framework's own runtime.

A model converted from another framework (ONNX, Keras) can be wrong without failing: ``onnx2torch`` 1.5.15 turned a
TensorFlow-exported MobileNetV2 into a module whose logits were off by 2.9e-3, more than their spread, and nothing
raised. So before an ``onnx:`` or ``keras:`` backbone is used, :func:`check_parity` runs the source's runtime (ONNX
Runtime, Keras's ``predict``) and the converted module on the same batch and compares every output value: the
largest absolute difference must be at most :data:`PARITY_TOL` (1e-4, fp32), else a
:class:`~transferkit.errors.BackboneError` says the measured difference and what to do.

The batch is a real one when the caller has data (``parity_batch=``, e.g. the first examples of the data being
fitted, or ``transferkit convert --data``), else :func:`seeded_batch`: a fixed, seeded batch of the source's input
shape (uniform pixels for images, standard normal features for tables), so the check is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import BackboneError

__all__ = ["PARITY_TOL", "Parity", "check_parity", "max_abs_diff", "seeded_batch"]

#: The largest absolute difference (fp32) between a converted module and its source runtime that is accepted.
PARITY_TOL = 1e-4
PARITY_SEED = 0
PARITY_BATCH = 16


@dataclass
class Parity:
    """What a parity check measured: the largest absolute difference, against which runtime, on what batch."""

    max_abs_diff: float
    reference: str
    batch: str
    n: int
    tol: float = PARITY_TOL

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def max_abs_diff(a: Sequence[np.ndarray] | np.ndarray, b: Sequence[np.ndarray] | np.ndarray) -> float:
    """The largest ``|a - b|`` over all outputs (``inf`` when shapes differ or a value is not finite in one only)."""
    aa = [np.asarray(a)] if isinstance(a, np.ndarray) else [np.asarray(x) for x in a]
    bb = [np.asarray(b)] if isinstance(b, np.ndarray) else [np.asarray(x) for x in b]
    if len(aa) != len(bb):
        return float("inf")
    worst = 0.0
    for x, y in zip(aa, bb, strict=True):
        if x.shape != y.shape:
            return float("inf")
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        if not np.array_equal(np.isfinite(x64), np.isfinite(y64)):
            return float("inf")
        fin = np.isfinite(x64)
        if fin.any():
            worst = max(worst, float(np.abs(x64[fin] - y64[fin]).max()))
    return worst


def seeded_batch(shape: Sequence[int], modality: str, *, n: int = PARITY_BATCH, seed: int = PARITY_SEED) -> np.ndarray:
    """A fixed float32 batch of ``n`` inputs of ``shape`` (without the batch axis): pixels in [0, 1] for images,
    standard normal values for tables."""
    rng = np.random.default_rng(seed)
    size = (n, *[int(d) for d in shape])
    if modality == "image":
        return rng.random(size, dtype=np.float32)
    return rng.standard_normal(size).astype(np.float32)


def check_parity(
    reference: Callable[[np.ndarray], Sequence[np.ndarray] | np.ndarray],
    candidate: Callable[[np.ndarray], Sequence[np.ndarray] | np.ndarray],
    batch: np.ndarray,
    *,
    what: str,
    reference_name: str,
    batch_name: str,
    tol: float = PARITY_TOL,
) -> Parity:
    """Run both on ``batch`` and return the :class:`Parity`; raise :class:`BackboneError` above ``tol``.

    Args:
        reference: the source framework's runtime (numpy in, numpy out).
        candidate: the converted module wrapped the same way (eval mode, no gradients).
        what: the source, for the message (e.g. ``"onnx:model.onnx"``).
        reference_name: the runtime's name (``"onnxruntime"``, ``"keras"``).
        batch_name: ``"seeded"`` or where the real batch came from.
    """
    try:
        ref = reference(batch)
    except Exception as e:  # noqa: BLE001 - any failure of the source runtime is the source's problem
        raise BackboneError(
            f"{what} cannot be run by {reference_name} on a batch of shape {tuple(batch.shape)} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); check that the file is a complete model with this input."
        ) from None
    try:
        got = candidate(batch)
    except Exception as e:  # noqa: BLE001 - a converter can produce a module that fails in any way
        raise BackboneError(
            f"The PyTorch module converted from {what} fails on a batch of shape {tuple(batch.shape)} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); export the source with a dynamic "
            "batch axis and standard operators, or use it as a teacher (cached mode) instead."
        ) from None
    diff = max_abs_diff(ref, got)
    if not diff <= tol:
        raise BackboneError(
            f"The PyTorch module converted from {what} differs from {reference_name} by up to {diff:.3g} on a "
            f"{batch_name} batch of {len(batch)} (more than the {tol:g} allowed), so it is not used; export the source "
            "again (another opset, or without custom layers), or use it as a teacher (cached mode) instead."
        )
    return Parity(max_abs_diff=diff, reference=reference_name, batch=batch_name, n=int(len(batch)), tol=tol)
