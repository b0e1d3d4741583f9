"""``transferkit export RUN --format onnx [--int8] --out DIR`` as a function: a run's model as a self-contained folder.

The folder (``model.onnx`` + ``export.json``, see :mod:`transferkit.compress.export`) is built in a hidden
``.DIR.partial`` sibling and renamed into place only when the export passed its parity check (the run-folder life
cycle of :class:`~transferkit.app.runs.RunFolder`: locked, never half-written). The data of the parity check and the
int8 calibration is the run's own (``config.yaml``'s ``data``), or ``data`` when given: calibration takes a seeded
sample of its training split, parity one of its test split (val, then train, when it has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig, RunConfig
from ..errors import ConfigError


@dataclass
class ExportResult:
    """Where the export folder is and its ``export.json``."""

    out: Path
    meta: dict[str, Any]


def run_config_of(run: str | Path) -> RunConfig | None:
    """The resolved configuration a run folder was trained with (``config.yaml``), or ``None`` for a bare model."""
    from ..config import load_yaml

    path = Path(run) / "config.yaml"
    return load_yaml(path) if path.is_file() else None


def data_of(run: str | Path, data: str | DataConfig | None) -> DataConfig:
    """The data to calibrate and check on: ``data`` when given, else the run's own (see the module docstring)."""
    from ..data import resolve_data_arg

    if isinstance(data, DataConfig):
        return data
    if data is not None:
        return resolve_data_arg(data)
    cfg = run_config_of(run)
    if cfg is None:
        raise ConfigError(f"'{run}' has no config.yaml naming its data; give the data to calibrate and check the "
                          "export on (--data).")
    return cfg.data


def held_out(splits: Any) -> Any:
    """The split a finished model is measured on: test, else val, else train."""
    for ds in (splits.test, splits.val, splits.train):
        if ds is not None and len(ds):
            return ds
    raise ConfigError("The data has no examples to check the export on; give labelled data.")


def run_export(run: str | Path, out: str | Path, *, fmt: str = "onnx", int8: bool = False,
               calibration: str = "minmax", per_channel: bool = True, data: str | DataConfig | None = None,
               calibration_samples: int = 256, parity_samples: int = 256, seed: int = 0, overwrite: bool = False,
               trust_code: bool = False) -> ExportResult:
    """Export the model of ``run`` (a run folder or a saved model folder) to ``out`` (see the module docstring).

    Raises:
        ConfigError: an unknown format or calibration method, no data to check on.
        RunError: the folder is not a saved model, the export fails, or the fp32 parity check fails.
    """
    from ..compress.measure import batch_of, loader_batches
    from ..compress.onnx_model import check_quantization
    from ..data import load_data
    from ..model import load_model, model_sha256
    from .fit import log
    from .runs import RunFolder

    if fmt != "onnx":
        raise ConfigError(f"The export format '{fmt}' is unknown; the only format is onnx.")
    if int8:
        check_quantization(calibration, per_channel)
    folder = RunFolder(out, overwrite=overwrite)
    settings = {"run": str(run), "format": fmt, "int8": int8, "calibration": calibration, "per_channel": per_channel,
                "calibration_samples": calibration_samples, "parity_samples": parity_samples, "seed": seed}
    with folder.hold():
        folder.check(settings)
        model = load_model(run, trust_code=trust_code)
        splits = load_data(data_of(run, data))
        checks = loader_batches(model, held_out(splits), limit=parity_samples, seed=seed)
        calib = loader_batches(model, splits.train, limit=calibration_samples, seed=seed) if int8 else None
        source = {"folder": str(Path(run).absolute()), "model_sha256": model_sha256(run)}
        work = folder.start(settings)
        (work / "config.yaml").unlink()  # the folder is a deployable model, not a run: export.json says it all
        log(f"exporting {run} to ONNX{' (int8)' if int8 else ''}")
        from ..compress.export import write_export

        meta = write_export(model, work, example=batch_of(checks, 2), parity_batches=checks,
                            calibration_batches=calib, int8=int8, calibration=calibration, per_channel=per_channel,
                            source=source)
        result = folder.finalize()
    return ExportResult(result, meta)
