"""Reading weight files safely, fitting them into a model, and knowing when a hub download cannot happen.

Safety: a ``.pth``/``.pt``/``.bin`` file is a pickle, and unpickling runs code. :func:`load_state_dict` therefore
reads safetensors with safetensors and everything else with ``torch.load(..., weights_only=True)`` only, which
refuses any object that is not a tensor or a plain container; such a file is rejected with a :class:`WeightsError`
and never executed. There is deliberately no "trust this file" switch: convert the file to safetensors instead.

Fit: :func:`load_into` compares shapes before loading and names the first tensor that does not fit, so a file meant
for another architecture fails with a sentence instead of a page of ``size mismatch`` lines.

Offline: :func:`offline_reason` tells (within about 3 seconds) whether a hub host can be reached, so that a hub name
fails at once with :func:`offline_error` instead of hanging on retries.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import urllib.error
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import BackboneError, WeightsError

# keys under which training scripts commonly nest the real state dict
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
# prefixes that wrappers add to every key (DataParallel, torch.compile, our own backbones, Lightning)
_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.model.", "backbone.")


# --- reading ---------------------------------------------------------------------------------------------------
def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length followed by a JSON object."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` dict on the CPU, without ever running pickled code.

    ``.safetensors`` files (recognised by name or content) are read with safetensors; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``. Common wrappers are removed: a dict nested under
    ``state_dict``/``model``/... and a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix shared by
    every key. Raises :class:`WeightsError` for a missing, unreadable or unsafe file, or one without tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"Weights file '{p}' does not exist; check the path (it is read from the local disk).")
    if p.suffix == ".safetensors" or _looks_like_safetensors(p):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(
                f"Weights file '{p}' cannot be read as safetensors ({e}); the file is damaged or incomplete."
            ) from None
    else:
        try:
            raw = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # weights_only refused a non-tensor object: the file is never executed
            raise WeightsError(
                f"Weights file '{p}' is not a plain tensor file (it holds Python objects that would run code when "
                "unpickled, so it was not loaded); convert it to safetensors with the code that made it, or save "
                "only its state_dict()."
            ) from None
        except Exception as e:  # noqa: BLE001 - a damaged file raises anything from EOFError to IndexError
            raise WeightsError(
                f"Weights file '{p}' cannot be read as a torch or safetensors file ({type(e).__name__}); "
                "check that it is complete and not another format."
            ) from None
    state = _unwrap(raw)
    if not state:
        raise WeightsError(f"Weights file '{p}' holds no tensors; give a state dict (.safetensors or torch.save).")
    return state


def _unwrap(raw: Any) -> dict[str, torch.Tensor]:
    """Find the flat tensor dict inside a checkpoint and drop wrapper prefixes."""
    for _ in range(3):  # e.g. {"state_dict": {"model": {...}}}
        if not isinstance(raw, Mapping):
            return {}
        if any(isinstance(v, torch.Tensor) for v in raw.values()):
            break
        inner = next((raw[k] for k in _WRAPPER_KEYS if isinstance(raw.get(k), Mapping)), None)
        if inner is None:
            return {}
        raw = inner
    state = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


# --- fitting ---------------------------------------------------------------------------------------------------
class LoadResult(NamedTuple):
    """Keys the model has but the file lacks, and keys the file has but the model does not know."""

    missing: list[str]
    unexpected: list[str]


def align_prefix(state: dict[str, torch.Tensor], own: Mapping[str, Any], extra: Sequence[str]) -> dict[str, Any]:
    """If no key matches, strip (or add) a wrapper prefix shared by every key of the file."""
    if not state or set(state) & set(own):
        return state
    for prefix in (*_PREFIXES, *extra):
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if set(stripped) & set(own):
                return stripped
        added = {prefix + k: v for k, v in state.items()}
        if set(added) & set(own):
            return added
    # a prefix shared by only part of the file (e.g. "bert." next to "cls." heads)
    for prefix in extra:
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if set(part) & set(own):
            return part
    return state


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def load_into(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    what: str = "this backbone",
    source: str | os.PathLike[str] | None = None,
    optional: Sequence[str] = (),
    prefixes: Sequence[str] = (),
    ignore_unexpected: bool = False,
) -> LoadResult:
    """Load ``state_dict`` into ``module`` after checking that every shared tensor has the same shape.

    Args:
        strict: refuse missing or unexpected keys (apart from those under ``optional``).
        what: the model the file should be for, used in the error sentence (e.g. ``"torchvision resnet18"``).
        source: the file name, for the error sentence.
        optional: module paths whose keys may be missing or unexpected (e.g. a classifier the file may lack).
        prefixes: extra key prefixes to try when no key matches as is (e.g. ``"bert."``).
        ignore_unexpected: with ``strict``, keys of the file that the model does not have are no error (a stock
            checkpoint's classifier next to the features); missing keys and wrong shapes still are. The caller
            reports what was ignored (``LoadResult.unexpected``).

    Returns:
        The missing and unexpected keys (those under ``optional`` included).

    Raises:
        WeightsError: a tensor has the wrong shape (naming it and both shapes), or, when ``strict``, keys are missing
            or unexpected.
    """
    own = module.state_dict()
    state = align_prefix(dict(state_dict), own, prefixes)
    name = f"'{source}'" if source is not None else "The weights"
    for k, v in state.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise WeightsError(
                f"{name} does not fit {what}: tensor '{k}' has shape {tuple(v.shape)} in the file but "
                f"{tuple(own[k].shape)} in the model, so the file is for a different architecture; give a file "
                f"saved from {what} (or pick the backbone the file was trained with)."
            )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict:
        bad_missing = [k for k in missing if not _under(k, optional)]
        bad_unexpected = [k for k in unexpected if not _under(k, optional)]
        if bad_missing or (bad_unexpected and not ignore_unexpected):
            parts = []
            if bad_missing:
                parts.append(f"lacks {len(bad_missing)} tensors the model has (first '{bad_missing[0]}')")
            if bad_unexpected:  # named even when ignorable: it tells a renamed file from a truncated one
                parts.append(f"has {len(bad_unexpected)} the model does not know (first '{bad_unexpected[0]}')")
            raise WeightsError(
                f"{name} does not fit {what}: the file {' and '.join(parts)}; give a file saved from {what}."
            )
    fitting = {k: v for k, v in state.items() if k in own}
    module.load_state_dict(fitting, strict=False)
    return LoadResult(missing, unexpected)


# --- offline --------------------------------------------------------------------------------------------------
OFFLINE_VARS = ("TRANSFERKIT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT_S = 3.0
_probe_cache: dict[str, str | None] = {}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _probe(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Try a TCP connection to ``host`` in a daemon thread (DNS included) and give up after ``timeout`` seconds."""
    result: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as e:
            result.append(f"cannot reach {host}: {type(e).__name__}")

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if result else f"no answer from {host} within {timeout:.0f} s"


def offline_reason(host: str) -> str | None:
    """Why a download from ``host`` cannot happen now, or ``None`` when the host answers.

    Offline when one of ``TRANSFERKIT_OFFLINE``, ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` is set, or when a TCP
    connection to the host (or to the ``https_proxy``, if one is set) does not open within 3 seconds. The probe
    result is remembered for the process; :func:`reset_probe_cache` forgets it.
    """
    for var in OFFLINE_VARS:
        if _truthy(os.environ.get(var)):
            return f"{var}={os.environ[var]} is set"
    proxy = os.environ.get("https_proxy") or os.environ.get("HTTPS_PROXY")
    target, port = host, 443
    if proxy:
        from urllib.parse import urlparse

        u = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        target, port = u.hostname or host, u.port or 3128
    key = f"{target}:{port}"
    if key not in _probe_cache:
        _probe_cache[key] = _probe(target, port)
    return _probe_cache[key]


def reset_probe_cache() -> None:
    """Forget remembered network probes (e.g. after the network came back)."""
    _probe_cache.clear()


def offline_error(name: str, reason: str, *, hf: bool = False) -> BackboneError:
    """The one sentence for a hub model that cannot be downloaded offline, with how to give a local copy."""
    if hf:
        hint = (
            "point at a local copy instead with backbone: hf:/path/to/folder (a folder with config.json, the "
            "weights and the tokenizer, e.g. saved with save_pretrained)"
        )
    else:
        hint = (
            "give a local copy instead with weights: path/to/file.safetensors (or a .pth state dict) in the model "
            "config, or pretrained: false for a random start"
        )
    return BackboneError(f"Backbone '{name}' could not be downloaded offline ({reason}); {hint}.")


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its chain) says a download could not connect."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 10:
        if isinstance(e, ConnectionError | TimeoutError | socket.gaierror | socket.timeout | urllib.error.URLError):
            return True
        text = f"{type(e).__name__} {e}".lower()
        if any(w in text for w in ("connect", "offline", "localentrynotfound", "timed out", "name resolution")):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False
