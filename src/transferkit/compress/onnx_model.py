"""A whole :class:`~transferkit.model.TransferModel` as ONNX (fp32 or int8), with its parity check.

- fp32: the exporter of the frozen-feature engine (:func:`transferkit.features.onnx_export.export_onnx`: dynamo
  first, TorchScript as the fall-back), graph input ``x`` (images, tabular rows) or the tokenizer's tensors (text),
  output ``logits``, dynamic batch axis.
- int8: ONNX Runtime static quantisation (``quantize_static``) in QDQ format with per-channel int8 weights and uint8
  activations (ORT's U8S8 kernels: on the recovered pruned MobileNetV2 at 64 px, batch 32, one thread, 9.2 ms against
  15.8-16.2 ms with int8 activations, 32 ms in fp32; top-1 agreement with the fp32 model 95.0% vs 95.1-96.9% over the
  calibration methods) whose ranges are calibrated on a sample of the training data (:class:`BatchReader`, a
  ``CalibrationDataReader``), by ``minmax``, ``percentile`` or ``entropy``. The fp32 graph is first pre-processed
  (``quant_pre_process``: shape inference and graph optimisation, which folds batch-norm into the convolutions), as
  ORT's documentation asks. By default (``float_ends``) the first convolution (it reads the image) and the
  classifier (it writes the logits) stay float.

Where int8's speed comes from, measured on the pruned MobileNetV2 at 64 px (Animal-MNIST, one thread, the engines
timed in turn in one process; BENCHMARKS.md "Compression: iterative recovery"): int8 ran 1.30x the same pruned model
in ORT fp32 at batch 32 (thread CPU time; 1.66x wall time on the pruned model before recovery), well under the ~2x the
issue author measured on the unpruned model at 224 px. The likely reason, not isolated further: at 64 px the feature
maps are small (32x32 down to 2x2) and the pruned layers narrow, so the fixed cost per operator (packing, requantising
every output) weighs more against the arithmetic that int8 speeds up. What did and did not change it:
``quant_pre_process`` or not, and the QOperator format instead of QDQ, ran within 2% of each other (ORT fuses QDQ into
the same ``QLinearConv`` kernels); ORT's graph optimisation level matters most (the int8 graph at
``ORT_ENABLE_EXTENDED`` ran 1.06x the fp32 graph at ``ORT_ENABLE_ALL``, at ``ORT_ENABLE_BASIC`` 0.23x; :func:`session`
keeps ORT's default, ``ORT_ENABLE_ALL``); the first convolution in int8 is slower than in float (3 input channels: a
27-wide int8 GEMM plus quantising the whole input image, against ORT's blocked fp32 kernel), so keeping it and the
classifier float made int8 1.46x its fp32 instead of 1.30x (3.54x the unpruned model in ORT fp32 instead of 3.16x) and
lost no accuracy (validation accuracy 97.63% vs 97.53% all-int8).

Known-bad combinations (measured, see BENCHMARKS.md "Compression"): dynamic quantisation turns convolutions into
``ConvInteger``, which ONNX Runtime's CPU provider runs several times *slower* than fp32, so it is not offered;
per-tensor weights lost many points of accuracy on MobileNetV2 (depthwise convolutions have very different ranges
per channel), so ``per_channel=False`` warns.

Parity (:func:`parity`): the ONNX model's logits against the PyTorch model's on the same preprocessed batches. fp32
must agree to ``max(FP32_TOLERANCE, FP32_RELATIVE * largest |logit|)`` (max absolute difference) or the export is
refused; int8 reports top-1 agreement and the accuracy of both, and is refused below ``INT8_MIN_AGREEMENT`` top-1
agreement (a broken quantisation, not a rounding difference).

Why the fp32 bar grows with the logits above ``|logit| = 10`` (measured on MobileNetV2 fine-tuned on Animal-MNIST at
64 px, 256 test images, logits up to 57.5): PyTorch fp32 itself is 6.1e-5 away from the same model run in float64,
ONNX Runtime 1.7e-4 (2.9e-6 of the largest logit), so two correct float32 engines differ by 1.5e-4 there, over the
issue's absolute 1e-4. The difference is not one operator's: it grows block by block through the 17 inverted
residual blocks (after the last one, vs float64: PyTorch 6.5e-5, ONNX Runtime 1.4e-4 with all graph optimisations,
1.1e-4 with none, so fusions are not the cause). Batch-norm channels with near-zero running variance (a tenth of
them after fine-tuning at 64 px) were the suspect, but they carry signal: flooring the variances at 1e-4 moved the
PyTorch logits by 27, so they are not clamped. A recovered pruned model (KD recovery, logits up to 46) differed by
5.7e-5, within 1e-4. ``FP32_RELATIVE = 1e-5`` is 3.4x the worst relative difference measured (2.9e-6) and ten times
tighter than a bar of ``1e-4 * |logit|``; a broken graph (one weight tensor perturbed) differs by whole units.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, RunError

#: fp32 parity: max abs logit difference allowed, or FP32_RELATIVE of the largest |logit| when that is larger
FP32_TOLERANCE = 1e-4
FP32_RELATIVE = 1e-5
#: an int8 model whose top-1 predictions agree with the PyTorch model's on fewer held-out examples than this is refused
INT8_MIN_AGREEMENT = 0.9
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
OUTPUT = "logits"


def input_feed(names: list[str], batch: Any) -> dict[str, np.ndarray]:
    """A loader batch's inputs as ONNX Runtime's feed ``{name: array}``."""
    from ..features.onnx_export import graph_inputs

    return {n: t.detach().cpu().numpy() for n, t in zip(names, graph_inputs(batch, names))}


def export_fp32(model: torch.nn.Module, example: Any, dest: Path) -> tuple[Path, list[str], str]:
    """Write ``model`` (CPU, eval mode) as ``dest/model.onnx``: ``(path, input names, exporter)``.

    Raises:
        RunError: neither exporter could export the model.
    """
    from ..features.onnx_export import MODEL_FILE, ExportError, export_onnx, input_names

    dest.mkdir(parents=True, exist_ok=True)
    try:
        exporter = export_onnx(model.to("cpu").eval(), example, dest, output=OUTPUT)
    except ExportError as e:
        raise RunError(f"The model cannot be exported to ONNX ({e}).") from None
    return dest / MODEL_FILE, input_names(example), exporter


class BatchReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over preprocessed batches (``get_next`` -> feed or None).

    A batch is the inputs alone or a loader's ``(inputs, labels)``.
    """

    def __init__(self, names: list[str], batches: Iterable[Any]) -> None:
        self._feeds = [input_feed(names, b[0] if isinstance(b, tuple | list) else b) for b in batches]
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def check_quantization(calibration: str, per_channel: bool) -> None:
    """Refuse an unknown calibration method; warn on per-tensor weights (see the module docstring)."""
    if calibration not in CALIBRATION_METHODS:
        raise ConfigError(f"The calibration method '{calibration}' is unknown; choose one of: "
                          f"{', '.join(CALIBRATION_METHODS)}.")
    if not per_channel:
        warnings.warn("Per-tensor int8 weights lost many points of accuracy on MobileNetV2 (depthwise convolutions "
                      "need a scale per channel); keep per-channel weights unless you measured otherwise.",
                      stacklevel=3)


def float_end_nodes(model: Any) -> list[str]:
    """The nodes :func:`quantize_int8` keeps in float with ``float_ends``: convolutions that read a graph input (an
    image model's first layer) and the ``Gemm`` / ``MatMul`` that writes a graph output (the classifier)."""
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node
            if (n.op_type == "Conv" and n.input and n.input[0] in inputs)
            or (n.op_type in ("Gemm", "MatMul") and outputs.intersection(n.output))]


def quantize_int8(fp32_path: Path, dest: Path, names: list[str], calibration_batches: Iterable[Any], *,
                  calibration: str = "minmax", per_channel: bool = True, float_ends: bool = True) -> dict[str, Any]:
    """Statically quantise the fp32 ONNX model at ``fp32_path`` to int8 (QDQ) at ``dest``; returns its settings.

    ``float_ends`` keeps the first convolution and the classifier in float (:func:`float_end_nodes`; see the module
    docstring for why).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    check_quantization(calibration, per_channel)
    reader = BatchReader(names, calibration_batches)
    n = sum(next(iter(f.values())).shape[0] for f in reader._feeds)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calibration]
    with tempfile.TemporaryDirectory(prefix="transferkit-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(pre))
            import onnx

            keep = float_end_nodes(onnx.load(str(pre))) if float_ends else []
            quantize_static(str(pre), str(dest), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                            nodes_to_exclude=keep, extra_options={"CalibTensorRangeSymmetric": False})
    return {"format": "QDQ", "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
            "activations": "uint8", "calibration": calibration, "calibration_examples": int(n),
            "float_nodes": keep}


def session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``path`` (``threads``: intra-op threads; default torch's thread count)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def input_names_of(path: Path) -> list[str]:
    """The graph input names of the ONNX model at ``path`` (in order)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def onnx_logits(sess: Any, names: list[str], batches: Iterable[Any]) -> np.ndarray:
    """The session's logits over ``batches`` (loader batches ``(inputs, labels)``), concatenated."""
    out = [sess.run([OUTPUT], input_feed(names, x))[0] for x, _ in batches]
    return np.concatenate(out)


def torch_logits(model: torch.nn.Module, batches: Iterable[Any]) -> np.ndarray:
    """The PyTorch model's logits over ``batches`` (CPU, eval mode, no gradients)."""
    from ..data.devices import to_device

    model.to("cpu").eval()
    with torch.no_grad():
        return np.concatenate([model(to_device(x, torch.device("cpu"))).float().numpy() for x, _ in batches])


def fp32_bar(max_abs_logit: float) -> float:
    """The fp32 parity bar for logits up to ``max_abs_logit`` (see the module docstring)."""
    return max(FP32_TOLERANCE, FP32_RELATIVE * max_abs_logit)


def parity(model: torch.nn.Module, onnx_path: Path, names: list[str], batches: list[Any], *,
           int8: bool) -> dict[str, Any]:
    """The ONNX model against the PyTorch model on ``batches`` (see the module docstring).

    Raises:
        RunError: an fp32 export whose logits differ by more than :data:`FP32_TOLERANCE`.
    """
    ref = torch_logits(model, batches)
    got = onnx_logits(session(onnx_path), names, batches)
    labels = np.concatenate([y.numpy() for _, y in batches])
    diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    bar = fp32_bar(scale)
    out = {"examples": int(len(labels)), "max_abs_diff": diff, "max_abs_logit": scale, "fp32_bar": bar,
           "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
           "accuracy_torch": float(np.mean(ref.argmax(1) == labels)),
           "accuracy_onnx": float(np.mean(got.argmax(1) == labels))}
    if not int8 and not diff <= bar:
        raise RunError(f"The ONNX export does not match the PyTorch model (max abs logit difference {diff:.3g} > "
                       f"{bar:.3g}, the float32 bar at largest |logit| {scale:.3g}); the export is broken, it was not "
                       "written.")
    if int8 and not out["top1_agreement"] >= INT8_MIN_AGREEMENT:
        raise RunError(f"The int8 model agrees with the PyTorch model on only {out['top1_agreement']:.1%} of "
                       f"{out['examples']} held-out examples (at least {INT8_MIN_AGREEMENT:.0%} expected); try another "
                       "calibration method or more calibration examples, or export fp32.")
    return out
