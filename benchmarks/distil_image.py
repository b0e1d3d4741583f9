"""Image distillation across architectures: a fine-tuned MobileNetV2 teaching a small CNN on Animal-MNIST.

Protocol. The teacher is ImageNet MobileNetV2 fine-tuned once on ``--teacher-train`` Animal-MNIST training images
(``--teacher-size`` px, ``--teacher-epochs`` epochs, seed 0) and saved in ``--teacher-dir`` (reused by the next run
with the same settings). The student is another architecture, ``--student`` (default ``digits-cnn``, the DANN
paper's two-stage CNN, random initialisation, ``--student-size`` px), trained for a fixed ``--epochs`` on
``--shots`` labelled images per class drawn with ``data.split_seed = seed`` (the same draw for every method of a
seed) and no validation split (a fixed budget: the last epoch is kept). Each row is one method on that student:
``finetune`` (labels only), ``kd`` (logit distillation; ``soft-targets`` where ``kd`` is not registered), and the
feature methods ``rkd``, ``dist`` and ``fitnets`` (``--methods ... attention`` adds attention transfer), all with
the teacher online (it sees the student's own augmented batch, converted to its size and normalisation). Scores on
the fixed test split: accuracy and agreement with the teacher's predictions (mean +- sample std over seeds), the
paired gain over the label-only student (mean +- std of the per-seed differences; "beyond noise" when the mean
exceeds two standard errors), parameters and the wall time per run.

    .venv/bin/python benchmarks/distil_image.py                                   # 3 seeds, all rows
    .venv/bin/python benchmarks/distil_image.py --seeds 0 --methods finetune kd fitnets --results runs/d.json
    .venv/bin/python benchmarks/distil_image.py --params '{"fitnets": {"beta": 3.0}}'

``--results`` keeps every finished run (JSON, written atomically) and skips runs already in it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

from transferkit import TransferClassifier  # noqa: E402
from transferkit.config import DataConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.data.sampling import subsample  # noqa: E402
from transferkit.io import write_json  # noqa: E402
from transferkit.methods import method_names  # noqa: E402

METHODS = ["finetune", "kd", "rkd", "dist", "fitnets"]
#: per-method parameters besides the teacher (the methods' defaults otherwise)
PARAMS: dict[str, dict[str, Any]] = {
    "kd": {"alpha": 0.5, "temperature": 4.0},  # kd's defaults
    "soft-targets": {"alpha": 0.5, "temperature": 4.0},
    "attention": {"student_layers": ["stage1"], "teacher_layers": ["features.6"]},  # the last stages are 1x1 / 2x2
    "dist": {"tau": 4.0, "beta": 2.0, "gamma": 2.0},
}


def n_params(clf: TransferClassifier) -> int:
    return sum(p.numel() for p in clf.model_.parameters())


def build_teacher(args: argparse.Namespace) -> Path:
    """Fine-tune MobileNetV2 once and save it; a later run with the same settings reuses the folder."""
    tag = hashlib.sha256(json.dumps([args.teacher_train, args.teacher_size, args.teacher_epochs]).encode()).hexdigest()
    folder = Path(args.teacher_dir or Path(tempfile.gettempdir()) / f"transferkit-distil-teacher-{tag[:12]}")
    if (folder / "model.json").exists():
        print(f"teacher: reusing {folder}", file=sys.stderr)
        return folder
    splits = load_data(DataConfig(name="animal-mnist", train_size=args.teacher_train, split_seed=0))
    t0 = time.perf_counter()
    clf = TransferClassifier(backbone="mobilenet_v2.imagenet", method="finetune", image_size=args.teacher_size,
                             epochs=args.teacher_epochs, batch_size=32, lr=1e-3, augment="light", seed=0,
                             progress=False, warmup_fraction=0.1)
    clf.fit(splits.train, val=subsample(splits.val, 500, seed=0))
    clf.save(folder)
    print(f"teacher: trained in {time.perf_counter() - t0:.0f} s, saved to {folder}", file=sys.stderr)
    return folder


def run_one(method: str, seed: int, teacher: Path, args: argparse.Namespace, extra: dict[str, Any],
            test: Any, teacher_pred: np.ndarray) -> dict[str, Any]:
    splits = load_data(DataConfig(name="animal-mnist", per_class=args.shots, split_seed=seed))
    params = {} if method == "finetune" else {"teacher": str(teacher), **PARAMS.get(method, {}),
                                              **extra.get(method, {})}
    clf = TransferClassifier(backbone=args.student, pretrained=False, image_size=args.student_size, method=method,
                             method_params=params, epochs=args.epochs, batch_size=32, lr=args.lr,
                             augment="light", seed=seed, progress=False, warmup_fraction=0.1, monitor="last")
    t0 = time.perf_counter()
    clf.fit(splits.train)
    seconds = time.perf_counter() - t0
    pred = clf.predict_proba(test).argmax(1)
    return {"method": method, "seed": seed, "accuracy": float((pred == test.labels).mean()),
            "agreement": float((pred == teacher_pred).mean()), "seconds": seconds, "params": n_params(clf)}


def mean_std(v: list[float]) -> str:
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--shots", type=int, default=20, help="labelled training images per class for the student")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--student", default="digits-cnn")
    ap.add_argument("--student-size", type=int, default=32)
    ap.add_argument("--teacher-train", type=int, default=2000)
    ap.add_argument("--teacher-size", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--teacher-dir", default=None, help="default: a folder in the temporary directory")
    ap.add_argument("--test-size", type=int, default=1000, help="test examples scored (a fixed seeded subsample)")
    ap.add_argument("--params", default="{}", help="JSON: method -> method_params to add")
    ap.add_argument("--results", default=None, help="JSON file that keeps finished runs (and skips them)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared, loaded machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    extra = json.loads(args.params)
    methods = [m if m != "kd" or "kd" in method_names() else "soft-targets" for m in args.methods]
    t_start = time.perf_counter()
    teacher = build_teacher(args)
    test = subsample(load_data(DataConfig(name="animal-mnist")).test, args.test_size, seed=0)
    tclf = TransferClassifier.load(teacher)
    teacher_pred = tclf.predict_proba(test).argmax(1)
    teacher_acc = float((teacher_pred == test.labels).mean())
    teacher_params = n_params(tclf)

    done: list[dict[str, Any]] = []
    path = Path(args.results) if args.results else None
    if path is not None and path.exists():
        done = json.loads(path.read_text())
    for seed in args.seeds:
        for m in methods:
            if any(r["method"] == m and r["seed"] == seed for r in done):
                continue
            r = run_one(m, seed, teacher, args, extra, test, teacher_pred)
            print(f"{m} seed {seed}: accuracy {r['accuracy']:.4f}, agreement {r['agreement']:.4f}, "
                  f"{r['seconds']:.0f} s", file=sys.stderr)
            done.append(r)
            if path is not None:
                write_json(path, done)

    base = {r["seed"]: r["accuracy"] for r in done if r["method"] == "finetune"}
    rows = []
    for m in methods:
        rs = [r for r in done if r["method"] == m and r["seed"] in args.seeds]
        if not rs:
            continue
        acc = [r["accuracy"] for r in rs]
        gains = [r["accuracy"] - base[r["seed"]] for r in rs if r["seed"] in base]
        if m != "finetune" and len(gains) > 1:
            g_mean, g_std = statistics.mean(gains), statistics.stdev(gains)
            beyond = "yes" if g_mean > 2 * g_std / math.sqrt(len(gains)) else "no"
            gain = f"{g_mean:+.4f} ± {g_std:.4f} ({beyond})"
        else:
            gain = "—"
        name = "finetune (labels only)" if m == "finetune" else m
        rows.append([name, mean_std(acc), mean_std([r["agreement"] for r in rs]), gain,
                     f"{rs[0]['params']:,}", f"{statistics.mean(r['seconds'] for r in rs):.0f}"])
    rows.append(["teacher (MobileNetV2, fine-tuned)", f"{teacher_acc:.4f}", "1.0000", "—", f"{teacher_params:,}", "—"])
    print(f"\nAnimal-MNIST, student {args.student} at {args.student_size} px from random init, {args.shots} labelled "
          f"images per class, {args.epochs} epochs; teacher MobileNetV2 (ImageNet) fine-tuned on {args.teacher_train} "
          f"images at {args.teacher_size} px for {args.teacher_epochs} epochs; test: {len(test)} images; seeds "
          f"{args.seeds}; {machine()}; total {time.perf_counter() - t_start:.0f} s\n")
    print(table(["method", "test accuracy", "agreement with teacher", "gain over labels only (beyond noise)",
                 "parameters", "s / run"], rows))


if __name__ == "__main__":
    main()
