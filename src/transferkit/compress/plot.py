"""The accuracy-against-latency plot of a compression run (one labelled point per stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tradeoff_png(rows: list[dict[str, Any]], dest: Path, *, latency_key: str = "latency_b32_ms") -> None:
    """Write a scatter of test accuracy against ``latency_key`` (milliseconds) with each stage named, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in rows:
        if r.get(latency_key) is None or r.get("accuracy") is None:
            continue
        ax.scatter(r[latency_key], 100 * r["accuracy"], s=40)
        ax.annotate(f"{r['stage']} ({r['engine']})", (r[latency_key], 100 * r["accuracy"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("CPU latency, batch 32 (ms)" if "b32" in latency_key else "CPU latency, batch 1 (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against latency per compression stage")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
