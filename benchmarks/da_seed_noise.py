"""DA seed noise: where the spread of target accuracy over seeds comes from, and what weight averaging does to it.

One training trajectory per (method, seed), the peer protocol of ``benchmarks/da_peers.py`` (``digits-cnn`` + a
linear head, AdamW ``--lr`` constant, batch 64, ``--epochs``, the same seeds), scored on the target test split at
the end in several ways that do not change the training itself, so every column is a paired comparison on the same
runs:

* ``last``: the weights of the last step (what ``monitor: last`` keeps without averaging);
* ``ema <d>``: an exponential moving average of the weights (and batch-norm statistics) with decay ``d`` per step,
  as :mod:`transferkit.methods.domain_adaptive` keeps it (``method_params.ema``);
* ``swa``: the uniform average of the weights over the last ``--swa-from`` share of the steps;
* ``... +bn``: the same average with its batch-norm statistics re-estimated in one pass over the training batches
  (source and target together for an adaptation method), as the library does.

The method runs with the parameters given by ``--set key=value`` (e.g. ``--set ema=0`` to measure without the
method's own averaging: its own average is what ``last`` reports when ``ema`` is on, so pass ``ema=0`` for the raw
last weights). No target labels are used for anything but these scores.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/da_seed_noise.py --methods source-only,dann --set ema=0
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from _common import machine, table


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def probe_class(base: type, name: str, decays: list[float], swa_from: float, test: Any, scores: dict[str, float]
                ) -> type:
    """A registered subclass of ``base`` that keeps the extra averages and scores them on ``test`` at the end."""
    import torch

    from transferkit.methods.averaging import recompute_bn
    from transferkit.methods.registry import register
    from transferkit.train.inference import predict_logits

    def _floats(model: Any) -> dict[str, torch.Tensor]:
        return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}

    class Probe(base):  # type: ignore[misc, valid-type]
        def _update(self, model: Any) -> None:
            state = _floats(model)
            if not hasattr(self, "_avg"):
                self._avg = {d: {k: v.detach().clone() for k, v in state.items()} for d in decays}
                self._swa: dict[str, torch.Tensor] | None = None
                self._swa_n = 0
                self._n = 0
            self._n += 1
            for d, avg in self._avg.items():
                dn = d * (1 - d ** (self._n - 1)) / (1 - d**self._n)  # bias-corrected, as the library's EMA
                for k, v in state.items():
                    avg[k].mul_(dn).add_(v.detach(), alpha=1 - dn)
            if self.progress >= 1 - swa_from:
                if self._swa is None:
                    self._swa = {k: v.detach().clone() for k, v in state.items()}
                else:
                    for k, v in state.items():
                        self._swa[k].add_(v.detach())
                self._swa_n += 1

        def training_step(self, model: Any, batch: Any) -> Any:
            self._update(model)  # the weights after the previous step
            return super().training_step(model, batch)

        def finish(self, model: Any, result: Any) -> None:
            super().finish(model, result)
            self._update(model)

            def acc() -> float:
                return float((predict_logits(model, test).argmax(1) == test.labels).mean())

            scores["last"] = acc()
            raw = {k: v.clone() for k, v in model.state_dict().items()}
            candidates = {f"ema {d:g}": a for d, a in self._avg.items()}
            if self._swa is not None:
                candidates["swa"] = {k: v / self._swa_n for k, v in self._swa.items()}
            for label, avg in candidates.items():
                model.load_state_dict({**raw, **avg})
                scores[label] = acc()
                if recompute_bn(model, self.bn_batches(next(model.parameters()).device)):
                    scores[label + " +bn"] = acc()  # batch-norm statistics re-estimated for the averaged weights
            model.load_state_dict(raw)

    Probe.name = name
    Probe.__name__ = Probe.__qualname__ = f"{base.__name__}Probe"
    return register(Probe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", default="mnist:mnist-m")
    ap.add_argument("--methods", default="source-only,dann")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--decays", default="0.99,0.995,0.999")
    ap.add_argument("--swa-from", type=float, default=0.5, help="share of the last steps in the uniform average")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="method parameter for every method that has it (repeatable)")
    ap.add_argument("--json", help="write the per-seed scores here")
    args = ap.parse_args()

    import dataclasses

    import torch

    from transferkit import TransferClassifier
    from transferkit.config import DataConfig
    from transferkit.data import load_data
    from transferkit.methods.registry import get_method_class

    torch.set_num_threads(1)
    s_name, t_name = args.pair.split(":")
    src, tgt = load_data(DataConfig(name=s_name)), load_data(DataConfig(name=t_name))
    decays = [float(d) for d in args.decays.split(",") if d]
    sets = dict(kv.split("=", 1) for kv in args.set)
    out: dict[str, list[dict[str, float]]] = {}
    t_all = time.perf_counter()
    for m in args.methods.split(","):
        base = get_method_class(m)
        fields = {f.name for f in dataclasses.fields(base.Params)}
        params = {k: _value(v) for k, v in sets.items() if k in fields}
        scores: dict[str, float] = {}
        probe = probe_class(base, f"{m}-noise-probe", decays, args.swa_from, tgt.test, scores)
        for seed in range(args.seeds):
            est = TransferClassifier(backbone="digits-cnn", method=probe.name, method_params=params, image_size=28,
                                     epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr_scale=1.0,
                                     optimizer="adamw", schedule="constant", warmup_fraction=0.0, monitor="last",
                                     seed=seed, progress=False, device="cpu")
            est.fit(src, target=tgt.train.unlabelled())
            out.setdefault(m, []).append(dict(scores))
            print(m, seed, {k: round(100 * v, 1) for k, v in scores.items()}, flush=True)
    labels = list(next(iter(out.values()))[0])
    rows = []
    for m, runs in out.items():
        row: list[object] = [m]
        for lab in labels:
            v = [100 * r[lab] for r in runs]
            row.append(f"{statistics.fmean(v):.1f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.1f}")
        rows.append(row)
    if "source-only" in out:
        for m, runs in out.items():
            if m == "source-only":
                continue
            row = [f"{m} gain"]
            for lab in labels:
                g = [100 * (a[lab] - b[lab]) for a, b in zip(runs, out["source-only"], strict=False)]
                row.append(f"{statistics.fmean(g):+.1f} ± {statistics.stdev(g) if len(g) > 1 else 0.0:.1f}")
            rows.append(row)
    print(f"\n{args.pair}, {args.epochs} epochs, batch {args.batch_size}, AdamW {args.lr} constant, seeds "
          f"0-{args.seeds - 1}, method params {sets or 'defaults'}; target test accuracy % mean ± std; {machine()}")
    print(table(["method", *labels], rows))
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "scores": out}, fh, indent=1)


if __name__ == "__main__":
    main()
