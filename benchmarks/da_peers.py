"""DA against peers: transferkit's domain-adaptation methods and skada's deep ones side by side, on the same arrays.

For each shifted pair (``--pairs source:target`` of built-in data sets), method and seed, both libraries train the
same network (``digits-cnn`` features + a linear head, from the same seeded initialisation), with the same optimiser
(AdamW, ``--lr``, constant rate), batch size and epochs, on the same labelled source training images and the same
unlabelled target training images (target rows get label -1 for skada), and are scored on the same labelled target
test images at the last epoch. The table gives target accuracy mean +- std over seeds, the paired gain over each
library's own source-only run with the same seed (the baseline, measured in the same run), and the fit's time as a
ratio to that library's source-only fit (transferkit's includes its per-epoch validation and label-free scores; a
clean per-step cost is benchmarks/da_step_cost.py).

skada's deep module (``skada.deep``: DANN, CDAN, DAN, DeepCORAL, MCC, MDD; no MCD) needs ``skorch``; when it does not
import, the peer columns say so and only transferkit's rows are measured. transferkit's ``mcd`` has no skada
counterpart.

``pytorch-adapt`` (the issue's other peer, "if it installs cleanly") does not: its last release (0.0.83, January 2023)
pins ``torchmetrics`` 0.9.3, which imports ``pkg_resources``, gone from setuptools 81 on; it imports and runs a DANN
step only with an old setuptools added beside it (checked by hand on 2026-12-03 in a throw-away ``--target`` folder).
Pinning the project's setuptools back for a benchmark peer is not worth it, so it is not a column here.

``--train-size N`` trains both libraries on the same N training images per domain (a seeded draw of indices, the
same for source and target, since the target split is the source's blended image by image), for the large
Fashion-MNIST pair; the table's header says so. ``--results FILE`` keeps every (library, pair, method, seed) result in
a JSON file together with what determines it (arrays, epochs, batch size, lr, method parameters): runs already in the
file with the same inputs are reused, not re-run, so ``--libraries transferkit`` after a change to transferkit's
defaults re-runs only its rows and the table still shows the stored skada rows (marked as reused). ``--set
method:key=value`` passes a method parameter to transferkit (the file records it).

    .venv/bin/python benchmarks/da_peers.py                                    # mnist -> mnist-m, 5 seeds, 10 epochs
    .venv/bin/python benchmarks/da_peers.py --seeds 2 --epochs 2 --methods dann,mdd,mcd
    .venv/bin/python benchmarks/da_peers.py --pairs fashion-mnist:fashion-mnist-m --train-size 5000 \
        --results benchmarks/results/da_peers.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from typing import Any

import numpy as np
from _common import machine, table

#: transferkit method -> skada.deep factory name (None: skada has none)
PEERS: dict[str, str | None] = {"source-only": "SourceOnly", "dann": "DANN", "cdan": "CDAN", "dan": "DAN",
                                "coral": "DeepCoral", "mcc": "MCC", "mdd": "MDD", "mcd": None}


def skada_status() -> str | None:
    """``None`` when ``skada.deep`` imports; otherwise why not, in a few words for the table."""
    try:
        import skorch  # noqa: F401
    except ImportError:
        return "skorch not installed"
    try:
        import skada.deep  # noqa: F401
    except ImportError as err:
        return f"skada.deep: {err}"
    return None


def method_params(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """transferkit's method parameters for ``method`` from ``--set method:key=value``."""
    out: dict[str, Any] = {}
    for item in args.set:
        name, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        if name == method:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
    return out


def subsample(splits: Any, n: int | None) -> Any:
    """``splits`` with its training split cut to a seeded draw of ``n`` examples (the same indices for any pair
    member of the same length, so a blended target keeps its source's images) and its validation split to ``n / 5``."""
    if not n or n >= len(splits.train):
        return splits
    from transferkit.data.base import Splits

    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(splits.train), n, replace=False))
    val = splits.val
    if val is not None and len(val) > n // 5:  # transferkit scores it every epoch; only the test split is reported
        val = val.subset(np.sort(rng.choice(len(val), n // 5, replace=False)))
    return Splits(splits.train.subset(idx), val, splits.test)


def run_key(lib: str, pair: str, method: str, seed: int, args: argparse.Namespace, src: Any, tgt: Any) -> str:
    """What determines one run's result: library, method (and transferkit's parameters), seed, protocol, arrays."""
    h = hashlib.sha256()
    for ds in (src.train, tgt.train, tgt.test):
        h.update(ds.fingerprint().encode())
    parts = [lib, pair, method, str(seed), f"e{args.epochs}", f"b{args.batch_size}", f"lr{args.lr}",
             f"t{args.threads}", h.hexdigest()[:16]]
    if lib == "transferkit":  # the resolved parameters, defaults included: a changed default is a new run
        from transferkit.methods import create_method

        parts.append(json.dumps(create_method(method, method_params(method, args)).describe()["params"],
                                sort_keys=True, default=str))
    return "|".join(parts)


def transferkit_run(method: str, src: Any, tgt: Any, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Target test accuracy and seconds per training step of one transferkit fit."""
    from transferkit import TransferClassifier

    est = TransferClassifier(backbone="digits-cnn", method=method, method_params=method_params(method, args),
                             image_size=28, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, head_lr_scale=1.0, optimizer="adamw",
                             schedule="constant", warmup_fraction=0.0, monitor="last", seed=seed, progress=False,
                             device="cpu")
    est.fit(src, target=tgt.train.unlabelled())
    steps = args.epochs * (len(src.train) // args.batch_size)
    return {"acc": est.evaluate(tgt.test)["accuracy"], "step": est.fit_result_.seconds / max(1, steps)}


def _arrays(ds: Any) -> np.ndarray:
    """The model's own preprocessing of ``ds`` as one float array (what both libraries train on)."""
    from transferkit.backbones import build_backbone
    from transferkit.data.loaders import make_loader

    pre = build_backbone("digits-cnn").preprocessing
    x, _ = next(iter(make_loader(ds, pre, image_size=28, train=False, batch_size=len(ds))))
    return x.numpy().astype(np.float32)


def skada_run(method: str, src: Any, tgt: Any, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """The same fit through ``skada.deep`` (skorch): same network, optimiser, batch size, epochs, data."""
    import skada.deep as sd
    import torch
    from torch import nn

    from transferkit.backbones import build_backbone

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.features = build_backbone("digits-cnn")
            self.head = nn.Linear(self.features.feature_dim, len(src.classes))

        def forward(self, x: torch.Tensor, sample_weight: Any = None) -> torch.Tensor:
            return self.head(self.features(x))

    xs, xt = _arrays(src.train), _arrays(tgt.train)
    x = np.concatenate([xs, xt])
    y = np.concatenate([src.train.labels, -np.ones(len(xt), dtype=np.int64)])
    domain = np.concatenate([np.ones(len(xs), dtype=np.int64), -2 * np.ones(len(xt), dtype=np.int64)])
    factory = getattr(sd, PEERS[method])
    kwargs: dict[str, Any] = dict(layer_name="features", batch_size=args.batch_size, max_epochs=args.epochs,
                                  train_split=False, optimizer=torch.optim.AdamW, lr=args.lr, verbose=0)
    if method in ("dann", "cdan", "mdd"):
        kwargs["num_features"] = 768
    if method in ("cdan", "mdd"):
        kwargs["n_classes"] = len(src.classes)
    torch.manual_seed(seed)
    net = factory(Net(), **kwargs)
    t0 = time.perf_counter()
    net.fit(x, y, sample_domain=domain)
    seconds = time.perf_counter() - t0
    xt_test = _arrays(tgt.test)
    pred = net.predict(xt_test, sample_domain=-2 * np.ones(len(xt_test), dtype=np.int64))
    steps = args.epochs * (len(xs) // args.batch_size)
    return {"acc": float((np.asarray(pred) == tgt.test.labels).mean()), "step": seconds / max(1, steps)}


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default="mnist:mnist-m")
    ap.add_argument("--methods", default="dann,cdan,dan,coral,mcc,mdd,mcd")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: comparable step times)")
    ap.add_argument("--train-size", type=int, default=None,
                    help="training images per domain (a seeded draw, the same for both libraries); default: all")
    ap.add_argument("--libraries", default="transferkit,skada", help="which libraries to run (others: from --results)")
    ap.add_argument("--results", help="JSON file of per-seed results: reused when their inputs match, updated")
    ap.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                    help="a transferkit method parameter (repeatable)")
    args = ap.parse_args()

    import torch

    from transferkit.config import DataConfig
    from transferkit.data import load_data

    torch.set_num_threads(args.threads)
    peer = skada_status()
    libraries = set(args.libraries.split(","))
    if "skada" not in libraries and peer is not None:
        peer = None  # not run here: the stored rows (if any) speak for themselves
    stored: dict[str, dict[str, float]] = {}
    if args.results and os.path.exists(args.results):
        with open(args.results, encoding="utf-8") as fh:
            stored = json.load(fh)

    def save() -> None:
        if args.results:
            tmp = args.results + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(stored, fh, indent=0, sort_keys=True)
            os.replace(tmp, args.results)
    methods = ["source-only", *[m for m in args.methods.split(",") if m != "source-only"]]
    seeds = list(range(args.seeds))
    t_all = time.perf_counter()
    for pair in args.pairs.split(","):
        s_name, t_name = pair.split(":")
        src = subsample(load_data(DataConfig(name=s_name)), args.train_size)
        tgt = subsample(load_data(DataConfig(name=t_name)), args.train_size)
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        reused: set[str] = set()
        for m in methods:
            for seed in seeds:
                for lib, fn in (("transferkit", transferkit_run), ("skada", skada_run)):
                    if lib == "skada" and (peer is not None or not PEERS.get(m)):
                        continue
                    key = run_key(lib, pair, m, seed, args, src, tgt)
                    if lib not in libraries or key in stored:
                        if key in stored:
                            runs.setdefault((lib, m), []).append(stored[key])
                            reused.add(lib)
                        continue
                    try:
                        r = fn(m, src, tgt, seed, args)
                    except Exception as err:  # a peer failing is a table cell, not the end of the benchmark
                        if lib == "transferkit":
                            raise
                        print(f"skada {m} seed {seed}: {type(err).__name__}: {err}")
                        continue
                    runs.setdefault((lib, m), []).append(r)
                    print(f"{lib} {pair} {m} seed {seed}: {100 * r['acc']:.1f}", flush=True)
                    stored[key] = r
                    save()
        rows = []
        for m in methods:
            row: list[object] = [m]
            for lib in ("transferkit", "skada"):
                r, base = runs.get((lib, m), []), runs.get((lib, "source-only"), [])
                if lib == "skada" and (peer is not None or not PEERS.get(m)):
                    row += [peer if PEERS.get(m) else "no such method", "", ""]
                    continue
                gains = [a["acc"] - b["acc"] for a, b in zip(r, base, strict=False)]
                step = (statistics.fmean(a["step"] for a in r) / statistics.fmean(b["step"] for b in base)
                        if r and base else float("nan"))
                row += [_cell([a["acc"] for a in r]), _cell(gains) if m != "source-only" else "-", f"{step:.2f}x"]
            rows.append(row)
        size = f"{len(src.train)} / {len(tgt.train)} training images (source / target)"
        if args.train_size:
            size += " (a seeded draw, the same for both libraries)"
        note = f"; reused from {args.results}: {', '.join(sorted(reused))} rows" if reused else ""
        print(f"\n{s_name} -> {t_name}: digits-cnn + linear head, AdamW lr {args.lr} constant, batch "
              f"{args.batch_size}, {args.epochs} epochs, last epoch, seeds {seeds}, {size}, {len(tgt.test)} target "
              f"test images, {args.threads} thread(s); transferkit method params {args.set or 'defaults'}{note}; "
              f"{machine()}")
        print(table(["method", "transferkit target acc %", "gain vs own source-only", "fit time / source-only's",
                     "skada target acc %", "gain vs own source-only", "fit time / source-only's"], rows))
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
