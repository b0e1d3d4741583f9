"""Few-shot transfer: data sets x shots x methods, mean +- std over seeds (issue 4's table).

Protocol. For each seed ``s`` the training split keeps exactly ``k`` labelled examples per class, drawn with
``data.split_seed = s`` (``DataConfig(per_class=k)``), and training uses ``seed = s``; every method sees the same
``k``-shot draw for a given seed, so differences between methods can be paired over seeds. There is no validation
split (a few-shot user has no hundreds of labelled images to choose epochs on): every run trains a fixed number of
epochs and is scored on the data set's fixed test split. Rows report test accuracy and macro-F1 as mean +- sample
std over seeds, the paired difference to plain fine-tuning (mean +- std of the per-seed differences; "beats the
noise" when the mean difference exceeds two standard errors), the share of parameters trained and the wall time per
run. Data sets: Animal-MNIST and Fashion-MNIST (MobileNetV2-ImageNet) at 5, 10 and 25 images per class, Rotten
Tomatoes (MiniLM-L6) at 16 and 64 texts per class.

    .venv/bin/python benchmarks/few_shot.py                       # the full grid (long: hours on CPU)
    .venv/bin/python benchmarks/few_shot.py --datasets animal-mnist --shots 10 --methods finetune l2-sp \\
        --seeds 0 1 2 3 4 --results runs/few_shot.json            # one cell, runs saved as they finish
    .venv/bin/python benchmarks/few_shot.py ... --params '{"l2-sp": {"alpha": 0.1}}' --set lr=1e-4

``--results`` keeps every finished run (JSON, rewritten atomically after each run) and skips runs already in it,
so an interrupted grid continues where it stopped. Recipes per modality and method are in ``RECIPES`` below; ``--set``
overrides hyperparameters for all runs and ``--params`` a method's parameters.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from transferkit import TransferClassifier  # noqa: E402
from transferkit.config import DataConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.io import write_json  # noqa: E402

DATASETS = {
    "animal-mnist": {"modality": "image", "shots": [5, 10, 25]},
    "fashion-mnist": {"modality": "image", "shots": [5, 10, 25]},
    "rotten-tomatoes": {"modality": "text", "shots": [16, 64]},
}
METHODS = {
    "image": ["finetune", "linear-probe", "l2-sp", "delta", "bss"],
    "text": ["finetune", "linear-probe", "l2-sp", "delta", "bss", "lora"],
}
# Shared recipe per modality, then per-method changes (hyperparameters and method_params).
BASE = {
    "image": dict(backbone="mobilenet_v2.imagenet", image_size=64, epochs=10, batch_size=32, lr=1e-3,
                  head_lr_scale=10.0, warmup_fraction=0.1),
    "text": dict(backbone="minilm-l6", epochs=5, batch_size=16, lr=5e-5, head_lr_scale=20.0, warmup_fraction=0.1),
}
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "image": {
        "l2-sp": dict(method_params={"alpha": 0.1, "beta": 0.01}),
        "delta": dict(method_params={"alpha": 1.0, "beta": 0.01}),
        "bss": dict(method_params={"eta": 0.001, "k": 1}),
    },
    "text": {
        "l2-sp": dict(method_params={"alpha": 0.1, "beta": 0.01}),
        "delta": dict(method_params={"alpha": 1.0, "beta": 0.01}),
        "bss": dict(method_params={"eta": 0.001, "k": 1}),
        "lora": dict(lr=1e-3, head_lr_scale=10.0, method_params={"r": 8, "alpha": 16, "dropout": 0.1}),
    },
}


def recipe(modality: str, method: str, overrides: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The estimator hyperparameters of one run (without the seed)."""
    r = {**BASE[modality], "method": method, **RECIPES[modality].get(method, {})}
    r.update(overrides)
    if method in params:
        r["method_params"] = {**r.get("method_params", {}), **params[method]}
    r["progress"] = False
    return r


def run_one(name: str, k: int, method: str, seed: int, hp: dict[str, Any], test_every: int) -> dict[str, Any]:
    import numpy as np

    splits = load_data(DataConfig(name=name, per_class=k, split_seed=seed))
    test = splits.test if test_every <= 1 else splits.test.subset(np.arange(0, len(splits.test), test_every))
    t0 = time.perf_counter()
    clf = TransferClassifier(**{**hp, "seed": seed}).fit(splits.train)
    fit_s = time.perf_counter() - t0
    m = clf.evaluate(test)
    fr = clf.fit_result_
    return {"dataset": name, "shots": k, "method": method, "seed": seed, "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"], "fit_seconds": fit_s, "seconds": time.perf_counter() - t0,
            "trainable_params": fr.trainable_params, "total_params": fr.total_params, "hyperparameters": hp,
            "test_size": len(test)}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summarise(runs: list[dict[str, Any]]) -> str:
    """The Markdown table of the module docstring."""
    rows = []
    cells: dict[tuple[str, int], dict[str, dict[int, dict[str, Any]]]] = {}
    for r in runs:
        cells.setdefault((r["dataset"], r["shots"]), {}).setdefault(r["method"], {})[r["seed"]] = r
    for (ds, k), by_method in cells.items():
        base = by_method.get("finetune", {})
        for method, by_seed in by_method.items():
            accs = [r["accuracy"] for r in by_seed.values()]
            f1s = [r["macro_f1"] for r in by_seed.values()]
            (am, asd), (fm, fsd) = _mean_std(accs), _mean_std(f1s)
            diff = "—"
            common = sorted(set(by_seed) & set(base))
            if method != "finetune" and len(common) >= 2:
                d = [by_seed[s]["accuracy"] - base[s]["accuracy"] for s in common]
                dm, dsd = _mean_std(d)
                se = dsd / math.sqrt(len(d))
                verdict = "better" if dm > 2 * se else "worse" if dm < -2 * se else "within noise"
                diff = f"{100 * dm:+.1f} ± {100 * dsd:.1f} ({verdict})"
            any_run = next(iter(by_seed.values()))
            share = any_run["trainable_params"] / max(1, any_run["total_params"])
            secs = statistics.fmean(r["seconds"] for r in by_seed.values())
            rows.append([ds, k, method, len(by_seed), f"{100 * am:.1f} ± {100 * asd:.1f}",
                         f"{100 * fm:.1f} ± {100 * fsd:.1f}", diff, f"{100 * share:.2f}%", f"{secs:.1f}"])
    headers = ["data set", "k/class", "method", "seeds", "accuracy % (mean ± std)", "macro-F1 %",
               "Δ acc vs finetune (paired)", "trained params", "s / run"]
    return table(headers, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--shots", type=int, nargs="+", default=None, help="k per class (default: per data set)")
    ap.add_argument("--methods", nargs="+", default=None, help="default: per modality (see METHODS)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="hyperparameter overrides (YAML values)")
    ap.add_argument("--params", default="{}", help='method parameters as JSON, e.g. \'{"l2-sp": {"alpha": 1}}\'')
    ap.add_argument("--test-every", type=int, default=1, help="score on every n-th test example (1: all)")
    ap.add_argument("--results", type=Path, default=None, help="JSON file of finished runs (resumed if present)")
    args = ap.parse_args()

    import yaml

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    params = json.loads(args.params)
    if len(args.seeds) < 5:
        print(f"note: {len(args.seeds)} seed(s); the issue's table needs at least 5", file=sys.stderr)
    runs: list[dict[str, Any]] = []
    if args.results is not None and args.results.is_file():
        runs = json.loads(args.results.read_text())
    done = {_key(r["dataset"], r["shots"], r["method"], r["seed"], r["hyperparameters"]) for r in runs}
    wanted = set()
    for name in args.datasets:
        modality = DATASETS[name]["modality"]
        for k in args.shots or DATASETS[name]["shots"]:
            for method in args.methods or METHODS[modality]:
                hp = recipe(modality, method, overrides, params)
                for seed in args.seeds:
                    key = _key(name, k, method, seed, hp)
                    wanted.add(key)
                    if key in done:
                        continue
                    r = run_one(name, k, method, seed, hp, args.test_every)
                    print(f"{name} k={k} {method} seed={seed}: acc {r['accuracy']:.4f} ({r['seconds']:.1f} s)",
                          file=sys.stderr, flush=True)
                    runs.append(r)
                    if args.results is not None:
                        write_json(args.results, runs)
    print(summarise([r for r in runs if _key(r["dataset"], r["shots"], r["method"], r["seed"],
                                             r["hyperparameters"]) in wanted]))


def _key(name: str, k: int, method: str, seed: int, hp: dict[str, Any]) -> tuple[Any, ...]:
    return (name, k, method, seed, json.dumps(hp, sort_keys=True))


if __name__ == "__main__":
    main()
