"""``transferkit compress RUN --prune 0.5 --int8 --out DIR`` as a function.

The defaults are the recipe measured to meet the issue-14 target on MobileNetV2 / Animal-MNIST (BENCHMARKS.md
"Compression: iterative recovery": int8 within 1 point of the unpruned model on 3 seeds, chosen on the validation
split): prune in 2 steps of a quarter of the channels each, one kd epoch between them, 5 kd epochs after the last.

Stages, each measured the same way (:mod:`transferkit.compress.measure`) in the same process:

1. ``original``: the run's model, in eager PyTorch and (``onnx-fp32``) in ONNX Runtime (so is the final fp32 model
   of stage 2 or 3, to tell pruning's speed-up in ONNX Runtime from int8's);
2. ``pruned``: structured pruning (:func:`transferkit.compress.prune_model`), saved in ``DIR/pruned`` (channel
   counts as data, safetensors weights);
3. ``recovered``: a short fine-tune of the pruned model through the one fit pipeline (:func:`~transferkit.app.fit.
   run_fit` with the pruned model as its starting point), with the original model as a logit-distillation teacher
   (method ``kd``, online, plus labels; ``recover_method="finetune"`` for labels only), at one learning rate for the
   whole model (``lr``, default the run's own; the head is not new); a full run folder in ``DIR/recovered``;
   with iterative pruning (``steps`` > 1) each intermediate step is recovered for one epoch first (``DIR/step-1``
   ...; 2 steps of a quarter of the channels each recovered MobileNetV2 on Animal-MNIST a point better than one step
   of a half, BENCHMARKS.md); ``recover_overrides`` (``--recover-set train.KEY=VALUE`` or
   ``model.method_params.KEY=VALUE``) change the recovery's fit config like ``fit --set``, checked before anything is
   pruned;
4. ``int8``: the recovered model (the pruned one without recovery) as an int8 ONNX export in ``DIR/export``
   (:mod:`transferkit.compress.export`, with its parity check). An int8 model that fails its parity check (top-1
   agreement below 90%) is not written: the folder keeps the fp32 stages, ``compression.json``'s ``int8_refused``
   holds the one-sentence reason, and the table has no int8 row.

``DIR`` gets ``compression.json`` (settings, prune summary, one row per stage: size in MB, parameters, MACs, latency
at batch 1 and 32 in ms, batch-32 throughput, test accuracy on the whole test split or a seeded sample of
``test_samples``; and ``interleaved``: the ONNX Runtime stages and the original eager model timed again in turn, wall
and thread CPU time, with each one's speed-up over the original in ONNX Runtime fp32, the speed-ups to quote on a
shared machine, see :func:`transferkit.compress.measure.interleaved_latency`), ``compression.md`` (both tables) and
``accuracy_vs_latency.png``; it is built in ``.DIR.partial`` and renamed into place at the end.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import ConfigError, RunError
from ..model import model_file_bytes

RECOVER_METHODS = ("kd", "soft-targets", "finetune")


@dataclass
class CompressResult:
    """Where the compression folder is and its table."""

    out: Path
    rows: list[dict[str, Any]]
    table: str
    summary: dict[str, Any]


def run_compress(run: str | Path, out: str | Path, *, prune: float = 0.5, target: str = "channels",
                 importance: str = "l2", steps: int = 2, recover_epochs: int = 5,
                 recover_method: str = "kd", lr: float | None = None,
                 recover_params: dict[str, Any] | None = None, recover_overrides: list[str] | None = None,
                 int8: bool = True,
                 calibration: str = "minmax", per_channel: bool = True, calibration_samples: int = 256,
                 data: str | DataConfig | None = None, repeats: int = 10, test_samples: int | None = None,
                 seed: int = 0, overwrite: bool = False,
                 progress: bool = True, trust_code: bool = False) -> CompressResult:
    """Prune, recover and quantise the model of ``run`` into ``out`` (see the module docstring)."""
    from tqdm.auto import tqdm

    from ..compress.onnx_model import check_quantization
    from ..compress.prune import check_settings
    from ..data import load_data
    from ..model import load_model
    from .export import data_of, held_out, run_config_of
    from .fit import log
    from .runs import RunFolder

    check_settings(prune, target, importance, steps)
    if recover_method not in RECOVER_METHODS:
        raise ConfigError(f"The recovery method '{recover_method}' is unknown; choose one of: "
                          f"{', '.join(RECOVER_METHODS)}.")
    if recover_epochs < 0:
        raise ConfigError(f"--recover-epochs must be 0 (no recovery) or more, not {recover_epochs}.")
    if int8:
        check_quantization(calibration, per_channel)
    overrides = check_recover_overrides(recover_overrides or [])
    settings = {"run": str(run), "prune": prune, "target": target, "importance": importance, "steps": steps,
                "recover_epochs": recover_epochs, "recover_method": recover_method, "lr": lr,
                "recover_params": recover_params or {}, "recover_overrides": overrides, "int8": int8,
                "calibration": calibration, "per_channel": per_channel, "calibration_samples": calibration_samples,
                "repeats": repeats, "test_samples": test_samples, "seed": seed}
    run_cfg = run_config_of(run)
    data_cfg = data_of(run, data)
    if recover_epochs:  # a bad recovery setting is refused now, not after minutes of pruning
        _recoverer(run, run_cfg, data_cfg, Path(out), recover_method=recover_method, lr=lr, seed=seed,
                   progress=progress, recover_params=recover_params, overrides=overrides).check(
            run_cfg.model.image_size if run_cfg else None)
    folder = RunFolder(out, overwrite=overwrite)
    with folder.hold():
        folder.check(settings)
        original = load_model(run, trust_code=trust_code)
        splits = load_data(data_cfg)
        work = folder.start(settings)
        bar = tqdm(total=5 if int8 else 4, desc="compress", unit="stage", disable=not progress)
        stages = _Stages(original, held_out(splits), splits.train, repeats=repeats, seed=seed,
                         calibration_samples=calibration_samples, test_samples=test_samples)
        rows = [stages.torch_row("original", original, Path(run) / "model.safetensors")]
        rows.append(stages.onnx_row("original", original, work / ".original-onnx", int8=False))
        bar.update(1)

        recover = _recoverer(run, run_cfg, data_cfg, work, recover_method=recover_method, lr=lr, seed=seed,
                             progress=progress, recover_params=recover_params, overrides=overrides)
        between = (lambda m, step: recover(m, 1, f"step-{step + 1}")) if steps > 1 and recover_epochs else None
        log(f"pruning {prune:.0%} of the {target} ({importance} importance, {steps} step(s))")
        result = stages.prune(original, amount=prune, target=target, importance=importance, steps=steps,
                              between=between)
        from ..model import save_model

        save_model(result.model, work / "pruned", extra={"compression": result.summary()})
        rows.append(stages.torch_row("pruned", result.model, work / "pruned" / "model.safetensors"))
        bar.update(1)

        final = result.model
        if recover_epochs:
            final = recover(copy.deepcopy(result.model), recover_epochs, "recovered")
            rows.append(stages.torch_row("recovered", final, work / "recovered" / "model.safetensors"))
        # the final fp32 model in ONNX Runtime too: what pruning alone buys there, apart from int8
        rows.append(stages.onnx_row("recovered" if recover_epochs else "pruned", final, work / ".final-onnx",
                                    int8=False))
        bar.update(1)
        export_meta, refused = None, None
        if int8:
            try:
                export_meta = stages.int8_export(final, work / "export", calibration=calibration,
                                                 per_channel=per_channel,
                                                 source=work / ("recovered" if recover_epochs else "pruned"))
            except RunError as e:  # int8 failed its parity check: keep the fp32 stages (minutes of recovery)
                import shutil

                shutil.rmtree(work / "export", ignore_errors=True)
                refused = str(e)
                log(f"int8 export refused: {refused}")
            else:
                rows.append(stages.onnx_row("int8", final, work / "export", int8=True, existing=True))
            bar.update(1)
        interleaved = stages.interleaved(original)
        table = _table(rows) + "\n\n" + _interleaved_table(interleaved)
        summary = {"settings": settings, "prune": result.summary(), "rows": rows,
                   "parity": export_meta["parity"] if export_meta else None, "int8_refused": refused,
                   "interleaved": interleaved, "machine": stages.machine()}
        from ..compress.plot import tradeoff_png
        from ..io import write_json, write_text

        write_json(work / "compression.json", summary)
        write_text(work / "compression.md", table + "\n")
        tradeoff_png(rows, work / "accuracy_vs_latency.png")
        bar.update(1)
        bar.close()
        final_out = folder.finalize()
    return CompressResult(final_out, rows, table, summary)


class _Stages:
    """The measurements shared by every stage: the same held-out batches, the same latency inputs."""

    def __init__(self, model: Any, test: Any, train: Any, *, repeats: int, seed: int,
                 calibration_samples: int, test_samples: int | None) -> None:
        from ..compress.measure import batch_of, loader_batches

        self.test = loader_batches(model, test, limit=test_samples, batch_size=64, seed=seed)
        self.train = train
        self.model = model
        self.repeats = repeats
        self.seed = seed
        self.calibration_samples = calibration_samples
        self.x1, self.x32 = batch_of(self.test, 1), batch_of(self.test, 32)
        self.sessions: dict[str, tuple[Any, list[str]]] = {}  # "stage engine" -> ONNX Runtime session, input names

    @staticmethod
    def machine() -> str:
        import platform

        import torch

        return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"

    def _sizes(self, model: Any) -> tuple[int, int]:
        from ..compress.prune import count_params_macs

        return count_params_macs(model, self.x1)

    def torch_row(self, stage: str, model: Any, weights: Path) -> dict[str, Any]:
        from ..compress.measure import accuracy, torch_latency
        from ..compress.onnx_model import torch_logits

        params, macs = self._sizes(model)
        b1 = torch_latency(model, self.x1, repeats=self.repeats)
        b32 = torch_latency(model, self.x32, repeats=self.repeats)
        acc = accuracy(torch_logits(model, self.test), self.test)
        size = model_file_bytes(weights.parent)  # a probe's folder names its packaged backbone: count it
        return _row(stage, "torch", size, params, macs, b1, b32, acc)

    def onnx_row(self, stage: str, model: Any, folder: Path, *, int8: bool, existing: bool = False
                 ) -> dict[str, Any]:
        import shutil

        from ..compress.measure import accuracy, batch_of, onnx_latency
        from ..compress.onnx_model import export_fp32, input_names_of, onnx_logits, session

        if existing:
            path, names = folder / "model.onnx", input_names_of(folder / "model.onnx")
        else:
            path, names, _ = export_fp32(model, batch_of(self.test, 2), folder)
        sess = session(path)
        self.sessions[f"{stage} {'onnx-int8' if int8 else 'onnx-fp32'}"] = (sess, names)
        size = path.stat().st_size
        b1 = onnx_latency(sess, names, self.x1, repeats=self.repeats)
        b32 = onnx_latency(sess, names, self.x32, repeats=self.repeats)
        acc = accuracy(onnx_logits(sess, names, self.test), self.test)
        params, macs = self._sizes(model)
        if not existing:
            shutil.rmtree(folder)
        return _row(stage, "onnx-int8" if int8 else "onnx-fp32", size, params, macs, b1, b32, acc)

    def interleaved(self, original: Any, rounds: int = 5) -> dict[str, Any]:
        """The ONNX Runtime stages and the original eager model timed in turn (:func:`~transferkit.compress.measure.
        interleaved_latency`) at batch 32 and 1, with each one's speed-up over the original in ONNX Runtime fp32."""
        import torch

        from ..compress.measure import interleaved_latency
        from ..compress.onnx_model import OUTPUT, input_feed

        out: dict[str, Any] = {"rounds": rounds, "repeats": self.repeats}
        original.to("cpu").eval()
        for label, x in (("batch32", self.x32), ("batch1", self.x1)):
            runs = {"original torch": lambda x=x: _eager(original, x)}
            for name, (sess, names) in self.sessions.items():
                feed = input_feed(names, x)
                runs[name] = lambda sess=sess, feed=feed: sess.run([OUTPUT], feed)
            times = interleaved_latency(runs, rounds=rounds, repeats=self.repeats)
            base = times.get("original onnx-fp32")
            for t in times.values():
                if base:
                    t["speedup_wall"] = base["wall_ms"] / t["wall_ms"]
                    t["speedup_cpu"] = base["cpu_ms"] / t["cpu_ms"]
            out[label] = times
        out["threads"] = torch.get_num_threads()
        return out

    def prune(self, model: Any, **kw: Any) -> Any:
        from ..compress.measure import batch_of, loader_batches
        from ..compress.prune import prune_model

        train = loader_batches(model, self.train, limit=256, batch_size=64, seed=self.seed)
        return prune_model(model, batch_of(self.test, 2), grad_batches=train, norm_batches=train, **kw)

    def int8_export(self, model: Any, dest: Path, *, calibration: str, per_channel: bool, source: Path
                    ) -> dict[str, Any]:
        from ..compress.export import write_export
        from ..compress.measure import batch_of, loader_batches
        from ..model import model_sha256

        calib = loader_batches(model, self.train, limit=self.calibration_samples, batch_size=32, seed=self.seed)
        return write_export(model, dest, example=batch_of(self.test, 2), parity_batches=self.test,
                            calibration_batches=calib, int8=True, calibration=calibration, per_channel=per_channel,
                            source={"folder": str(source.name),
                                    "model_sha256": model_sha256(source)})


def _row(stage: str, engine: str, size: int, params: int, macs: int, b1: float, b32: float, acc: float
         ) -> dict[str, Any]:
    return {"stage": stage, "engine": engine, "size_mb": size / 1e6, "params": params, "macs": macs,
            "latency_b1_ms": 1000 * b1, "latency_b32_ms": 1000 * b32, "throughput_b32": 32 / b32, "accuracy": acc}


def _eager(model: Any, x: Any) -> None:
    import torch

    with torch.inference_mode():
        model(x)


def _interleaved_table(interleaved: dict[str, Any]) -> str:
    """The interleaved timings as Markdown: per engine, batch-32 and batch-1 wall and CPU ms and the speed-ups."""
    head = ["engine (timed in turn)", "b32 wall (ms)", "b32 CPU (ms)", "b32 speed-up over original onnx-fp32, wall / "
            "CPU", "b1 wall (ms)", "b1 speed-up, wall / CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    b32, b1 = interleaved["batch32"], interleaved["batch1"]
    for name, t in b32.items():
        one = b1[name]
        lines.append(f"| {name} | {t['wall_ms']:.2f} | {t['cpu_ms']:.2f} | {t.get('speedup_wall', 0):.2f}x / "
                     f"{t.get('speedup_cpu', 0):.2f}x | {one['wall_ms']:.3f} | {one.get('speedup_wall', 0):.2f}x / "
                     f"{one.get('speedup_cpu', 0):.2f}x |")
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]]) -> str:
    head = ["stage", "engine", "size (MB)", "params", "MACs", "latency b1 (ms)", "latency b32 (ms)",
            "throughput b32 (img/s)", "test accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['engine']} | {r['size_mb']:.2f} | {r['params'] / 1e6:.2f} M | "
                     f"{r['macs'] / 1e6:.1f} M | {r['latency_b1_ms']:.2f} | {r['latency_b32_ms']:.1f} | "
                     f"{r['throughput_b32']:.0f} | {r['accuracy']:.4f} |")
    return "\n".join(lines)


def check_recover_overrides(overrides: list[str]) -> list[str]:
    """The recovery's ``--recover-set`` overrides, refused unless each is a ``train.*`` or ``model.method_params.*``
    key of the fit config (the rest of the recovery's config is the run's own, or set by compress's own flags)."""
    for item in overrides:
        key = str(item).partition("=")[0].strip()
        if not key.startswith(("train.", "model.method_params.")):
            raise ConfigError(f"--recover-set '{item}' is not a recovery setting; it takes train.KEY=VALUE or "
                              "model.method_params.KEY=VALUE (e.g. train.lr=3e-3 or model.method_params.alpha=0.7).")
        if key in _OWN_FLAGS:
            raise ConfigError(f"--recover-set '{item}' sets what {_OWN_FLAGS[key]} sets; use that flag instead.")
    return [str(item) for item in overrides]


_OWN_FLAGS = {"train.epochs": "--recover-epochs", "train.seed": "--seed", "train.progress": "the progress setting"}


def _recoverer(run: str | Path, run_cfg: Any, data_cfg: DataConfig, work: Path, *, recover_method: str,
               lr: float | None, seed: int, progress: bool, recover_params: dict[str, Any] | None = None,
               overrides: list[str] | None = None) -> Any:
    """``recover(model, epochs, name)``: fine-tune ``model`` through :func:`run_fit` into ``work/name``.

    The recovery's config is the run's own with the recovery method, its parameters, one learning rate for the whole
    model, then ``overrides`` (``--recover-set``, :func:`transferkit.config.apply_overrides`: checked like ``fit
    --set``); ``recover.check(image_size)`` builds it (and the method's parameters) without training.
    """
    from ..config import ModelConfig, RunConfig, TrainConfig, apply_overrides
    from ..methods import create_method
    from ..model import load_model
    from .fit import run_fit

    def config(image_size: int | None, epochs: int, name: str) -> Any:
        base = run_cfg or RunConfig(data=data_cfg)
        teacher = str(Path(run).absolute())
        params = ({"teacher": teacher, "teacher_mode": "online"} if recover_method == "kd"
                  else {"teacher": teacher} if recover_method == "soft-targets" else {})
        params.update(recover_params or {})
        model_cfg = dataclasses.replace(base.model if run_cfg else ModelConfig(), method=recover_method,
                                        method_params=params, image_size=image_size)
        # the head is not new (it was trained with the backbone): one learning rate for all, not the run's 10x head
        train = dataclasses.replace(base.train if run_cfg else TrainConfig(), epochs=epochs, seed=seed,
                                    progress=progress, early_stopping=None, freeze_blocks=0, head_lr_scale=1.0)
        if lr is not None:
            train = dataclasses.replace(train, lr=lr)
        cfg = dataclasses.replace(base, data=data_cfg, model=model_cfg, train=train, target=None,
                                  out=str(work / name), overwrite=False)
        return apply_overrides(cfg, list(overrides or [])) if overrides else cfg

    def recover(model: Any, epochs: int, name: str) -> Any:
        result = run_fit(config(model.image_size, epochs, name), model=model)  # trains ``model`` itself
        if name != "recovered":  # an intermediate step of iterative pruning: go on pruning the same module
            return model
        return load_model(result.out)  # the recovered model as saved (and as any later command will load it)

    def check(image_size: int | None) -> None:
        cfg = config(image_size, 1, "recovered")
        create_method(cfg.model.method, cfg.model.method_params)  # checks the parameters; the teacher loads later

    recover.check = check  # type: ignore[attr-defined]
    return recover
