"""Any Hugging Face transformers text encoder as a backbone (``hf:bert-base-uncased``, ``hf:/path/to/folder``).

Features are the token embeddings of the last layer pooled over the attention mask (mean pooling, the
sentence-transformers recipe) or the first token (``pooling="cls"``). The model's own pooler (a Linear+tanh on the
first token that mean pooling never uses) is removed, so that every parameter of the backbone gets a gradient.

Weights come from a local folder (``hf:/path``: no network ever), from the HF cache, or from the hub for online
users; offline, a hub name that is not cached fails at once. :meth:`HFBackbone.spec` stores the model config itself,
so a saved model rebuilds with ``AutoModel.from_config`` and no network.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..errors import BackboneError
from .base import Preprocessing
from .module_backbone import WrappedBackbone
from .weights import is_network_error, load_into, load_state_dict, offline_error, offline_reason

Pooling = Literal["mean", "cls"]
_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _hf_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def _quiet_transformers() -> None:
    """Keep transformers' loading chatter (progress bars, 'some weights unused') off the user's console."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except (ImportError, AttributeError):
        pass


def is_local(name: str) -> bool:
    """Whether ``name`` is a local folder (rather than a hub model id)."""
    return Path(name).expanduser().is_dir()


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id or broken cache only means "not cached"
        return False
    return isinstance(hit, str)


def _from_hub(loader: Any, name: str, shown: str, **kwargs: Any) -> Any:
    """``loader(name)`` for a hub id: cache only when offline, fast failure when offline and not cached."""
    reason = offline_reason(_hf_host())
    if reason is not None:
        if not _hub_cached(name):
            raise offline_error(shown, reason, hf=True)
        kwargs["local_files_only"] = True
    kwargs["trust_remote_code"] = False  # a hub repo's own Python code never runs (no opt-in exists for hf:)
    try:
        return loader(name, **kwargs)
    except OSError as e:
        if is_network_error(e) or reason is not None:
            raise offline_error(shown, f"{type(e).__name__}: {str(e).splitlines()[0]}", hf=True) from None
        raise BackboneError(f"Backbone '{shown}' cannot be loaded ({str(e).splitlines()[0]}).") from None
    except ValueError as e:  # e.g. a repo that needs its own code (trust_remote_code), which is never allowed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackboneError(
            f"Backbone '{shown}' cannot be loaded by transformers ({first.rstrip('.')}); transferkit never runs a "
            "model repository's own code, so use a model that transformers supports natively."
        ) from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A transformers config as plain JSON (what :meth:`HFBackbone.spec` stores)."""
    return json.loads(config.to_json_string(use_diff=False))


# Config entries that can make transformers fetch or run code instead of describing an architecture: remote model
# classes (auto_map), hub attention kernels (attn_implementation naming a repo), quantizers, custom pipelines.
_CODE_KEYS = ("auto_map", "custom_pipelines", "quantization_config", "trust_remote_code")


def _code_key(key: str) -> bool:
    return key in _CODE_KEYS or "attn_implementation" in key or "kernel" in key


def config_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild a transformers config from :func:`config_to_dict` output, without any file, network or foreign code.

    The dict comes from a saved model (data someone may have sent), so only the library's own architectures are
    accepted (``model_type`` must be one transformers ships) and entries that could steer code (:data:`_CODE_KEYS`)
    are dropped: the stored config of a plain encoder never needs them.
    """
    from transformers import AutoConfig

    d = {k: v for k, v in d.items() if not _code_key(k)}
    model_type = d.pop("model_type", None)
    if not model_type or not isinstance(model_type, str):
        raise BackboneError("The saved backbone config has no model_type; save the model again.")
    try:
        return AutoConfig.for_model(model_type, **d)
    except (ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackboneError(
            f"The saved backbone config cannot be rebuilt by transformers ({first}); save the model again."
        ) from None


def _encoder_only(model: nn.Module) -> nn.Module:
    """Encoder of encoder-decoder models (T5, BART); the model itself otherwise. Drops the unused pooler."""
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()
    if isinstance(getattr(model, "pooler", None), nn.Module):
        model.pooler = None
    return model


def hf_anchors(model: nn.Module) -> list[str]:
    """Block ends: each layer of the largest ``nn.ModuleList`` (the transformer layers); embeddings form the stem."""
    best, best_n = None, -1
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            n = sum(p.numel() for p in mod.parameters())
            if n > best_n:
                best, best_n = name, n
    if best is None:
        return [n for n, c in model.named_children() if any(True for _ in c.parameters())]
    return [f"{best}.{n}" for n, _ in model.get_submodule(best).named_children()]


class HFBackbone(WrappedBackbone):
    """A transformers encoder with mean (or CLS) pooling: ``forward(batch) -> (N, hidden_size)``.

    Args:
        name: a hub id (``bert-base-uncased``) or a local folder with ``config.json`` and weights.
        pretrained: load the weights (``False``: same architecture from the config, random initialisation).
        weights: a local weights file loaded strictly into the architecture (overrides ``pretrained``).
        pooling: ``"mean"`` over the attention mask, or ``"cls"`` (first token).
        normalize: L2-normalise the features (sentence-transformers models end with this step).
        max_length: tokenizer truncation length.
        config: a config dict from :meth:`spec`; when given, the architecture is built from it (no file, no network).
        tokenizer: where the tokenizer lives (default: ``name``).
    """

    separate_stem = True

    def __init__(
        self,
        name: str,
        *,
        pretrained: bool = True,
        weights: str | os.PathLike[str] | None = None,
        pooling: Pooling = "mean",
        normalize: bool = False,
        max_length: int = 128,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        display_name: str | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise BackboneError(f"pooling must be 'mean' or 'cls', not '{pooling}'.")
        from transformers import AutoConfig, AutoModel

        _quiet_transformers()
        self.name = name
        shown = display_name or f"hf:{name}"
        local = is_local(name)
        source = str(Path(name).expanduser().resolve()) if local else name
        if config is not None:
            model = AutoModel.from_config(config_from_dict(config), trust_remote_code=False)
        elif pretrained and weights is None:
            if local:
                model = _load_local(AutoModel.from_pretrained, source, shown)
            else:
                model = _from_hub(AutoModel.from_pretrained, source, shown)
        else:
            cfg = (
                _load_local(AutoConfig.from_pretrained, source, shown)
                if local
                else _from_hub(AutoConfig.from_pretrained, source, shown)
            )
            model = AutoModel.from_config(cfg, trust_remote_code=False)
        model = _encoder_only(model).float()
        if weights is not None:
            base = getattr(model, "base_model_prefix", "") or ""
            load_into(
                model,
                load_state_dict(weights),
                what=f"the transformers model {name}",
                source=weights,
                optional=["pooler"],
                prefixes=[f"{base}."] if base else [],
            )
        self.model = model
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.source = source
        self.feature_dim = int(model.config.hidden_size)
        self.preprocessing = Preprocessing("text", tokenizer=tokenizer or source, max_length=max_length)
        self._accepts = set(inspect.signature(model.forward).parameters)

    def block_anchors(self) -> list[str]:
        return hf_anchors(self.model)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        if not isinstance(x, Mapping):
            raise TypeError("a text backbone takes the tokenizer's dict (input_ids, attention_mask, ...)")
        inputs = {k: v for k, v in x.items() if k in _INPUT_KEYS and k in self._accepts}
        out = self.model(**inputs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if self.pooling == "cls":
            feats = hidden[:, 0]
        else:
            mask = x.get("attention_mask")
            if mask is None:
                mask = torch.ones(hidden.shape[:2], device=hidden.device)
            m = mask.unsqueeze(-1).to(hidden.dtype)
            feats = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.normalize:
            feats = torch.nn.functional.normalize(feats, dim=-1)
        return feats

    def _spec(self) -> dict[str, Any]:
        return {
            "type": "hf",
            "name": self.name,
            "config": config_to_dict(self.model.config),
            "tokenizer": self.preprocessing.tokenizer,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.preprocessing.max_length,
        }


def _load_local(loader: Any, folder: str, shown: str) -> Any:
    try:
        return loader(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise BackboneError(
            f"Backbone '{shown}': the folder cannot be loaded by transformers ({str(e).splitlines()[0]}); it needs "
            "config.json and the weights (model.safetensors), as written by save_pretrained."
        ) from None

