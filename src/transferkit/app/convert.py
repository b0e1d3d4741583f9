"""``transferkit convert SOURCE --out model.safetensors``: a model of another framework as checked PyTorch weights.

The source (``model.onnx``, ``model.keras``, or a backbone name ``onnx:...``/``keras:...``, optionally with
``#<tensor>``) is converted as the ``onnx:``/``keras:`` backbones are (:mod:`transferkit.backbones.onnx_backbone`),
the parity check runs (on a real batch of ``data`` when given, else on a seeded batch), and two files are written,
each atomically:

* ``model.safetensors``: every tensor of the converted module (no pickle);
* ``model.json`` (same stem): the backbone spec, with the cut ONNX graph embedded as data (no code), and the parity
  figures. :func:`load_converted` rebuilds the module from the two files, in any process, without the source file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackboneError, RunError

CONVERTED_FORMAT = "transferkit-converted/1"


@dataclass
class ConvertResult:
    """Where the files went and what the parity check measured."""

    weights: Path
    spec: Path
    parity: dict[str, Any]
    feature_dim: int
    parameters: int


def source_name(source: str) -> str:
    """A backbone name for ``source``: ``onnx:``/``keras:`` names as they are, files by their suffix."""
    s = str(source).strip()
    if s.lower().startswith(("onnx:", "keras:")):
        return s
    path = s.partition("#")[0]
    if path.lower().endswith(".onnx"):
        return f"onnx:{s}"
    if path.lower().endswith(".keras"):
        return f"keras:{s}"
    raise BackboneError(
        f"'{source}' is neither an .onnx nor a .keras file; give one of those (or a name such as onnx:model.onnx)."
    )


def real_batch(data: str, pre: Any, *, n: int = 16) -> Any:
    """The first ``n`` training examples of ``data`` (a built-in name or a path), prepared as ``pre`` says."""
    from ..data import load_data, resolve_data_arg
    from ..data.loaders import make_loader

    splits = load_data(resolve_data_arg(data))
    loader = make_loader(splits.train, pre, image_size=None, train=False, batch_size=n)
    x, _ = next(iter(loader))
    return x


def convert(source: str, out: str | Path, *, data: str | None = None, mean: list[float] | None = None,
            std: list[float] | None = None) -> ConvertResult:
    """Convert ``source``, check parity, and write ``out`` (``.safetensors``) plus its ``.json`` spec.

    Raises:
        BackboneError: the source cannot be read or converted, or the converted module fails the parity check.
        RunError: ``out`` does not end in ``.safetensors``.
    """
    from safetensors.torch import save_file

    from ..backbones.onnx_backbone import OnnxBackbone, parse_onnx_name
    from ..io import write_json, write_with

    out = Path(out)
    if out.suffix != ".safetensors":
        raise RunError(f"--out must name a .safetensors file, not '{out}'; e.g. --out model.safetensors.")
    name = source_name(source)
    prefix, _, rest = name.partition(":")
    path, tensor = parse_onnx_name(rest)
    if prefix.lower() == "keras":
        from ..backbones.keras_backbone import keras_backbone

        bb = keras_backbone(path, feature=tensor, mean=mean, std=std, display_name=name)
    else:
        bb = OnnxBackbone(path, feature=tensor, mean=mean, std=std, display_name=name)
    if data is not None:
        batch = real_batch(data, bb.preprocessing)
        bb.check_parity_on(batch, f"'{data}'")
    state = {k: v.detach().cpu().contiguous() for k, v in bb.state_dict().items()}
    spec_path = out.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_with(out, lambda tmp: save_file(state, str(tmp)))
    write_json(spec_path, {"format": CONVERTED_FORMAT, "weights": out.name, "backbone": bb.spec(), "parity": bb.parity})
    return ConvertResult(out, spec_path, dict(bb.parity), bb.feature_dim, sum(v.numel() for v in state.values()))


def load_converted(path: str | Path) -> Any:
    """The backbone written by :func:`convert` (``model.safetensors`` or its ``model.json``), weights loaded."""
    from ..backbones import build_from_spec
    from ..backbones.weights import load_into, load_state_dict

    p = Path(path)
    spec_path, weights = (p, p.with_suffix(".safetensors")) if p.suffix == ".json" else (p.with_suffix(".json"), p)
    if not spec_path.is_file() or not weights.is_file():
        raise RunError(f"'{p}' is not a converted model (it needs {spec_path.name} and {weights.name} side by side).")
    try:
        meta = json.loads(spec_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RunError(f"'{spec_path}' is not valid JSON; convert the model again.") from None
    ours = isinstance(meta, dict) and meta.get("format") == CONVERTED_FORMAT
    if not ours or not isinstance(meta.get("backbone"), dict):
        raise RunError(f"'{spec_path}' was not written by transferkit convert; convert the model again.")
    bb = build_from_spec(meta["backbone"], source=f"The converted model '{spec_path}'")
    load_into(bb, load_state_dict(weights), strict=True, what="the converted model", source=str(weights))
    return bb.eval()
