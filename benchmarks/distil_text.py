"""Text through the cached mode: a MiniLM teacher teaching a ``bow-hash`` student on Rotten Tomatoes.

The teacher is ``minilm-l6`` with a trained linear head (method ``probe``: frozen MiniLM sentence embeddings, L-BFGS
head) fitted on the labelled pool (the first ``--pool`` training texts); its tokenizer has nothing to do with the
student's batches, which only the cached mode allows. The student is the ``bow-hash`` bag-of-words model (hashed
word-piece counts + a linear head; no transformer), given ``--labels`` labelled texts of the pool per seed, and in the
distilled row also the teacher's cached outputs on the whole pool (``kd``, ``teacher_mode: cached``,
``extra={"unlabelled": rest of the pool}``). Baseline: the same student on its labels alone, same epochs. Test: the
data set's test split.

Cache: the teacher is saved once to a folder and given to ``kd`` by its path, as a config would. Each seed's kd fit
runs twice on the same data: the first computes the teacher's outputs on that seed's rows (building the teacher from
its folder), the second finds them in the feature cache (the key is the SHA-256 of the teacher folder's files, so the
teacher is not built). The table shows the teacher time of both fits (from the run record) and their ratio; the
second fit must give the same student.

    .venv/bin/python benchmarks/distil_text.py [--seeds 0 1 2] [--pool 3000] [--labels 200] [--epochs 15] [--test 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pool", type=int, default=3000)
    ap.add_argument("--labels", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--test", type=int, default=0, help="evaluate on the first N test texts (0: all 1,275)")
    args = ap.parse_args()
    os.environ.setdefault("TRANSFERKIT_CACHE_DIR", tempfile.mkdtemp(prefix="tk-distil-text-"))

    from transferkit import TransferClassifier
    from transferkit.data import load_builtin
    from transferkit.data.base import Dataset

    t_start = time.perf_counter()
    splits = load_builtin("rotten-tomatoes")
    order = np.random.default_rng(1234).permutation(len(splits.train))[: args.pool]
    pool = splits.train.subset(order, name="rt-pool")
    test = splits.test.subset(np.arange(args.test)) if args.test else splits.test
    t0 = time.perf_counter()
    teacher = TransferClassifier(backbone="minilm-l6", method="probe", progress=False).fit(pool)
    teacher_fit = time.perf_counter() - t0
    teacher_acc = float(teacher.evaluate(test)["accuracy"])
    teacher_dir = Path(tempfile.mkdtemp(prefix="tk-distil-text-teacher-")) / "teacher"
    teacher.save(teacher_dir)
    del teacher  # only the folder teaches: each fit loads it (or, on a cache hit, does not)
    rows, base, distilled, ttimes, again = [], [], [], [], []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(pool))
        lab, rest = pool.subset(idx[: args.labels]), pool.subset(idx[args.labels:])
        unl = Dataset("text", rest.inputs, None, list(pool.classes), "rt-unlabelled")
        kw = {"backbone": "bow-hash", "epochs": args.epochs, "batch_size": 32, "lr": 3e-3, "progress": False,
              "seed": seed}
        a = float(TransferClassifier(**kw).fit(lab).evaluate(test)["accuracy"])
        params = {"teacher": str(teacher_dir), "teacher_mode": "cached", "alpha": 0.5, "temperature": 2.0}
        kd = TransferClassifier(method="kd", method_params=params, **kw).fit(lab, extra={"unlabelled": unl})
        b = float(kd.evaluate(test)["accuracy"])
        ttimes.append(kd.fit_result_.extra["teacher"]["seconds"])
        kd2 = TransferClassifier(method="kd", method_params=params, **kw).fit(lab, extra={"unlabelled": unl})
        again.append(kd2.fit_result_.extra["teacher"]["seconds"])
        same = float(np.abs(kd2.predict_proba(test) - kd.predict_proba(test)).max())
        base.append(a)
        distilled.append(b)
        rows.append([seed, f"{a:.3f}", f"{b:.3f}", f"{b - a:+.3f}", f"{ttimes[-1]:.2f}", f"{again[-1]:.3f}",
                     f"{ttimes[-1] / max(again[-1], 1e-3):.0f}x", f"{same:.1e}"])
        print(f"seed {seed}: labels only {a:.3f}, kd {b:.3f}, teacher {teacher_acc:.3f}, teacher time {ttimes[-1]} s "
              f"then {again[-1]} s, {time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)
    gain = np.array(distilled) - np.array(base)
    print(f"## Text: MiniLM probe teacher -> bow-hash student on rotten-tomatoes ({machine()}, shared machine "
          "under load)\n")
    print(f"Teacher: minilm-l6 + probe head on {args.pool} labelled texts, test accuracy {teacher_acc:.3f} "
          f"(fit {teacher_fit:.0f} s). Student: bow-hash, {args.labels} labels, {args.epochs} epochs.\n")
    print(table(["seed", "labels only", "kd (cached, + unlabelled pool)", "gain", "teacher s, first kd fit",
                 "teacher s, same fit again (cache)", "ratio", "max |p2 - p1| of the two students"], rows))
    print(f"\nmean +- std over {len(args.seeds)} seeds: labels only {np.mean(base):.3f} +- {np.std(base):.3f}, "
          f"kd {np.mean(distilled):.3f} +- {np.std(distilled):.3f}, gain {gain.mean():+.3f} +- {gain.std():.3f}; "
          f"teacher time per kd fit: first {np.mean(ttimes):.2f} +- {np.std(ttimes):.2f} s, again (cache) "
          f"{np.mean(again):.3f} +- {np.std(again):.3f} s: {np.mean(ttimes) / max(np.mean(again), 1e-3):.0f}x less.")
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    shutil.rmtree(teacher_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
