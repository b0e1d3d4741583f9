"""A cached ``probe`` re-run: the whole ``transferkit fit`` command, first run vs second run, wall clock.

Runs ``transferkit fit --data animal-mnist --backbone mobilenet_v2.imagenet --method probe`` twice as subprocesses
against a fresh, empty feature cache (``TRANSFERKIT_CACHE_DIR`` in a temporary folder), each into its own run folder,
and prints both wall times and their ratio (measured in one run, so on the same machine under the same load). The
first run exports the backbone to ONNX, extracts the features of train, val and test and fits the head; the second
reads the features back and the fitted head (the probe keeps it in the cache, keyed by the features, labels and
settings). A third run with the cached heads removed shows what reading the head saves (it reads the features but
fits the head again), and a fourth under ``python -X importtime`` lists the modules whose import took longest
(cumulative), to see what start-up still costs.

    .venv/bin/python benchmarks/probe_rerun.py [--data animal-mnist] [--backbone mobilenet_v2.imagenet] [--top 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402


def cpu_name() -> str:
    """The CPU's model name (``lscpu``), or what the platform says when lscpu is missing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "?"
    m = re.search(r"^Model name:\s*(.+)$", out, flags=re.M)
    return m.group(1).strip() if m else platform.processor() or "?"


def run_fit(args: argparse.Namespace, out: Path, env: dict[str, str], *, importtime: bool = False) -> tuple[float, str]:
    """One ``transferkit fit`` as a subprocess: (wall seconds, stderr)."""
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "transferkit", "fit",
           "--data", args.data, "--backbone", args.backbone, "--method", "probe", "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"fit failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stderr


WATCH = ("torch._dynamo", "sklearn.metrics", "sklearn.linear_model", "matplotlib.figure",
         "matplotlib.backends.backend_agg", "onnxruntime")


def top_imports(stderr: str, n: int) -> list[list[object]]:
    """The ``n`` packages (and watched submodules) with the largest cumulative import time, from ``-X importtime``."""
    best: dict[str, int] = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)", line)
        if m and ("." not in m.group(2) or m.group(2) in WATCH):
            best[m.group(2)] = max(best.get(m.group(2), 0), int(m.group(1)))
    rows = sorted(([name, round(us / 1e6, 3)] for name, us in best.items()), key=lambda r: -float(r[1]))
    return rows[:n]


def test_accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["test"]["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="animal-mnist")
    ap.add_argument("--backbone", default="mobilenet_v2.imagenet")
    ap.add_argument("--top", type=int, default=15, help="how many imports of the second run to list")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tk-probe-rerun-"))
    env = {**os.environ, "TRANSFERKIT_CACHE_DIR": str(tmp / "cache")}
    first, _ = run_fit(args, tmp / "run1", env)
    second, _ = run_fit(args, tmp / "run2", env)
    a1, a2 = test_accuracy(tmp / "run1"), test_accuracy(tmp / "run2")
    shutil.rmtree(tmp / "cache" / "heads")
    refit, _ = run_fit(args, tmp / "run3", env)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average at the end: {os.getloadavg()[0]:.2f}")
    print(table(["data", "backbone", "first run s", "second run s", "ratio", "test acc 1", "test acc 2",
                 "second run, head fitted again s"],
                [[args.data, args.backbone, round(first, 1), round(second, 2), round(first / second, 1), a1, a2,
                  round(refit, 2)]]))
    fourth, err = run_fit(args, tmp / "run4", env, importtime=True)
    print(f"\nA fourth run under -X importtime ({fourth:.2f} s with the import timer on): slowest imports "
          "(cumulative)")
    print(table(["module", "seconds"], top_imports(err, args.top)))


if __name__ == "__main__":
    main()
