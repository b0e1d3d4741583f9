"""Stochastic depth (``model.drop_path``) on a built backbone, where its architecture has residual drop sites.

Stochastic depth (Huang et al. 2016) skips a residual branch at random during training (per example, the kept
branches scaled by ``1 / (1 - p)``); it is the identity in evaluation mode, has no tensors, and so changes neither the
saved weights nor predictions. As in timm and torchvision, the drop rate grows linearly with depth from 0 at the first
residual block to ``rate`` at the last one.

Why set it after construction rather than through ``timm.create_model(drop_path_rate=...)``: backbones are built by
name in one place for every method (and rebuilt from a saved spec without it), and torchvision models take their rate
only at construction too. Both libraries keep a drop site in every residual block even at rate 0, so setting it
afterwards reaches the same modules: timm blocks hold a ``drop_path`` / ``drop_path1`` / ``drop_path2`` attribute
(``None``, ``nn.Identity`` or ``timm.layers.DropPath``), which is replaced by a ``DropPath``; torchvision's
``StochasticDepth`` modules (EfficientNet, ConvNeXt, Swin, MaxViT) get their ``p`` set. Architectures without such
sites (MobileNetV2, ResNets from torchvision, transformers encoders) are refused when the rate is above 0.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError

_TIMM_ATTRS = ("drop_path", "drop_path1", "drop_path2")


def drop_path_sites(module: nn.Module) -> list[tuple[nn.Module, list[str]]]:
    """Residual blocks with a stochastic-depth site, in order: ``(block, attributes)``; ``[]`` for torchvision ones."""
    try:
        from timm.layers import DropPath
    except ImportError:  # pragma: no cover - timm is a dependency
        return []
    sites = []
    for m in module.modules():
        if not type(m).__module__.startswith("timm."):
            continue
        attrs = [a for a in _TIMM_ATTRS if hasattr(m, a) and (getattr(m, a) is None or isinstance(
            getattr(m, a), nn.Identity | DropPath))]
        if attrs:
            sites.append((m, attrs))
    return sites


def set_drop_path(backbone: nn.Module, rate: float, name: str = "the backbone") -> int:
    """Give ``backbone`` stochastic depth up to ``rate`` (linear in depth); returns how many blocks got a site.

    Raises:
        ConfigError: ``rate > 0`` but the architecture has no residual drop sites.
    """
    from torchvision.ops import StochasticDepth

    if rate <= 0:
        return 0
    timm_sites = drop_path_sites(backbone)
    tv_sites = [m for m in backbone.modules() if isinstance(m, StochasticDepth)]
    n = len(timm_sites) + len(tv_sites)
    if n == 0:
        raise ConfigError(
            f"Backbone '{name}' has no stochastic-depth (drop-path) layers; set model.drop_path to 0, or use a "
            "timm backbone (e.g. timm:resnet18) or a torchvision EfficientNet/ConvNeXt/Swin."
        )
    rates = [rate * i / max(1, n - 1) for i in range(n)]
    if timm_sites:
        from timm.layers import DropPath

        for (block, attrs), p in zip(timm_sites, rates):
            for a in attrs:
                setattr(block, a, DropPath(p))
    for m, p in zip(tv_sites, rates[len(timm_sites):]):
        m.p = p
    return n
