"""Domain adaptation on the built-in shifted pairs: every method vs source-only, mean +- std over seeds.

Runs :func:`transferkit.app.compare.run_compare` (what ``transferkit compare`` runs) on an example config and
prints its summary table: target accuracy (mean +- std over seeds), the paired gain over source-only measured in the
same run (the baseline), source accuracy, the proxy A-distance of the trained features, and for each
target-label-free validator the epoch it picks against the oracle's. The comparison folder (CSV, Markdown,
embedding plot) is written to ``--out``.

    .venv/bin/python benchmarks/domain_adaptation.py                                   # mnist -> mnist-m, 3 seeds
    .venv/bin/python benchmarks/domain_adaptation.py --methods source-only,dann --seeds 1 --set train.epochs=2
    .venv/bin/python benchmarks/domain_adaptation.py --config examples/fashion_to_fashion_m.yaml
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from transferkit.app.compare import run_compare
from transferkit.config import apply_overrides, load_yaml

ROOT = Path(__file__).resolve().parent.parent
METHODS = "source-only,dann,cdan,cdan-e,dan,coral,mcc,self-training,target-oracle"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "mnist_to_mnist_m.yaml"))
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--embedding", default="tsne", choices=["tsne", "pca", "none"])
    ap.add_argument("--out", default="runs/bench_domain_adaptation")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    cfg = apply_overrides(load_yaml(args.config), [*args.set, f"out={args.out}", "overwrite=true"])
    t0 = time.perf_counter()
    result = run_compare(cfg, args.methods.split(","), list(range(args.seeds)), embedding=args.embedding)
    print(f"{cfg.data.name} -> {cfg.target.name}, {args.seeds} seeds, backbone {cfg.model.backbone}, "
          f"{cfg.train.epochs} epochs; total {time.perf_counter() - t0:.0f} s")
    print(result.table)
    print(f"folder: {result.out}")


if __name__ == "__main__":
    main()
