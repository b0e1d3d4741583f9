"""Does backbone ranking agree with the probes it replaces, at a tenth of their cost?

For each data set and candidate list, with a COLD feature cache each time (a fresh temporary cache folder):

(a) ``rank_backbones`` on a stratified subsample of at most ``--max-samples`` training examples (LogME, LEEP,
    H-score, k-NN), timed end to end (building the backbones included);
(b) a linear probe trained from scratch per candidate: features of the whole training and test splits from the same
    frozen backbone (``transferkit.features.extract_features``), standardised, then scikit-learn
    ``LogisticRegression(max_iter=1000)``; test accuracy, timed end to end the same way;
(c) Kendall tau (``scipy.stats.kendalltau``) between each score's order and the probe accuracies' order, per data
    set and pooled over the within-data-set pairs (scores of different data sets are not comparable), and the time
    ratio ranking / probes. Targets (issue 3): tau >= 0.6 for LogME, time ratio <= 0.1.

Image candidates run on Animal-MNIST (6,801 training / 1,943 test images); text candidates on Rotten Tomatoes
(10,202 / 1,275 snippets): ``minilm-l6`` against the ``bow-hash`` bag-of-words baseline when the catalog has it.

    .venv/bin/python benchmarks/ranking.py                       # 224 px, the honest default (about 30 min on CPU)
    .venv/bin/python benchmarks/ranking.py --max-samples 1000,500  # also rank on 500 examples (probes run once)
    .venv/bin/python benchmarks/ranking.py --image-size 64 --skip-text  # a quick run
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from transferkit.config import DataConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.ranking import METRICS, build_candidate, rank_backbones  # noqa: E402

IMAGE_CANDIDATES = [
    "mobilenet_v2.imagenet",
    "mobilenet_v2.imagenet@4",
    "mobilenet_v2.imagenet@2",
    "mobilenet_v2.random",
    "timm:resnet18~random",
]
TEXT_CANDIDATES = ["minilm-l6", "bow-hash"]


def cold_cache() -> tempfile.TemporaryDirectory:
    """A fresh, empty feature cache folder, made the active cache (set before any extraction)."""
    tmp = tempfile.TemporaryDirectory(prefix="tk-rank-bench-")
    os.environ["TRANSFERKIT_CACHE_DIR"] = tmp.name
    return tmp


def probe(splits, candidate: str, image_size: int | None, seed: int) -> tuple[float, float, int]:  # noqa: ANN001
    """Test accuracy of a standardised logistic-regression probe on full-split frozen features, and its seconds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from transferkit.features import extract_features

    t0 = time.perf_counter()
    backbone = build_candidate(candidate, seed=seed)
    kw = {"image_size": image_size} if splits.modality == "image" else {}
    xtr = extract_features(backbone, splits.train, **kw)
    xte = extract_features(backbone, splits.test, **kw)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(xtr, splits.train.labels)
    acc = float(np.mean(clf.predict(xte) == splits.test.labels))
    return acc, time.perf_counter() - t0, int(xtr.shape[1])


def kendall(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    ok = [i for i in range(len(a)) if not (math.isnan(a[i]) or math.isnan(b[i]))]
    if len(ok) < 2:
        return float("nan")
    return float(kendalltau([a[i] for i in ok], [b[i] for i in ok]).statistic)


def pairs(a: list[float], b: list[float]) -> tuple[int, int]:
    """Concordant and discordant pairs (ties and NaN count as neither)."""
    c = d = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        s = (a[i] - a[j]) * (b[i] - b[j])
        c += s > 0
        d += s < 0
    return c, d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=224, help="image side in pixels (default 224)")
    ap.add_argument("--max-samples", default="1000", help="ranking subsample size(s), comma-separated (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-candidates", default=",".join(IMAGE_CANDIDATES))
    ap.add_argument("--text-candidates", default=",".join(TEXT_CANDIDATES))
    ap.add_argument("--skip-text", action="store_true")
    args = ap.parse_args()
    sizes = [int(v) for v in args.max_samples.split(",")]

    from transferkit.backbones import list_backbones

    jobs = [("animal-mnist", args.image_candidates.split(","))]
    text = [c for c in args.text_candidates.split(",") if c]
    missing = [c for c in text if c.split("@")[0].split("~")[0] not in list_backbones() and ":" not in c]
    if args.skip_text:
        print("text candidates skipped (--skip-text)")
    elif missing:
        print(f"text candidates skipped: {', '.join(missing)} not in `transferkit backbones`")
    else:
        jobs.append(("rotten-tomatoes", text))

    metrics = list(METRICS)
    rank_total = dict.fromkeys(sizes, 0.0)
    probe_total = 0.0
    pooled = {(m, size): [0, 0] for m in metrics for size in sizes}
    summary = []
    for data_name, cands in jobs:
        splits = load_data(DataConfig(name=data_name))
        size = args.image_size if splits.modality == "image" else None
        ranks = {}
        for n in sizes:
            with cold_cache():
                t0 = time.perf_counter()
                ranks[n] = rank_backbones(splits, cands, max_samples=n, seed=args.seed, image_size=size)
                ranks[n].seconds = time.perf_counter() - t0
            print(f"  ranking on {ranks[n].n_samples} examples: {ranks[n].seconds:.1f} s", flush=True)
        accs, secs, dims = [], [], []
        with cold_cache():
            for c in cands:
                acc, sec, dim = probe(splits, c, size, args.seed)
                accs.append(acc)
                secs.append(sec)
                dims.append(dim)
                print(f"  probe {c}: accuracy {acc:.4f} in {sec:.1f} s", flush=True)
        t_probe = sum(secs)
        probe_total += t_probe
        print(f"\n### {data_name}: {len(splits.train)} train / {len(splits.test)} test (image size {size})")
        print(table(["candidate", "dim", "probe test acc", "probe s"],
                    [[c, dims[i], accs[i], secs[i]] for i, c in enumerate(cands)]))
        for n, res in ranks.items():
            by = {r.candidate: r for r in res.candidates}
            rows = [[c, *(by[c].scores[m] for m in metrics), by[c].seconds] for c in cands]
            print(f"\nranking on {res.n_samples} training examples (max_samples={n}), cold cache:")
            print(table(["candidate", *metrics, "rank s"], rows))
            taus = {}
            for m in metrics:
                vals = [by[c].scores[m] for c in cands]
                taus[m] = kendall(vals, accs)
                cd = pairs(vals, accs)
                pooled[(m, n)][0] += cd[0]
                pooled[(m, n)][1] += cd[1]
            print(f"recommended: {res.best} (highest LogME); best probe: {cands[int(np.argmax(accs))]}")
            print("Kendall tau vs probe accuracy: " + ", ".join(f"{m} {taus[m]:.3f}" for m in metrics))
            print(f"time: ranking {res.seconds:.1f} s, probes {t_probe:.1f} s, ratio {res.seconds / t_probe:.3f}")
            rank_total[n] += res.seconds
            summary.append([data_name, len(cands), res.n_samples, taus["logme"], res.seconds, t_probe,
                            res.seconds / t_probe])

    print("\n### summary")
    print(table(["data", "candidates", "ranked on", "LogME tau", "ranking s", "probes s", "ratio"], summary))
    for n in sizes:
        print(f"\nmax_samples={n}:")
        for m in metrics:
            c, d = pooled[(m, n)]
            tau = f"{(c - d) / (c + d):.3f}" if c + d else "n/a"
            print(f"  pooled over within-data-set pairs, {m}: {c} concordant, {d} discordant, tau {tau}")
        print(f"  total: ranking {rank_total[n]:.1f} s vs probes {probe_total:.1f} s, ratio "
              f"{rank_total[n] / probe_total:.3f} (target <= 0.1)")


if __name__ == "__main__":
    main()
