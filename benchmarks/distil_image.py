"""Image distillation across architectures: a fine-tuned MobileNetV2 teaching a small CNN on Animal-MNIST.

Protocol. The teacher is ImageNet MobileNetV2 fine-tuned once on ``--teacher-train`` Animal-MNIST training images
(``--teacher-size`` px, ``--teacher-epochs`` epochs, seed 0) and saved in ``--teacher-dir`` (reused by the next run
with the same settings). The student is another architecture, ``--student`` (default ``digits-cnn``, the DANN
paper's two-stage CNN, random initialisation, ``--student-size`` px), trained for a fixed ``--epochs`` on
``--shots`` labelled images per class drawn with ``data.split_seed = seed`` (the same draw for every method of a
seed) and no validation split (a fixed budget: the last epoch is kept). Each row is one method on that student:
``finetune`` (labels only), ``kd`` (logit distillation; ``soft-targets`` where ``kd`` is not registered), and the
feature methods ``rkd``, ``dist`` and ``fitnets`` (``--methods ... attention`` adds attention transfer), all with
the teacher online (it sees the student's own augmented batch, converted to its size and normalisation).

Transfer-set rows (Hinton et al. 2015's transfer set, Beyer et al. 2022's function matching): ``kd-transfer`` and
``dist-transfer`` train the same student on the same labelled images plus ``--transfer`` unlabelled images (default:
every other image of the Animal-MNIST training split; ``fit(..., extra={"unlabelled": ...})``), for
``--transfer-epochs`` epochs over labelled + unlabelled rows, the teacher online on the student's augmented view of
every row; the cross-entropy covers the labelled rows only. Their label-only twin ``finetune-steps`` trains on the
labels alone for as many optimiser steps (more epochs over the few labels), so the transfer rows do not win by
training longer; ``kd-steps`` / ``dist-steps`` (any ``METHOD-steps``) are that method on the labels alone for the same
number of steps. ``--transfer-params`` sets their method parameters (by method, then by row name:
``fitnets-kd-transfer`` is ``fitnets`` with its own parameters, e.g. the family's logit-KD term ``alpha``;
``seed-distil-b0-transfer`` is ``seed-distil`` with ``beta: 0``, its control: the same rows, batches and teacher
passes without the SEED term);
``--labelled-share S`` gives every transfer row ``labelled_share: S`` (the labelled images repeated to about that
share of each epoch) and the twin as many steps; ``--transfer-batch B`` is the transfer rows' batch size (64 with
share 0.5: about 32 labelled images per step, as many as the twin's batch of 32, plus 32 unlabelled ones, the
semi-supervised way of keeping the label signal per step equal). ``--validate N`` scores every row on N held-out
images of the training split (outside the seed's labelled draw and removed from the transfer set) instead of the test
split: the way to choose settings without the test. Scores on
the fixed test split: accuracy and agreement with the teacher's predictions (mean +- sample std over seeds), the
paired gain over the label-only student (mean +- std of the per-seed differences; "beyond noise" when the mean
exceeds two standard errors), parameters and the wall time per run.

    .venv/bin/python benchmarks/distil_image.py                                   # 3 seeds, all rows
    .venv/bin/python benchmarks/distil_image.py --seeds 0 --methods finetune kd fitnets --results runs/d.json
    .venv/bin/python benchmarks/distil_image.py --params '{"fitnets": {"beta": 3.0}}'
    .venv/bin/python benchmarks/distil_image.py --methods finetune finetune-steps kd dist kd-transfer dist-transfer
    .venv/bin/python benchmarks/distil_image.py --transfer-epochs 4 --labelled-share 0.5 --transfer-batch 64 \
        --methods finetune-steps kd-transfer seed-distil-transfer seed-distil-b0-transfer
    .venv/bin/python benchmarks/distil_image.py --seeds 0 --validate 1000 --labelled-share 0.25 --methods \
        finetune-steps kd-transfer fitnets-transfer --transfer-params '{"fitnets": {"beta": 1}}'

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
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

from transferkit import TransferClassifier  # noqa: E402
from transferkit.config import DataConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.data.base import Dataset  # noqa: E402
from transferkit.data.loaders import batches_per_epoch  # noqa: E402
from transferkit.data.sampling import TRAIN_BUDGET_STREAM, sample_rows, subsample  # noqa: E402
from transferkit.io import write_json  # noqa: E402
from transferkit.methods import method_names  # noqa: E402
from transferkit.methods.transfer_set import labelled_repeats  # noqa: E402

METHODS = ["finetune", "kd", "rkd", "dist", "fitnets", "finetune-steps", "kd-transfer", "dist-transfer"]
#: transfer-set rows: the method each runs (see the module docstring)
TRANSFER = {f"{m}-transfer": m for m in ("kd", "dist", "rkd", "attention", "fitnets", "seed-distil")}
TRANSFER["fitnets-kd-transfer"] = "fitnets"  # FitNets hints plus the family's logit-KD term (alpha > 0)
TRANSFER["seed-distil-b0-transfer"] = "seed-distil"  # its control: the same rows and steps, beta 0 (no SEED term)
#: parameters a row always has (after --transfer-params)
ROW_PARAMS: dict[str, dict[str, Any]] = {"seed-distil-b0-transfer": {"beta": 0.0}}
#: two-stage rows (Romero et al.'s FitNets: hints first, then training on the labels): stage 1 is the transfer row of
#: the method for ``--pre-epochs`` epochs, stage 2 fine-tunes its backbone (new head) on the labels alone for the rest
#: of the twin's steps
PRE = {f"{m}-pre": m for m in ("fitnets", "rkd", "attention", "seed-distil")}
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


def _rest(seed: int, args: argparse.Namespace) -> tuple[Dataset, Dataset, np.ndarray, np.ndarray]:
    """The full training split, the seed's labelled images, the other rows, and the validation rows among them."""
    full = load_data(DataConfig(name="animal-mnist")).train
    keep = sample_rows(len(full), None, labels=full.labels, per_class=args.shots, seed=seed, stream=TRAIN_BUDGET_STREAM)
    labelled = load_data(DataConfig(name="animal-mnist", per_class=args.shots, split_seed=seed)).train
    if not np.array_equal(np.asarray(full.inputs)[np.sort(keep)], np.asarray(labelled.inputs)):
        raise SystemExit("the per-class draw changed: the transfer set would overlap the labelled images")
    rest = np.setdiff1d(np.arange(len(full)), keep)
    val = np.sort(np.random.default_rng(10_000 + seed).choice(rest, args.validate, replace=False)) \
        if args.validate else np.zeros(0, dtype=np.int64)
    return full, labelled, np.setdiff1d(rest, val), val


def validation_rows(seed: int, args: argparse.Namespace) -> Dataset:
    """``--validate N``: N labelled images of the training split outside the seed's labelled draw, held out from the
    transfer set; the rows are scored on them instead of the test split (to choose settings without the test)."""
    full, _, _, val = _rest(seed, args)
    return full.subset(val)


def transfer_rows(seed: int, args: argparse.Namespace) -> tuple[Dataset, Dataset]:
    """The seed's labelled images (as ``data.per_class`` draws them) and the unlabelled rest of the training split
    (less the validation rows of ``--validate``)."""
    full, labelled, rest, _ = _rest(seed, args)
    if args.transfer and args.transfer < len(rest):
        rest = np.sort(np.random.default_rng(seed).choice(rest, args.transfer, replace=False))
    return labelled, full.subset(rest).unlabelled()


def transfer_steps(args: argparse.Namespace) -> tuple[int, int]:
    """``(steps of a transfer-set row, epochs the label-only twin needs for at least as many steps)``."""
    n_lab = args.shots * 10
    n_unl = args.transfer or 6801 - n_lab - args.validate
    n_all = n_lab * labelled_repeats(n_lab, n_unl, args.labelled_share) + n_unl
    steps = batches_per_epoch(n_all, args.transfer_batch, train=True) * args.transfer_epochs
    return steps, math.ceil(steps / batches_per_epoch(n_lab, 32, train=True))


def run_one(method: str, seed: int, teacher: Path, args: argparse.Namespace, extra: dict[str, Any],
            test: Any, teacher_pred: np.ndarray) -> dict[str, Any]:
    epochs, fit_extra = args.epochs, None
    taught = method in TRANSFER or method in PRE  # rows with a transfer set
    if taught or method.endswith("-steps"):
        splits_train, unlabelled = transfer_rows(seed, args)
        _, twin_epochs = transfer_steps(args)
        epochs = args.pre_epochs if method in PRE else args.transfer_epochs if taught else twin_epochs
        if taught:
            fit_extra = {"unlabelled": unlabelled}
    else:
        splits_train = load_data(DataConfig(name="animal-mnist", per_class=args.shots, split_seed=seed)).train
    name = TRANSFER.get(method) or PRE.get(method) or method.removesuffix("-steps")
    params = {} if name == "finetune" else {"teacher": str(teacher), **PARAMS.get(name, {}), **extra.get(name, {})}
    if taught:  # the method's transfer parameters, then the row's own (e.g. fitnets-kd-transfer)
        transfer_params = json.loads(args.transfer_params)
        params.update(transfer_params.get(name, {}))
        if args.labelled_share:  # one budget for every transfer row (and its twin: transfer_steps)
            params["labelled_share"] = args.labelled_share
        if method != f"{name}-transfer":  # a row's own parameters (a METHOD-pre row's stage 1 may change the share)
            params.update(transfer_params.get(method, {}))
        params.update(ROW_PARAMS.get(method, {}))
    clf = TransferClassifier(backbone=args.student, pretrained=False, image_size=args.student_size, method=name,
                             method_params=params, epochs=epochs, batch_size=args.transfer_batch if taught else 32,
                             lr=args.lr,
                             augment="light", seed=seed, progress=False, warmup_fraction=0.1, monitor="last")
    t0 = time.perf_counter()
    clf.fit(splits_train, extra=fit_extra)
    seconds = time.perf_counter() - t0
    n_lab, n_unl = len(splits_train), len(fit_extra["unlabelled"]) if fit_extra else 0
    rows = n_lab * labelled_repeats(n_lab, n_unl, params.get("labelled_share", 0.0)) + n_unl
    steps = epochs * batches_per_epoch(rows, args.transfer_batch if taught else 32, train=True)
    if method in PRE:  # stage 2: the stage-1 backbone, a new head, the labels alone, up to the twin's steps
        twin_steps = transfer_steps(args)[1] * batches_per_epoch(n_lab, 32, train=True)
        epochs2 = max(1, math.ceil((twin_steps - steps) / batches_per_epoch(n_lab, 32, train=True)))
        with tempfile.TemporaryDirectory() as tmp:
            weights = str(Path(tmp) / "stage1.safetensors")
            save_file({k: v.detach().contiguous() for k, v in clf.model_.backbone.state_dict().items()}, weights)
            clf = TransferClassifier(backbone=args.student, weights=weights, image_size=args.student_size,
                                     method="finetune", epochs=epochs2, batch_size=32, lr=args.lr, augment="light",
                                     seed=seed, progress=False, warmup_fraction=0.1, monitor="last")
            t1 = time.perf_counter()
            clf.fit(splits_train)
            seconds += time.perf_counter() - t1
        steps += epochs2 * batches_per_epoch(n_lab, 32, train=True)
        epochs = [epochs, epochs2]
    pred = clf.predict_proba(test).argmax(1)
    return {"method": method, "seed": seed, "accuracy": float((pred == test.labels).mean()),
            "agreement": float((pred == teacher_pred).mean()), "seconds": seconds, "params": n_params(clf),
            "epochs": epochs, "steps": steps, "method_params": {k: v for k, v in params.items() if k != "teacher"}}


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
    ap.add_argument("--transfer", type=int, default=0,
                    help="unlabelled images of the transfer-set rows (0: every training image not labelled)")
    ap.add_argument("--transfer-epochs", type=int, default=3, help="epochs over labelled + unlabelled rows")
    ap.add_argument("--transfer-params", default='{"kd": {"alpha": 0.9, "temperature": 2.0}}',
                    help="JSON: method -> method_params of the transfer-set rows")
    ap.add_argument("--pre-epochs", type=int, default=1,
                    help="two-stage rows (METHOD-pre): epochs of stage 1 over labelled + unlabelled rows")
    ap.add_argument("--transfer-batch", type=int, default=32,
                    help="batch size of the transfer rows (e.g. 64 with --labelled-share 0.5: about 32 labelled "
                         "images per step, the twin's batch, plus 32 unlabelled)")
    ap.add_argument("--labelled-share", type=float, default=0.0,
                    help="transfer rows: repeat the labelled images to this share of each epoch (labelled_share)")
    ap.add_argument("--validate", type=int, default=0,
                    help="score on N held-out training images (not the test split), to choose settings")
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
    if args.validate:  # per seed: held-out training images instead of the test split
        scored = {s: validation_rows(s, args) for s in args.seeds}
        preds = {s: tclf.predict_proba(v).argmax(1) for s, v in scored.items()}
        teacher_acc = statistics.mean(float((preds[s] == v.labels).mean()) for s, v in scored.items())
        test = scored[args.seeds[0]]
    else:
        scored = {s: test for s in args.seeds}
        preds = {s: teacher_pred for s in args.seeds}
    teacher_params = n_params(tclf)

    done: list[dict[str, Any]] = []
    path = Path(args.results) if args.results else None
    if path is not None and path.exists():
        done = json.loads(path.read_text())
    for seed in args.seeds:
        for m in methods:
            if any(r["method"] == m and r["seed"] == seed for r in done):
                continue
            r = run_one(m, seed, teacher, args, extra, scored[seed], preds[seed])
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
                     f"{rs[0]['params']:,}", rs[0].get("steps", "?"),
                     f"{statistics.mean(r['seconds'] for r in rs):.0f}"])
        # a transfer-set row also against its label-only twin of as many steps
        if m in TRANSFER or m in PRE or (m.endswith("-steps") and m != "finetune-steps"):
            twin = {r["seed"]: r["accuracy"] for r in done if r["method"] == "finetune-steps"}
            g = [r["accuracy"] - twin[r["seed"]] for r in rs if r["seed"] in twin]
            if len(g) > 1:
                g_mean, g_std = statistics.mean(g), statistics.stdev(g)
                beyond = "yes" if g_mean > 2 * g_std / math.sqrt(len(g)) else "no"
                rows[-1][3] += f"; vs finetune-steps {g_mean:+.4f} ± {g_std:.4f} ({beyond})"
    rows.append(["teacher (MobileNetV2, fine-tuned)", f"{teacher_acc:.4f}", "1.0000", "—", f"{teacher_params:,}", "—",
                 "—"])
    print(f"\nAnimal-MNIST, student {args.student} at {args.student_size} px from random init, {args.shots} labelled "
          f"images per class, {args.epochs} epochs; teacher MobileNetV2 (ImageNet) fine-tuned on {args.teacher_train} "
          f"images at {args.teacher_size} px for {args.teacher_epochs} epochs; "
          f"{'VALIDATION (held-out training images)' if args.validate else 'test'}: {len(test)} images; seeds "
          f"{args.seeds}; transfer rows: {args.transfer or 'all other'} unlabelled training images, "
          f"{args.transfer_epochs} epochs, labelled share {args.labelled_share}, {args.transfer_params}; "
          f"{machine()}; "
          f"total {time.perf_counter() - t_start:.0f} s\n")
    scored_on = "validation accuracy" if args.validate else "test accuracy"
    print(table(["method", scored_on, "agreement with teacher", "gain over labels only (beyond noise)",
                 "parameters", "steps", "s / run"], rows))


if __name__ == "__main__":
    main()
