"""What an online distillation step costs: each method's step vs a plain step of the student plus one teacher pass.

The issue asks that an online KD step with a MobileNetV2 teacher costs at most 1.6x (a plain fine-tuning step of the
student + one forward pass of the teacher). Measured in one run, on one batch: a ``finetune`` step of the student
(forward, loss, backward, optimizer step), one ``no_grad`` forward of the teacher on the student's batch converted to
its size (what every online method adds at least), and a step of each distillation method (``kd`` or, where it is
not registered, ``soft-targets``; ``fitnets``, ``attention``, ``rkd``, ``dist``), each with a fresh student (same
seed) and its own optimizer. They take turns (round-robin over ``--repeats`` rounds after ``--warmup`` rounds), so a
busy machine slows all of them alike; the table shows medians and the ratio ``method / (finetune + teacher)``.
The teacher's weights do not change the cost: it is ImageNet MobileNetV2 under a new head for the data's classes.

    .venv/bin/python benchmarks/distil_step_cost.py                      # digits-cnn at 32 px, teacher at 64 px
    .venv/bin/python benchmarks/distil_step_cost.py --student mobilenet_v2.random --student-size 64 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pick_device, table  # noqa: E402

from transferkit.backbones import build_backbone  # noqa: E402
from transferkit.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.data.devices import to_device  # noqa: E402
from transferkit.data.loaders import make_loader  # noqa: E402
from transferkit.methods import create_method, method_names  # noqa: E402
from transferkit.methods.base import FitContext  # noqa: E402
from transferkit.model import TransferModel, save_model  # noqa: E402
from transferkit.teachers import load_teacher  # noqa: E402
from transferkit.train.schedules import build_optimizer  # noqa: E402

METHODS = ["kd", "fitnets", "attention", "rkd", "dist"]


class Stepper:
    """One method with its own fresh student (seed 0) and optimizer; :meth:`step` times one training step."""

    def __init__(self, method: str, params: dict[str, Any], args: argparse.Namespace, train: Any,
                 device: torch.device) -> None:
        torch.manual_seed(0)
        backbone = build_backbone(args.student, pretrained=False)
        self.model = TransferModel(backbone, train.classes, image_size=args.student_size)
        self.method = create_method(method, params)
        cfg = TrainConfig(batch_size=args.batch_size, progress=False)
        pre = self.model.preprocessing

        def loader(ds, *, train, epoch=0, batch_size=None, drop_last=False, augment=None, weights=None):  # noqa: ANN001, ANN202
            return make_loader(ds, pre, image_size=self.model.image_size, train=train, augment="none",
                               batch_size=batch_size or cfg.batch_size, epoch=epoch, drop_last=drop_last)

        self.method.setup(FitContext(self.model, train, ModelConfig(backbone=args.student), cfg, loader,
                                     device=device))
        self.model.to(device)
        self.method.to(device)
        self.opt = build_optimizer(self.method.param_groups(self.model), cfg)
        self.method.train_mode(self.model)
        self.method.on_epoch_start(self.model, 0)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(self, batch: Any) -> float:
        self.sync()
        t0 = time.perf_counter()
        self.method.on_step_start(0, 1000)
        out = self.method.training_step(self.model, batch)
        out.loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sync()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", default="digits-cnn")
    ap.add_argument("--student-size", type=int, default=32)
    ap.add_argument("--teacher-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared, loaded machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    train = load_data(DataConfig(name="animal-mnist", train_size=max(args.batch_size, 64))).train

    torch.manual_seed(0)
    teacher_model = TransferModel(build_backbone("mobilenet_v2.imagenet"), train.classes, image_size=args.teacher_size)
    folder = Path(tempfile.mkdtemp(prefix="transferkit-step-teacher-")) / "teacher"
    save_model(teacher_model, folder)
    teacher = load_teacher(str(folder))
    teacher.module.to(device)

    methods = [m if m != "kd" or "kd" in method_names() else "soft-targets" for m in args.methods]
    runners = {"finetune": Stepper("finetune", {}, args, train, device)}
    for m in methods:
        runners[m] = Stepper(m, {"teacher": str(folder)}, args, train, device)
    first = runners["finetune"]
    x, y = next(iter(make_loader(train, first.model.preprocessing, image_size=args.student_size, train=False,
                                 batch_size=args.batch_size)))
    batch = to_device((x, y), device)
    student_pre = first.model.preprocessing

    def teacher_pass() -> float:
        first.sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            teacher.module(teacher.adapt_batch(batch[0], student_pre, args.student_size))
        first.sync()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {m: [] for m in ["finetune", "teacher forward", *methods]}
    for r in range(args.warmup + args.repeats):
        for m, runner in runners.items():
            t = runner.step(batch)
            if r >= args.warmup:
                times[m].append(t)
        t = teacher_pass()
        if r >= args.warmup:
            times["teacher forward"].append(t)
    med = {m: statistics.median(ts) for m, ts in times.items()}
    budget = med["finetune"] + med["teacher forward"]
    rows = []
    for m, ts in times.items():
        ratio = "—" if m in ("finetune", "teacher forward") else f"{med[m] / budget:.2f}x"
        rows.append([m, f"{1000 * med[m]:.1f}", f"{1000 * min(ts):.1f}", ratio])
    print(f"student {args.student} at {args.student_size} px, teacher MobileNetV2 at {args.teacher_size} px, batch "
          f"{args.batch_size}, device {device} ({machine(device)}), {args.repeats} timed rounds (median)\n")
    print(table(["step", "ms (median)", "ms (min)", "vs finetune + teacher forward"], rows))


if __name__ == "__main__":
    main()
