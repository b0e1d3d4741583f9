"""Source-sample selection on skada's covariate shift: does weighing / filtering the source beat plain training?

Setting (Shimodaira 2000): under covariate shift ``p(y|x)`` is shared and only ``p(x)`` moves, so a *well-specified*
model gains nothing from re-weighting; a *misspecified* one does, because re-weighting moves its limited capacity to
where the target is. The learner here is logistic regression: ``backbone: mlp:2`` has the identity as features, so the
linear head is multinomial logistic regression, trained by transferkit's one training loop through the Python API. On
skada's covariate-shift pair (source: a ring of class 0 around four clusters of class 1; target: the source's own
generator, kept where a Gaussian bump around (0, 2) says so) one line cannot separate the whole source well, but
it can separate the target region.

Protocol. For each seed ``s``: one draw of the pair from :func:`skada.datasets.make_shifted_datasets`
(``random_state=s``; the built-in ``skada-covariate-*`` data sets are the draw with ``s=0``: same size 150, noise
0.3, binary labels), each side split 60/20/20 (stratified, ``s``); training seed ``s``. The target training split
is used *without labels*; target test accuracy is the score. Every row trains ``--epochs`` epochs with AdamW and
keeps the epoch with the lowest importance-weighted source validation loss (``monitor: iw_val_loss``, no target
labels), so the rows differ only by the selection:

* ``unweighted``: ``source_selection: none``;
* ``importance-weighted``: ``source_selection: weight`` (cross-fitted domain classifier, clip 10, mean 1);
* ``keep``: ``source_selection: keep`` (the most target-like ``--keep`` fraction of the source);
* ``tradaboost (k/class)``: ``source_selection: tradaboost`` with ``target_labels_per_class: k`` (k labelled
  target examples per class join the training set with TrAdaBoost's weights). Its fair control is
  ``unweighted + k/class``: the same labelled target examples added to the source, no weights.

Reported: target test accuracy mean +- sample std over seeds, the paired difference to ``unweighted`` (mean +- std
of the per-seed differences; "yes" when the mean exceeds two standard errors), the domain classifier's AUC and the
weights' effective sample size. A scikit-learn reference (``LogisticRegression`` fitted directly with the same
weights) is printed underneath, so the gain is not an artefact of the training loop.

    .venv/bin/python benchmarks/source_selection.py                       # 5 seeds, about 5 min on 2 CPU cores
    .venv/bin/python benchmarks/source_selection.py --seeds 0 1 2 --epochs 10 --keep 0.25 --shots 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from transferkit import TransferClassifier  # noqa: E402
from transferkit.data import from_arrays, split_dataset  # noqa: E402
from transferkit.data.base import Dataset, Splits  # noqa: E402

NOISE = 0.3  # as the built-in skada pairs (transferkit.data.shifted.SKADA_NOISE)
SIZE = 150  # skada's n_samples per cluster: 1,200 source and 1,200 target rows


def make_pair(seed: int) -> tuple[Splits, Splits]:
    """One draw of skada's covariate-shift pair, each side split 60/20/20."""
    from skada.datasets import make_shifted_datasets

    x, y, d = make_shifted_datasets(n_samples_source=SIZE, n_samples_target=SIZE, shift="covariate_shift",
                                    noise=NOISE, label="binary", random_state=seed)
    x = np.asarray(x, dtype=np.float32)
    names = np.array(["0", "1"])[np.asarray(y)]
    src = from_arrays(x[d >= 0], names[d >= 0], modality="tabular", name="skada-covariate-source")
    tgt = from_arrays(x[d < 0], names[d < 0], modality="tabular", name="skada-covariate-target")
    return split_dataset(src, 0.2, 0.2, seed), split_dataset(tgt, 0.2, 0.2, seed)


def recipe(args: argparse.Namespace, seed: int, **kw: Any) -> dict[str, Any]:
    return dict(backbone="mlp:2", pretrained=False, method="finetune", epochs=args.epochs, lr=args.lr,
                batch_size=64, schedule="constant", warmup_fraction=0.0, monitor=args.monitor, seed=seed,
                progress=False, selection_fraction=args.keep, **kw)


def labelled_draw(target_train: Dataset, k: int, seed: int) -> Dataset:
    """The k labelled target examples per class that ``target_labels_per_class: k`` draws (same seed, same rows)."""
    from transferkit.data import subsample_train

    return subsample_train(target_train, per_class=k, seed=seed)


def concat(a: Dataset, b: Dataset) -> Dataset:
    return Dataset(a.modality, np.concatenate([a.inputs, b.inputs]), np.concatenate([a.labels, b.labels]),
                   list(a.classes), a.name)


def run_seed(args: argparse.Namespace, seed: int) -> tuple[dict[str, float], dict[str, Any], dict[str, float]]:
    src, tgt = make_pair(seed)
    acc: dict[str, float] = {}
    diag: dict[str, Any] = {}
    k = args.shots
    rows = {
        "unweighted": {"source_selection": "none"},
        "importance-weighted": {"source_selection": "weight"},
        f"keep {args.keep:.0%}": {"source_selection": "keep"},
        f"tradaboost ({k}/class)": {"source_selection": "tradaboost", "target_labels_per_class": k},
    }
    for name, kw in rows.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = TransferClassifier(**recipe(args, seed, **kw)).fit(src, target=tgt)
        acc[name] = clf.evaluate(tgt.test)["accuracy"]
        if clf.selection_ is not None:
            diag[name] = clf.selection_.summary()
        print(f"seed {seed} {name}: target test accuracy {acc[name]:.4f} ({time.perf_counter() - t0:.1f} s)",
              file=sys.stderr, flush=True)
    # the fair control of TrAdaBoost: the same labelled target examples, unweighted
    extra = labelled_draw(tgt.train, k, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = TransferClassifier(**recipe(args, seed, source_selection="none"))
        clf.fit(Splits(concat(src.train, extra), src.val, src.test), target=tgt)
    acc[f"unweighted + {k}/class"] = clf.evaluate(tgt.test)["accuracy"]
    return acc, diag, sklearn_reference(src, tgt, seed, diag)


def sklearn_reference(src: Splits, tgt: Splits, seed: int, diag: dict[str, Any]) -> dict[str, float]:
    """LogisticRegression fitted directly: unweighted vs the same importance weights the API computed."""
    from sklearn.linear_model import LogisticRegression

    from transferkit.adaptation.selection import select_source

    sel = select_source(src.train, tgt.train.unlabelled(), on="inputs", mode="weight", clip=10.0, seed=seed)
    x, y = src.train.inputs, src.train.labels
    plain = LogisticRegression().fit(x, y).score(tgt.test.inputs, tgt.test.labels)
    weighted = LogisticRegression().fit(x, y, sample_weight=sel.weights).score(tgt.test.inputs, tgt.test.labels)
    return {"unweighted": plain, "importance-weighted": weighted}


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--keep", type=float, default=0.5, help="fraction of the source kept by keep mode")
    ap.add_argument("--shots", type=int, default=3, help="labelled target examples per class for TrAdaBoost")
    ap.add_argument("--monitor", default="iw_val_loss", help="train.monitor of every row (e.g. val_loss, snd)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    per_seed = [run_seed(args, s) for s in args.seeds]
    names = list(per_seed[0][0])
    n = len(per_seed)
    rows = []
    for name in names:
        vals = [acc[name] for acc, _, _ in per_seed]
        base_name = f"unweighted + {args.shots}/class" if name.startswith("tradaboost") else "unweighted"
        diffs = [acc[name] - acc[base_name] for acc, _, _ in per_seed]
        if name in ("unweighted", base_name) or name.startswith("unweighted"):
            diff_txt, beats = "", ""
        else:
            sd = statistics.stdev(diffs) if n > 1 else 0.0
            diff_txt = f"{statistics.mean(diffs):+.4f} +- {sd:.4f} (vs {base_name})"
            beats = "yes" if n > 1 and statistics.mean(diffs) > 2 * sd / math.sqrt(n) else "no"
        aucs = [d[name]["domain_auc"] for _, d, _ in per_seed if name in d]
        ess = [d[name]["ess_fraction"] for _, d, _ in per_seed if name in d]
        rows.append([name, mean_std(vals), diff_txt, beats,
                     f"{statistics.mean(aucs):.3f}" if aucs else "", f"{statistics.mean(ess):.3f}" if ess else ""])
    print(f"\nskada covariate shift, logistic regression (mlp:2 + linear head), {n} seeds {args.seeds}, "
          f"{args.epochs} epochs, monitor {args.monitor}; target test accuracy\n")
    print(table(["source selection", "target accuracy", "paired difference", "beats noise", "domain AUC",
                 "ESS / n"], rows))
    ref = [r for _, _, r in per_seed]
    print("\nscikit-learn reference (LogisticRegression, same importance weights): unweighted "
          f"{mean_std([r['unweighted'] for r in ref])}, importance-weighted "
          f"{mean_std([r['importance-weighted'] for r in ref])}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
