"""The cached mode: a teacher's outputs on a data set computed once and kept in the feature cache.

The entry's key parts are the teacher's :meth:`~transferkit.teachers.base.Teacher.fingerprint` (its weights or file
bytes and its preprocessing), the data's ``fingerprint(labels=False)`` (so relabelled data reuses the outputs) and the
row count; :meth:`FeatureCache.key` hashes their canonical JSON. The outputs are written with the cache's own atomic
writing and per-key lock (:meth:`FeatureCache.writing`), so a killed run leaves no half-written entry and two runs
with the same teacher compute it once; ``transferkit cache list`` shows the entries as ``teacher:<kind>:<name>``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.base import Dataset
from ..errors import ConfigError
from ..features.cache import FeatureCache, default_cache
from .base import Teacher

OUTPUTS_FORMAT = "transferkit-teacher-outputs/1"


def outputs_key_parts(teacher: Teacher, ds: Dataset) -> dict[str, Any]:
    """What a teacher's cached outputs on ``ds`` depend on (see the module docstring)."""
    return {
        "format": OUTPUTS_FORMAT,
        "backbone": {"type": "teacher", "name": f"{teacher.kind}:{teacher.name}"},
        "teacher": teacher.fingerprint(),
        "data": ds.fingerprint(labels=False),
        "n": len(ds),
    }


def checked_outputs(teacher: Teacher, out: Any, n: int) -> np.ndarray:
    """``out`` as a float32 ``(n, C)`` array of finite numbers, or a one-sentence ConfigError."""
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 2:
        raise ConfigError(f"The teacher '{teacher.name}' gave outputs of shape {arr.shape} for {n} examples; a "
                          "teacher must give one row of two or more class scores per example.")
    if not np.isfinite(arr).all():
        raise ConfigError(f"The teacher '{teacher.name}' gave non-finite scores; check the teacher and its "
                          "preprocessing.")
    return np.ascontiguousarray(arr)


def teacher_outputs(teacher: Teacher, ds: Dataset, *, cache: FeatureCache | bool | None = None, batch_size: int = 64,
                    progress: bool = False) -> np.ndarray:
    """``(N, C)`` float32 outputs of ``teacher`` on ``ds``, read from the feature cache when present.

    Args:
        cache: a :class:`FeatureCache`, ``None`` / ``True`` for the default one, ``False`` to compute without caching.
    """
    if cache is False or not teacher.cacheable:
        return checked_outputs(teacher, teacher.outputs(ds, batch_size=batch_size, progress=progress), len(ds))
    store = default_cache() if cache is None or cache is True else cache
    parts = outputs_key_parts(teacher, ds)
    key = store.key(parts)
    hit = store.get(key)
    if hit is not None and hit.shape[0] == len(ds):
        return np.array(hit)
    with store.lock(key):
        hit = store.get(key)  # another process may have written it while we waited
        if hit is not None and hit.shape[0] == len(ds):
            return np.array(hit)
        out = checked_outputs(teacher, teacher.outputs(ds, batch_size=batch_size, progress=progress), len(ds))
        meta = {"key_parts": parts, "teacher": {"kind": teacher.kind, "name": teacher.name}, "data": ds.name}
        with store.writing(key, out.shape, meta) as arr:
            arr[:] = out
    return out
