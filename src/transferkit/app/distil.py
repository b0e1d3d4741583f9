"""``transferkit distil CONFIG``: a distillation run, with the teacher and the student side by side.

The run is an ordinary ``fit`` (:func:`~transferkit.app.fit.run_fit`, same config schema, same run folder) whose
method has a teacher (``model.method_params.teacher``: ``kd``, ``soft-targets``, the feature-distillation methods).
Through run_fit's ``after_write`` hook two more files join the run folder, atomically with it:

* ``distillation.json``: for the teacher and the student, the accuracy on the evaluated split (test, else val),
  the parameter count, the file size in MB and the CPU latency of one forward pass on a batch of 1 and of 32
  examples of that split (median of :data:`REPEATS` timed passes after one warm-up, both models measured one after
  the other in the same process and thread settings);
* ``distillation.md``: the same as a Markdown table.

The teacher is read through the teacher contract (:func:`transferkit.teachers.load_teacher`), so any teacher the
methods accept is measured the same way: a torch teacher on the student's batch adapted to its own input
(``Teacher.adapt_batch``), any other teacher (ONNX Runtime, Keras, scikit-learn) on the raw examples through its own
``outputs`` (its latency then includes its preprocessing, and the table says so). A teacher file's size is the file
(``.onnx``, ``.keras``) or the saved model's ``model.safetensors``; a teacher with no file shows none.
``transferkit fit`` writes the same files when its method has a teacher.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError
from ..model import MODEL_META, MODEL_WEIGHTS, model_file_bytes
from .fit import RunResult, run_fit

REPEATS = 5
BATCHES = (1, 32)


@dataclass
class DistilResult:
    """The run and the side-by-side comparison (also in ``distillation.json`` / ``distillation.md``)."""

    run: RunResult
    comparison: dict[str, Any]
    table: str


def teacher_spec(cfg: RunConfig) -> Any:
    """The method's teacher (``model.method_params.teacher``), or ``None`` when the method has none."""
    params = cfg.model.method_params or {}
    return params.get("teacher")


def run_distil(cfg: RunConfig, *, resume: bool = False) -> DistilResult:
    """Fit ``cfg`` (a method with a teacher) and write the side-by-side files into its run folder."""
    if teacher_spec(cfg) is None:
        raise ConfigError(
            f"transferkit distil needs a method with a teacher, but model.method '{cfg.model.method}' has no "
            "model.method_params.teacher; set method kd (or soft-targets) and method_params.teacher."
        )
    holder: dict[str, Any] = {}
    result = run_fit(cfg, resume=resume, after_write=side_by_side_hook(cfg, holder))
    comparison = holder.get("comparison", {})
    return DistilResult(result, comparison, holder.get("table", ""))


def side_by_side_hook(cfg: RunConfig, holder: dict[str, Any] | None = None) -> Any:
    """The ``after_write`` hook that measures teacher and student and writes ``distillation.json`` / ``.md``."""
    holder = holder if holder is not None else {}

    def hook(work: Path, est: Any, splits: Any, metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from ..io import write_json, write_text

        comparison = compare(cfg, est, splits, metrics, student_file=work / "model.safetensors")
        table = markdown_table(comparison)
        write_json(work / "distillation.json", comparison)
        write_text(work / "distillation.md", table)
        holder["comparison"], holder["table"] = comparison, table
        return {"distillation": {k: comparison[k] for k in ("split", "teacher", "student")}}

    return hook


def _median_seconds(fn: Any) -> float:
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _torch_latency(module: Any, x: Any) -> dict[str, float]:
    import torch

    module.eval()
    out = {}
    with torch.inference_mode():
        for b in BATCHES:
            xb = _take(x, b)
            out[f"latency_ms_batch{b}"] = round(1000 * _median_seconds(lambda xb=xb: module(xb)), 3)
    return out


def _take(x: Any, n: int) -> Any:
    if isinstance(x, dict):
        return {k: v[:n] for k, v in x.items()}
    return x[:n]


def _file_mb(path: Path | None) -> float | None:
    if path is None or not path.is_file():
        return None
    if path.name == MODEL_WEIGHTS and (path.parent / MODEL_META).is_file():  # a saved model: count what it names
        return round(model_file_bytes(path.parent) / 1e6, 6)
    return round(path.stat().st_size / 1e6, 6)


def _teacher_file(spec: Any) -> Path | None:
    if not isinstance(spec, str | Path):
        return None
    p = Path(spec).expanduser()
    if p.is_file():
        return p
    if p.is_dir() and (p / "model.safetensors").is_file():
        return p / "model.safetensors"
    return None


def _params(module: Any) -> int | None:
    return int(sum(p.numel() for p in module.parameters())) if module is not None else None


def compare(cfg: RunConfig, est: Any, splits: Any, metrics: dict[str, dict[str, Any]], *,
            student_file: Path | None) -> dict[str, Any]:
    """Accuracy, size and CPU latency of the teacher and the fitted student, on the evaluated split."""
    from ..data.loaders import make_loader
    from ..teachers import load_teacher

    split = "test" if "test" in metrics else next(iter(metrics))
    ds = getattr(splits, split, None) or splits.train
    model = est.model_
    params = cfg.model.method_params or {}
    spec = params.get("teacher")
    teacher = load_teacher(spec, trust_code=bool(params.get("trust_code", False)), classes=list(est.classes_))
    teacher.check_student(list(est.classes_), ds.modality)
    scores = np.asarray(teacher.outputs(ds))
    labels = np.asarray(ds.labels)
    teacher_acc = float((scores.argmax(1) == labels).mean())

    sample = ds.subset(np.arange(min(max(BATCHES), len(ds))))
    pre = model.preprocessing
    loader = make_loader(sample, pre, image_size=model.image_size, train=False, batch_size=max(BATCHES))
    x, _ = next(iter(loader))
    student = {"accuracy": round(float(metrics[split]["accuracy"]), 4), "parameters": _params(model),
               "size_mb": _file_mb(student_file), "backbone": cfg.model.backbone, **_torch_latency(model, x)}
    tmod = teacher.module if teacher.supports_online() else None
    t_row: dict[str, Any] = {"accuracy": round(teacher_acc, 4), "parameters": _params(tmod),
                             "size_mb": _file_mb(_teacher_file(spec)), "kind": teacher.kind, "name": teacher.name}
    if tmod is not None:
        t_row.update(_torch_latency(tmod, teacher.adapt_batch(x, pre, model.image_size)))
        t_row["latency_includes_preprocessing"] = False
    else:
        for b in BATCHES:
            part = sample.subset(np.arange(min(b, len(sample))))
            t_row[f"latency_ms_batch{b}"] = round(1000 * _median_seconds(lambda part=part: teacher.outputs(part)), 3)
        t_row["latency_includes_preprocessing"] = True
    return {"split": split, "n": len(ds), "teacher": t_row, "student": student,
            "method": cfg.model.method, "note": "CPU latency, median of 5 passes after a warm-up, same process"}


def markdown_table(c: dict[str, Any]) -> str:
    """The side-by-side comparison as a Markdown table."""
    t, s = c["teacher"], c["student"]

    def cell(v: Any, fmt: str = "{}") -> str:
        return "-" if v is None else fmt.format(v)

    def ratio(a: Any, b: Any) -> str:
        return "-" if a in (None, 0) or b is None else f"{b / a:.2f}x"

    rows = [
        ("accuracy (" + c["split"] + ")", cell(t["accuracy"], "{:.4f}"), cell(s["accuracy"], "{:.4f}"), "-"),
        ("parameters", cell(t["parameters"], "{:,}"), cell(s["parameters"], "{:,}"),
         ratio(s["parameters"], t["parameters"])),
        ("file size (MB)", cell(t["size_mb"], "{:.4g}"), cell(s["size_mb"], "{:.4g}"),
         ratio(s["size_mb"], t["size_mb"])),
    ]
    for b in BATCHES:
        k = f"latency_ms_batch{b}"
        rows.append((f"CPU latency, batch {b} (ms)", cell(t.get(k), "{:.2f}"), cell(s.get(k), "{:.2f}"),
                     ratio(s.get(k), t.get(k))))
    lines = [f"| {c['method']} | teacher ({t['kind']}) | student | teacher / student |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {d} | {e} |" for a, b, d, e in rows]
    if t.get("latency_includes_preprocessing"):
        lines.append("\nThe teacher's latency includes its own preprocessing (it is not a torch module).")
    return "\n".join(lines) + "\n"
