"""Compression round trip: MobileNetV2 fine-tuned on Animal-MNIST -> prune 50% -> recover -> int8 (issue 14).

For each seed: fine-tune ``mobilenet_v2.imagenet`` on a training subset of Animal-MNIST (``transferkit fit``'s
``run_fit``), then ``run_compress`` (the ``transferkit compress`` command): prune half of every layer's channels (l2
magnitude) in 2 steps of a quarter each with one ``kd`` epoch between, re-estimate its batch-norm statistics, recover
for 5 epochs with ``kd`` (online) from the unpruned model plus labels, quantise to static int8 (ORT QDQ, per-channel,
MinMax calibration on 256 training images, the first convolution and the classifier left in float). Every stage's
size, latency and test accuracy are measured in the same process (:mod:`transferkit.app.compress`), so the ratios
compare like with like on the same (shared, loaded) CPU.

Printed (mean +- std over the seeds), against the targets of issue 14:

- file-size ratio: the unpruned model's ``model.safetensors`` over the int8 ``model.onnx`` (target >= 5x);
- batch-32 throughput of int8 (ONNX Runtime) over the unpruned model in ONNX Runtime fp32 (target >= 3x) and over
  the unpruned model in eager PyTorch;
- test accuracy of int8 minus the unpruned fp32 (PyTorch) model's, in points (target >= -1).

The speed ratios come twice: from the stage rows (each stage timed once, minutes apart) and from the interleaved
timing at the end of the compression (the engines in turn, round after round; wall and thread CPU time, see
:mod:`transferkit.compress.measure`), which is the one to quote on a shared machine.

    .venv/bin/python benchmarks/compress.py [--seeds 3] [--image-size 64] [--train-size 2000] [--epochs 2]
        [--recover-epochs 5] [--prune 0.5] [--lr LR] [--importance l2] [--prune-steps 2]
        [--recover-set KEY=VALUE ...]
        [--out benchmarks/results/compress.json] [--runs RUN0 RUN1 ...]

``--runs`` takes run folders already fine-tuned with the same recipe (``transferkit fit --data animal-mnist --backbone
mobilenet_v2.imagenet --method finetune --epochs 2 --set model.image_size=64 --set data.train_size=2000``), one
per seed, and measures only the compression.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402


def one_seed(args: argparse.Namespace, seed: int, root: Path) -> dict:
    from transferkit.app.compress import run_compress
    from transferkit.app.fit import run_fit
    from transferkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    t0 = time.perf_counter()
    run = Path(args.runs[seed]) if args.runs else root / f"run-{seed}"
    cfg = RunConfig(
        data=DataConfig(name="animal-mnist", train_size=args.train_size or None),
        model=ModelConfig(backbone="mobilenet_v2.imagenet", method="finetune", image_size=args.image_size),
        train=TrainConfig(epochs=args.epochs, seed=seed, progress=False, batch_size=64),
        out=str(root / f"run-{seed}"),
    )
    if not args.runs:
        run_fit(cfg)
    t_fit = time.perf_counter() - t0
    data = DataConfig(name="animal-mnist", train_size=args.recover_train_size) if args.recover_train_size else None
    result = run_compress(run, root / f"compress-{seed}", prune=args.prune, importance=args.importance,
                          steps=args.prune_steps, recover_epochs=args.recover_epochs,
                          recover_method=args.recover_method, lr=args.lr, int8=True,
                          recover_overrides=args.recover_overrides,
                          calibration=args.calibration, seed=seed, progress=False, repeats=args.repeats,
                          data=data, test_samples=args.test_samples)
    rows = {(r["stage"], r["engine"]): r for r in result.rows}
    orig, ort, rec = rows[("original", "torch")], rows[("original", "onnx-fp32")], rows[("recovered", "torch")]
    nan = float("nan")
    # an int8 model refused by its parity check has no row: its figures are nan, the refusal is reported
    q = rows.get(("int8", "onnx-int8"), {"size_mb": nan, "throughput_b32": nan, "latency_b1_ms": nan,
                                         "accuracy": nan})
    return {
        "int8_refused": result.summary.get("int8_refused"),
        "seed": seed, "rows": result.rows, "fit_seconds": t_fit,
        "compress_seconds": time.perf_counter() - t0 - t_fit,
        "size_ratio": orig["size_mb"] / q["size_mb"],
        "throughput_vs_ort_fp32": q["throughput_b32"] / ort["throughput_b32"],
        "throughput_vs_eager": q["throughput_b32"] / orig["throughput_b32"],
        "throughput_vs_pruned_ort": q["throughput_b32"] / rows[("recovered", "onnx-fp32")]["throughput_b32"]
        if ("recovered", "onnx-fp32") in rows else float("nan"),
        "latency_b1_vs_ort_fp32": ort["latency_b1_ms"] / q["latency_b1_ms"],
        # the same ratios from the engines timed in turn at the end of the compression (wall and thread CPU time)
        "interleaved": result.summary["interleaved"],
        **_interleaved_ratios(result.summary["interleaved"]),
        "accuracy_delta_points": 100 * (q["accuracy"] - orig["accuracy"]),
        "recovered_delta_points": 100 * (rec["accuracy"] - orig["accuracy"]),
        "parity": result.summary["parity"], "prune": result.summary["prune"],
    }


def _interleaved_ratios(inter: dict) -> dict:
    """int8's speed-ups from the interleaved timings (nan where int8 was refused)."""
    b32, b1 = inter["batch32"], inter["batch1"]
    q32, q1 = b32.get("int8 onnx-int8"), b1.get("int8 onnx-int8")
    final = b32.get("recovered onnx-fp32") or b32.get("pruned onnx-fp32")
    nan = float("nan")
    out = {}
    for clock in ("wall", "cpu"):
        out[f"il_vs_ort_fp32_{clock}"] = q32[f"speedup_{clock}"] if q32 else nan
        out[f"il_vs_eager_{clock}"] = b32["original torch"][f"{clock}_ms"] / q32[f"{clock}_ms"] if q32 else nan
        out[f"il_vs_pruned_ort_{clock}"] = final[f"{clock}_ms"] / q32[f"{clock}_ms"] if q32 else nan
        out[f"il_b1_vs_ort_fp32_{clock}"] = q1[f"speedup_{clock}"] if q1 else nan
    return out


def mean_std(values: list[float]) -> str:
    """Mean +- std over the seeds that have the figure (an int8 model refused by its parity check has none)."""
    have = [v for v in values if v == v]
    if not have:
        return "n/a"
    m = statistics.mean(have)
    text = f"{m:.2f} +- {statistics.stdev(have):.2f}" if len(have) > 1 else f"{m:.2f}"
    return text if len(have) == len(values) else f"{text} ({len(have)} of {len(values)} seeds)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--train-size", type=int, default=2000, help="0: the whole training split (6,801 images)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--recover-epochs", type=int, default=5, help="after the last pruning step (5: see BENCHMARKS.md)")
    p.add_argument("--recover-method", default="kd", choices=["kd", "finetune"])
    p.add_argument("--lr", type=float, default=3e-3,
                   help="recovery learning rate (3e-3 recovered 92.0%% val. accuracy on seed 0, 1e-3 90.3%%)")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--prune", type=float, default=0.5)
    p.add_argument("--importance", default="l2", choices=["l1", "l2", "taylor"])
    p.add_argument("--prune-steps", type=int, default=2,
                   help="iterative pruning: steps, one recovery epoch between (2: 0.25 + 0.25 of the channels, chosen "
                        "on the validation split, see BENCHMARKS.md)")
    p.add_argument("--recover-set", dest="recover_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a train.* or model.method_params.* setting of the recovery (as compress --recover-set)")
    p.add_argument("--calibration", default="minmax")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--recover-train-size", type=int, default=None,
                   help="recover (and calibrate) on this many training images instead of the run's own")
    p.add_argument("--test-samples", type=int, default=None, help="measure accuracy on a seeded test sample")
    p.add_argument("--runs", nargs="*", default=None,
                   help="fine-tuned run folders, one per seed (skips the fine-tuning, e.g. on a loaded machine)")
    p.add_argument("--out", default="benchmarks/results/compress.json")
    args = p.parse_args()
    if args.runs:
        args.seeds = len(args.runs)
    import torch

    torch.set_num_threads(args.threads)

    results = []
    with tempfile.TemporaryDirectory(prefix="transferkit-bench-compress-") as tmp:
        for seed in range(args.seeds):
            results.append(one_seed(args, seed, Path(tmp)))
            r = results[-1]
            if r["int8_refused"]:
                print(f"seed {seed}: int8 refused: {r['int8_refused']}", flush=True)
            print(f"seed {seed}: size {r['size_ratio']:.2f}x, b32 throughput {r['throughput_vs_ort_fp32']:.2f}x ORT "
                  f"fp32 / {r['throughput_vs_eager']:.2f}x eager, accuracy {r['accuracy_delta_points']:+.2f} points "
                  f"(fit {r['fit_seconds']:.0f} s, compress {r['compress_seconds']:.0f} s)", flush=True)

    print(f"\nMachine: {machine()} (shared and loaded: ratios are measured in the same run)")
    print(f"Settings: {json.dumps({k: v for k, v in vars(args).items() if k != 'out'})}\n")
    print(table(["figure", f"mean +- std over {len(results)} seed(s)", "target"], [
        ["file size, unpruned safetensors / int8 ONNX (x)", mean_std([r["size_ratio"] for r in results]), ">= 5x"],
        ["batch-32 throughput, int8 / ORT fp32 unpruned (x)",
         mean_std([r["throughput_vs_ort_fp32"] for r in results]), ">= 3x"],
        ["batch-32 throughput, int8 / eager PyTorch unpruned (x)",
         mean_std([r["throughput_vs_eager"] for r in results]), "(reported)"],
        ["batch-32 throughput, int8 / ORT fp32 of the same pruned model (x)",
         mean_std([r["throughput_vs_pruned_ort"] for r in results]), "(reported: int8's share)"],
        ["batch-1 latency, ORT fp32 unpruned / int8 (x)",
         mean_std([r["latency_b1_vs_ort_fp32"] for r in results]), "(reported)"],
        *[[f"interleaved ({clock}): {what}", mean_std([r[f"il_{key}_{clock}"] for r in results]), target]
          for clock in ("wall", "cpu") for what, key, target in (
              ("batch-32 throughput, int8 / ORT fp32 unpruned (x)", "vs_ort_fp32", ">= 3x"),
              ("batch-32 throughput, int8 / eager PyTorch unpruned (x)", "vs_eager", "(reported)"),
              ("batch-32 throughput, int8 / ORT fp32 of the same pruned model (x)", "vs_pruned_ort", "(reported)"),
              ("batch-1 latency, ORT fp32 unpruned / int8 (x)", "b1_vs_ort_fp32", "(reported)"))],
        ["test accuracy, int8 - unpruned fp32 (points)",
         mean_std([r["accuracy_delta_points"] for r in results]), ">= -1"],
        ["test accuracy, recovered fp32 - unpruned fp32 (points)",
         mean_std([r["recovered_delta_points"] for r in results]), "(reported)"],
    ]))
    stages = list(dict.fromkeys((x["stage"], x["engine"]) for r in results for x in r["rows"]))
    rows = []
    for st in stages:  # a stage missing from a seed (int8 refused) is averaged over the seeds that have it
        per = [x for r in results for x in r["rows"] if (x["stage"], x["engine"]) == st]
        rows.append([st[0], st[1], mean_std([x["size_mb"] for x in per]), mean_std([x["params"] / 1e6 for x in per]),
                     mean_std([x["macs"] / 1e6 for x in per]), mean_std([x["latency_b1_ms"] for x in per]),
                     mean_std([x["latency_b32_ms"] for x in per]), mean_std([x["throughput_b32"] for x in per]),
                     mean_std([100 * x["accuracy"] for x in per])])
    print()
    print(table(["stage", "engine", "size (MB)", "params (M)", "MACs (M)", "latency b1 (ms)", "latency b32 (ms)",
                 "throughput b32 (img/s)", "test accuracy (%)"], rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "machine": machine(), "seeds": results}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
