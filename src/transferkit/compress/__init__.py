"""Compression and deployment: structured pruning (:mod:`.prune`), int8 quantisation and ONNX export with a parity
check (:mod:`.onnx_model`, :mod:`.export`), and the measurements of each stage (:mod:`.measure`).

The commands that run fits (recovery of a pruned model goes through the one fit pipeline) live in
:mod:`transferkit.app.compress` and :mod:`transferkit.app.export`.
"""

from .export import EXPORT_META, write_export
from .onnx_model import CALIBRATION_METHODS, FP32_RELATIVE, FP32_TOLERANCE, fp32_bar, parity, quantize_int8
from .prune import IMPORTANCES, TARGETS, PruneResult, count_params_macs, prune_model

__all__ = ["CALIBRATION_METHODS", "EXPORT_META", "FP32_RELATIVE", "FP32_TOLERANCE", "IMPORTANCES", "PruneResult",
           "TARGETS", "count_params_macs", "fp32_bar", "parity", "prune_model", "quantize_int8", "write_export"]
