"""An ONNX model as a trainable PyTorch backbone: ``onnx:<file>`` or ``onnx:<file>#<tensor>``.

What it does:

1. **Cut** the graph at the feature layer: the input of the final classifier (the data input of the last ``Gemm`` or
   ``MatMul`` node that multiplies by a stored weight), or the tensor named after ``#`` (any value of the graph,
   e.g. ``onnx:net.onnx#/features/features.18/Clip_output_0``; ``python -c "import onnx; print([n.output for n in
   onnx.load('net.onnx').graph.node])"`` lists them). The part after it (classifier, softmax, label lookup) is
   dropped with :class:`onnx.utils.Extractor`.
2. **Convert** the cut graph to an ``nn.Module`` with ``onnx2pytorch`` 0.6.0, the maintained converter that
   reproduced opset-20, Keras- and TensorFlow-exports within 1.3e-5 here (``onnx2torch`` 1.5.15 fails on torch
   2.14's default exporter and mis-converted a TensorFlow MobileNetV2). ``onnx2pytorch`` makes ``Conv``/``Gemm``/
   ``MatMul`` weights parameters but keeps every other stored tensor (biases added by ``Add``, the scale and shift of a
   batch-norm that the exporter folded into ``Sub``/``Mul``/``Add``) as a *buffer*, which would never train; so
   :func:`_make_trainable` (hand-written: the converter has no option for it) turns each float tensor that the
   forward pass reads (more than one value) into a parameter, and drops the stored copies that the converted
   layers no longer read.
3. **Check parity** (:mod:`.parity`): ONNX Runtime runs the cut graph and the converted module runs the same batch;
   more than 1e-4 apart and the backbone is refused. A Keras source adds the check against Keras's own ``predict``
   (:mod:`.keras_backbone`).

Inputs: a 4-d image input in NCHW or NHWC (told by where its 1 or 3 channels are), square, with a free batch axis;
the toolkit's loader gives 3-channel images normalised with ``mean``/``std`` (default 0 and 1: pixels in [0, 1],
which is what a model trained on ``x / 255`` expects), averaged to one channel for a grey model and transposed for
NHWC inside :meth:`forward`. A 2-d input is tabular (its width is the number of features).

Fine-tune gently: exporters fold batch-norm into the preceding convolution (or into a fixed affine ``Mul``/``Add``),
so the converted network has no normalisation that adapts while training and large steps unsettle it (the loss jumped
at lr 1e-3 on a converted MobileNetV2). :data:`RECOMMENDED_LR` (1e-4) is the learning rate to start from; building
an ``onnx:`` backbone for training warns once when the fold is seen.

Saving: :meth:`spec` embeds the cut graph *without* its large weight tensors (base64 of the ONNX protobuf, plus the
names and shapes of the tensors taken out), because the saved model's ``model.safetensors`` holds them; a saved model
therefore rebuilds in a fresh process without the original file and without pickle (ONNX is data: its operators are
built by the converter, nothing in the file runs as Python). When the graph is built, the stripped rebuild is checked
to give exactly the same outputs once the weights are loaded; a graph for which it does not (a converter that bakes
a stored float tensor into an operator) is embedded whole instead.
"""

from __future__ import annotations

import base64
import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BackboneError
from .base import Preprocessing
from .module_backbone import Block, WrappedBackbone
from .parity import Parity, check_parity, max_abs_diff, seeded_batch

__all__ = ["RECOMMENDED_LR", "OnnxBackbone", "feature_tensor", "parse_onnx_name", "read_onnx"]

#: The learning rate to start fine-tuning a converted (batch-norm-folded) network from.
RECOMMENDED_LR = 1e-4
_STRIP_MIN = 2  # float stored tensors with at least this many values leave the embedded graph (the weights hold them)
_CLASSIFIER_OPS = ("Gemm", "MatMul")
# onnx2pytorch's Gather indexes with a list, which torch 2.x deprecates on every forward pass: not the user's concern
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                        module=r"onnx2pytorch\.")


def parse_onnx_name(rest: str) -> tuple[str, str | None]:
    """``"net.onnx#tensor"`` -> ``("net.onnx", "tensor")``; ``"net.onnx"`` -> ``("net.onnx", None)``."""
    path, sep, tensor = rest.partition("#")
    return path, (tensor or None) if sep else None


def read_onnx(path: str | os.PathLike[str], *, what: str | None = None) -> Any:
    """Load an ONNX file (a protobuf: data, nothing in it runs) with a one-sentence error for a missing or bad file."""
    import onnx

    p = Path(path)
    shown = what or f"onnx:{p}"
    if not p.is_file():
        raise BackboneError(f"ONNX file '{p}' does not exist; give the path of a .onnx file ({shown}).")
    try:
        return onnx.load(str(p))
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError, ValueError...
        raise BackboneError(
            f"'{p}' cannot be read as an ONNX model ({type(e).__name__}); check that it is a complete .onnx file."
        ) from None


def _initializer_names(graph: Any) -> set[str]:
    return {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }


def feature_tensor(model: Any, name: str | None = None) -> str:
    """The tensor the backbone outputs: ``name`` (checked), else the data input of the last Gemm/MatMul with a
    stored weight (the input of the final classifier)."""
    graph = model.graph
    values = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    if name is not None:
        if name not in values:
            import difflib

            close = difflib.get_close_matches(name, sorted(values), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else "; list the node outputs with onnx.load(path).graph"
            raise BackboneError(f"The ONNX graph has no tensor '{name}' to cut at{hint}.")
        return name
    stored = _initializer_names(graph)
    for node in reversed(list(graph.node)):
        if node.op_type in _CLASSIFIER_OPS and len(node.input) >= 2:
            data = [i for i in node.input[:2] if i and i not in stored]
            if len(data) == 1 and any(i in stored for i in node.input[:2]):
                return data[0]
    raise BackboneError(
        "The ONNX graph has no final classifier (Gemm or MatMul with a stored weight) to cut before; name the feature "
        "tensor after '#', e.g. onnx:model.onnx#<tensor name>."
    )


def _cut(model: Any, tensor: str) -> Any:
    """The sub-graph from the (single) graph input to ``tensor``."""
    import onnx
    import onnx.utils

    stored = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in stored]
    if len(inputs) != 1:
        raise BackboneError(
            f"The ONNX graph has {len(inputs)} inputs ({', '.join(inputs)}); an onnx: backbone takes a model with "
            "one input (an image or a feature vector)."
        )
    if [o.name for o in model.graph.output] == [tensor]:
        return model
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        return onnx.utils.Extractor(inferred).extract_model(inputs, [tensor])
    except Exception as e:  # noqa: BLE001 - onnx raises many kinds of errors for odd graphs
        raise BackboneError(
            f"The ONNX graph cannot be cut at '{tensor}' ({type(e).__name__}: {str(e).splitlines()[0][:200]}); name "
            "another tensor after '#'."
        ) from None


def _input_shape(model: Any) -> list[int | None]:
    """The graph input's dimensions without the batch axis (``None`` for a free one)."""
    stored = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in stored)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    return dims[1:]


def _layout(shape: Sequence[int | None], shown: str) -> tuple[str, str, int | None]:
    """``(modality, layout, channels)`` of an input shape without the batch axis."""
    if len(shape) == 1 and shape[0]:
        return "tabular", "flat", None
    if len(shape) == 3 and all(shape):
        c0, _, c2 = shape
        if c0 in (1, 3) and shape[1] == shape[2]:
            return "image", "nchw", int(c0)  # type: ignore[arg-type]
        if c2 in (1, 3) and shape[0] == shape[1]:
            return "image", "nhwc", int(c2)  # type: ignore[arg-type]
    raise BackboneError(
        f"{shown} takes inputs of shape {['N', *[d if d else '?' for d in shape]]}; an onnx: backbone takes square "
        "1- or 3-channel images (NCHW or NHWC, fixed size) or fixed-width feature vectors."
    )


def _first(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else ""


def convert_graph(model: Any) -> nn.Module:
    """``onnx2pytorch.ConvertModel`` of ``model`` with its read tensors made trainable (:func:`_make_trainable`)."""
    import onnx
    from onnx2pytorch import ConvertModel

    own = onnx.ModelProto()
    own.CopyFrom(model)  # the converter edits the graph it is given (it folds an Add into the MatMul before it)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = ConvertModel(own)
    except Exception as e:  # noqa: BLE001 - unsupported operators and the like
        raise BackboneError(
            f"onnx2pytorch cannot convert this ONNX graph ({type(e).__name__}: {_first(e)}); "
            "export it with standard operators (opset 13-20), or use it as a teacher (cached mode) instead."
        ) from None
    _make_trainable(module)
    module.onnx_model = _without_weights(module.onnx_model)  # the forward pass reads only its nodes
    return module.eval()


def _without_weights(model: Any) -> Any:
    slim = type(model)()
    slim.CopyFrom(model)
    del slim.graph.initializer[:]
    return slim


def _reads_initializers(op: nn.Module) -> bool:
    """Whether onnx2pytorch's forward passes stored tensors to ``op`` (else the op holds its own copy: a layer)."""
    from onnx2pytorch.constants import COMPOSITE_LAYERS, STANDARD_LAYERS

    standard = isinstance(op, STANDARD_LAYERS) or (
        isinstance(op, COMPOSITE_LAYERS) and any(isinstance(x, STANDARD_LAYERS) for x in op.modules())
    )
    return not standard


def _make_trainable(module: nn.Module) -> None:
    """Stored float tensors that the forward pass reads become parameters; unread stored copies are dropped."""
    from onnx2pytorch.convert.operations import get_buffer_name

    graph = module.onnx_model.graph
    read: dict[str, str] = {}  # buffer name -> op type that reads it
    for node in graph.node:
        op = getattr(module, module.mapping[node.output[0]], None)
        if isinstance(op, nn.Module) and not _reads_initializers(op):
            continue
        for name in node.input:
            read.setdefault(get_buffer_name(name), node.op_type)
    for tensor in graph.initializer:
        buf = get_buffer_name(tensor.name)
        value = module._buffers.get(buf)
        if value is None:
            continue
        if buf not in read:
            del module._buffers[buf]
        elif value.is_floating_point() and value.numel() >= _STRIP_MIN:
            del module._buffers[buf]
            module.register_parameter(buf, nn.Parameter(value.clone()))
    module.__dict__["_param_readers"] = {k: v for k, v in read.items() if k in module._parameters}


def _strip(model: Any) -> tuple[Any, list[dict[str, Any]]]:
    """A copy of ``model`` without its large float tensors, and their names, shapes and types."""
    import onnx

    slim = onnx.ModelProto()
    slim.CopyFrom(model)
    kept, taken = [], []
    for t in slim.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        floating = t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
        if floating and n >= _STRIP_MIN:
            taken.append({"name": t.name, "dims": [int(d) for d in t.dims], "type": int(t.data_type)})
        else:
            kept.append(t)
    del slim.graph.initializer[:]
    slim.graph.initializer.extend(kept)
    return slim, taken


def _unstrip(slim: Any, taken: Sequence[dict[str, Any]]) -> Any:
    """``slim`` with the taken tensors back as zeros (the saved weights replace them)."""
    import onnx
    from onnx import helper, numpy_helper

    full = onnx.ModelProto()
    full.CopyFrom(slim)
    for t in taken:
        dtype = helper.tensor_dtype_to_np_dtype(int(t["type"]))
        full.graph.initializer.append(numpy_helper.from_array(np.zeros(t["dims"], dtype=dtype), name=t["name"]))
    return full


def _randomise(module: nn.Module) -> None:
    """Random initialisation of a converted graph: each layer's ``reset_parameters()``, and the stored tensors that
    elementwise operators read set to their identity element (1 for ``Mul``/``Div``, else 0), so a folded batch-norm
    starts as the identity, as a fresh one would."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    readers: dict[str, str] = module.__dict__.get("_param_readers", {})
    with torch.no_grad():
        for name, p in module._parameters.items():
            if p is not None:
                p.fill_(1.0 if readers.get(name) in ("Mul", "Div") else 0.0)


class OnnxBackbone(WrappedBackbone):
    """An ONNX model cut before its classifier and converted to a trainable module (see the module docstring).

    Args:
        source: a ``.onnx`` path or a loaded ``onnx.ModelProto``.
        feature: the tensor to cut at (default: the input of the final classifier).
        mean, std: the image normalisation the model expects after scaling pixels to [0, 1] (default 0 and 1).
        parity_batch: a real batch in the backbone's input form (``(N, 3, H, W)`` normalised images or ``(N, F)``
            rows) for the parity check; default a seeded batch (:func:`~.parity.seeded_batch`).
        parity_batch_name: where ``parity_batch`` came from, for the report.
        references: extra checks ``(runtime name, function on the native batch, converted full module)``: the
            Keras source checks its own ``predict`` against the converted full graph this way.
        pretrained: ``False`` re-initialises the converted module (the from-scratch twin of the same architecture).
        display_name: the name it was built by (messages, spec).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Any,
        *,
        feature: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        parity_batch: np.ndarray | torch.Tensor | None = None,
        parity_batch_name: str = "data",
        references: Sequence[tuple[str, Callable[[np.ndarray], Any], Any]] = (),
        pretrained: bool = True,
        display_name: str | None = None,
        origin: str = "onnx",
    ) -> None:
        super().__init__()
        if isinstance(source, str | os.PathLike):
            shown = display_name or f"onnx:{source}"
            raw = Path(source).read_bytes() if Path(source).is_file() else None
            full = read_onnx(source, what=shown)
            source_name = Path(source).name
        else:
            shown = display_name or "the ONNX model"
            full = source
            raw = full.SerializeToString()
            source_name = shown
        self.display_name = shown
        self.origin = origin
        self.source_name = source_name
        self.source_sha256 = hashlib.sha256(raw or full.SerializeToString()).hexdigest()
        self.feature = feature_tensor(full, feature)
        cut = _cut(full, self.feature)
        self._setup(cut, mean, std, shown)
        self.model = convert_graph(cut)
        self.__dict__["_sources"] = (cut, list(references))  # kept (off the module tree) for check_parity_on
        native = self._parity_batch(parity_batch)
        self.parity = self._check(cut, native, parity_batch_name if parity_batch is not None else "seeded", references)
        self._graph_b64, self._taken = self._embeddable(cut, native)
        with torch.no_grad():
            out = self._run_native(native[:2])
        self.feature_dim = int(np.prod(out.shape[1:]))
        if not pretrained:
            _randomise(self.model)
        elif _folded_norm(cut):
            warnings.warn(
                f"{shown} has its batch-norm folded into fixed weights by the exporter; fine-tune it gently "
                f"(learning rate {RECOMMENDED_LR:g} or lower), large steps unsettle a network without normalisation.",
                UserWarning,
                stacklevel=3,
            )

    # -- building -----------------------------------------------------------------------------------------------
    def _setup(self, cut: Any, mean: Sequence[float] | None, std: Sequence[float] | None, shown: str) -> None:
        self.input_shape = _input_shape(cut)
        modality, self.layout, self.in_channels = _layout(self.input_shape, shown)
        if modality == "image":
            size = int(self.input_shape[1] if self.layout == "nchw" else self.input_shape[0])  # type: ignore[arg-type]
            m = tuple(float(v) for v in (mean if mean is not None else (0.0, 0.0, 0.0)))
            s = tuple(float(v) for v in (std if std is not None else (1.0, 1.0, 1.0)))
            if len(m) == 1:
                m = m * 3
            if len(s) == 1:
                s = s * 3
            if len(m) != 3 or len(s) != 3 or any(v <= 0 for v in s):
                raise BackboneError(f"mean and std of {shown} must be 1 or 3 numbers (std > 0), not {m} and {s}.")
            self.preprocessing = Preprocessing("image", image_size=size, mean=m, std=s)
        else:
            self.preprocessing = Preprocessing("tabular")

    def to_native(self, x: torch.Tensor) -> torch.Tensor:
        """The toolkit's batch (``(N, 3, H, W)`` images or ``(N, F)`` rows) in the layout the graph takes."""
        if self.layout == "flat":
            return x.float()
        if x.ndim == 4 and self.in_channels == 1 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        elif x.ndim == 4 and self.in_channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.layout == "nhwc" and x.ndim == 4:
            x = x.permute(0, 2, 3, 1)
        return x.contiguous().float()

    def _parity_batch(self, batch: np.ndarray | torch.Tensor | None) -> np.ndarray:
        if batch is None:
            shape = self.input_shape if self.layout != "flat" else self.input_shape
            return seeded_batch(shape, self.preprocessing.modality)  # type: ignore[arg-type]
        t = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch)
        return self.to_native(t).numpy()

    def _run_native(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x)))
        if isinstance(out, tuple | list):
            out = out[0]
        return out.detach().numpy()

    def _check(
        self, cut: Any, native: np.ndarray, batch_name: str,
        references: Sequence[tuple[str, Callable[[np.ndarray], Any], Any]],
    ) -> dict[str, Any]:
        import onnxruntime as ort

        session = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        checks: list[Parity] = [check_parity(
            lambda x: session.run(None, {name: x})[0], self._run_native, native,
            what=self.display_name, reference_name="onnxruntime", batch_name=batch_name,
        )]
        for ref_name, ref_fn, full_graph in references:
            full_module = convert_graph(full_graph)

            def run_full(x: np.ndarray, m: nn.Module = full_module) -> np.ndarray:
                with torch.no_grad():
                    out = m(torch.from_numpy(np.ascontiguousarray(x)))
                return (out[0] if isinstance(out, tuple | list) else out).numpy()

            checks.append(check_parity(ref_fn, run_full, native, what=self.display_name, reference_name=ref_name,
                                       batch_name=batch_name))
        worst = max(checks, key=lambda p: p.max_abs_diff)
        return {**worst.to_dict(), "checks": {p.reference: p.max_abs_diff for p in checks}}

    def check_parity_on(self, batch: np.ndarray | torch.Tensor, batch_name: str) -> dict[str, Any]:
        """Check parity again on a real batch (the backbone's input form), e.g. the data about to be fitted; the
        result replaces :attr:`parity`. Only for a backbone built from its source (not from a saved spec)."""
        sources = self.__dict__.get("_sources")
        if sources is None:
            raise BackboneError(f"{self.display_name} was rebuilt from a saved model; its source is not at hand.")
        training = self.model.training
        try:
            self.parity = self._check(sources[0], self._parity_batch(batch), batch_name, sources[1])
        finally:
            self.model.train(training)
        return self.parity

    def _embeddable(self, cut: Any, native: np.ndarray) -> tuple[str, list[dict[str, Any]]]:
        """The graph to embed in :meth:`spec`: stripped of its weights when the stripped rebuild is exact."""
        slim, taken = _strip(cut)
        try:
            rebuilt = convert_graph(_unstrip(slim, taken))
            rebuilt.load_state_dict(self.model.state_dict(), strict=True)
            with torch.no_grad():
                a = self._run_native(native[:4])
                out = rebuilt.eval()(torch.from_numpy(np.ascontiguousarray(native[:4])))
            b = (out[0] if isinstance(out, tuple | list) else out).numpy()
            exact = max_abs_diff(a, b) == 0.0
        except (BackboneError, RuntimeError, KeyError):
            exact = False
        if not exact:
            slim, taken = cut, []
        return base64.b64encode(slim.SerializeToString()).decode("ascii"), taken

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> OnnxBackbone:
        """Rebuild the architecture from a saved spec (embedded graph; weights come from the saved model)."""
        import onnx

        try:
            slim = onnx.ModelProto()
            slim.ParseFromString(base64.b64decode(spec["graph"], validate=True))
        except Exception:  # noqa: BLE001 - a damaged spec can fail in the decoder or the protobuf parser
            raise BackboneError("The saved ONNX backbone's graph is damaged; save the model again.") from None
        graph = _unstrip(slim, spec.get("stripped") or [])
        self = cls.__new__(cls)
        WrappedBackbone.__init__(self)
        self.display_name = f"{spec.get('origin', 'onnx')}:{spec.get('source', 'model')}"
        self.origin = spec.get("origin", "onnx")
        self.source_name = spec.get("source", "")
        self.source_sha256 = spec.get("sha256", "")
        self.feature = spec.get("feature", "")
        self.input_shape = list(spec["input_shape"])
        _, self.layout, self.in_channels = _layout(self.input_shape, self.display_name)
        self.preprocessing = Preprocessing.from_dict(spec["preprocessing"])
        self.model = convert_graph(graph)
        self.parity = spec.get("parity")
        self._graph_b64, self._taken = spec["graph"], list(spec.get("stripped") or [])
        self.feature_dim = int(spec["feature_dim"])
        return self

    # -- the backbone contract ----------------------------------------------------------------------------------
    def forward(self, x: Any) -> torch.Tensor:
        out = self.model(self.to_native(x))
        if isinstance(out, tuple | list):
            out = out[0]
        return out.flatten(1) if out.ndim > 2 else out

    def blocks(self) -> list[nn.Module]:
        """One block per layer with weights (``Conv``, ``Gemm``/``MatMul``), in graph order; the trainable stored
        tensors (biases, folded batch-norm) join the block of the node that reads them."""
        from onnx2pytorch.convert.operations import get_buffer_name

        model = self.model
        groups: list[tuple[str, list[tuple[str, nn.Module | nn.Parameter]], nn.Module | None]] = []
        seen: set[int] = set()
        for node in model.onnx_model.graph.node:
            op_name = model.mapping[node.output[0]]
            op = getattr(model, op_name, None)
            own = [p for p in op.parameters()] if isinstance(op, nn.Module) else []
            members: list[tuple[str, nn.Module | nn.Parameter]] = []
            if own and not any(id(p) in seen for p in own):
                members.append((op_name, op))
                seen.update(id(p) for p in own)
            for inp in node.input:
                p = model._parameters.get(get_buffer_name(inp))
                if p is not None and id(p) not in seen:
                    members.append((get_buffer_name(inp), p))
                    seen.add(id(p))
            if not members:
                continue
            if own or not groups:
                groups.append((op_name, members, op if own else None))
            else:
                groups[-1][1].extend(members)
        rest = [(n, p) for n, p in model.named_parameters() if id(p) not in seen]
        if rest:
            if not groups:
                groups.append(("all", [], None))
            groups[-1][1].extend(rest)
        return [Block(name, members, tap) for name, members, tap in groups]

    def spec(self) -> dict[str, Any]:
        return self._spec()

    def _spec(self) -> dict[str, Any]:
        return {
            "type": "onnx",
            "origin": self.origin,
            "source": self.source_name,
            "sha256": self.source_sha256,
            "feature": self.feature,
            "graph": self._graph_b64,
            "stripped": self._taken,
            "input_shape": list(self.input_shape),
            "feature_dim": self.feature_dim,
            "preprocessing": self.preprocessing.to_dict(),
            "parity": self.parity,
        }


def _folded_norm(model: Any) -> bool:
    """Whether the exporter folded batch-norm away: convolutions but no BatchNormalization node."""
    ops = {n.op_type for n in model.graph.node}
    return "Conv" in ops and "BatchNormalization" not in ops
