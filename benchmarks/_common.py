"""Helpers shared by the benchmark scripts: a plain Markdown table printer and a wall-clock timer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (floats shown with 4 significant digits)."""

    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` holds the seconds taken."""
    out: list[float] = []
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - t0)
