"""Generators of shifted target domains, and the built-in source -> target pairs for domain adaptation.

**MNIST-M style** (:func:`make_mnist_m`), after Ganin et al. (2016, "Domain-adversarial training of neural
networks", section 5.2.2): every grey image ``d`` (H x W, values 0..255) is blended into a random H x W crop ``c`` of
a colour photograph, per channel::

    out[i, j, k] = | c[i, j, k] - d[i, j] |            (k = R, G, B; uint8)

so a digit keeps its shape but takes the photo's colours and textures, inverted where the stroke is bright. The
photograph of each image and the crop's top-left corner are drawn from ``numpy.random.default_rng(seed)`` (one
vector of photo indices, then one of uniform numbers scaled to each photo's valid offsets), so the result is a pure
function of ``(images, seed, photos)``. Ganin et al. crop BSDS500 photos, which cannot be had offline; here the
colour photographs bundled with scikit-learn (``load_sample_images``: china, flower) and scikit-image (``skimage.data``
files that ship inside the wheel, no download: astronaut, chelsea, coffee, hubble_deep_field, ihc,
motorcycle_left, retina, rocket) stand in. They are read from the package folders with PIL (the same decoding
``load_sample_images`` and ``skimage.io`` use), without importing either package. The digits are blended as they
are (anti-aliased grey levels), not binarised first.

Crops are cut with ``numpy.lib.stride_tricks.sliding_window_view`` (one fancy index per photo, no Python loop per
image): 70,000 Fashion-MNIST images take about 2 s on one busy core, 5,000 digits 0.1 s.

**Fashion-MNIST -> fashion-mnist-m**: the same blend applied to Fashion-MNIST (seed 0). Clothing covers far more of
the image than a digit stroke, so the items become photo-textured silhouettes on photo backgrounds: a strong shift
in colour and texture with the same shapes and labels.

**Tabular pairs from skada** (:func:`make_skada_pair`): :func:`skada.datasets.make_shifted_datasets` with binary
labels and ``random_state=0``, 2-D inputs, source and target from one call (see Courty et al. 2017 and skada's docs
for each shift): ``covariate`` (p(x) changes, p(y|x) fixed: the target is a biased re-sampling of the input space),
``label`` (skada's ``target_shift``: p(y) changes, 90/10 instead of 50/50), ``conditional`` (p(x|y) changes: the
target is moved and scaled), ``subspace`` (the classes stay separable along one direction shared by both domains).

``SHIFTED_PAIRS`` names every built-in pair as ``"source->target"`` for ``transferkit compare`` and the docs.

Written by hand (the blend): no maintained package builds MNIST-M-style data from local arrays (torchvision's and
skada's MNIST-M loaders download the published files), and the operation is three lines of numpy.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import DataError
from .packages import package_dir

#: Built-in domain-adaptation pairs: ``"source->target"`` -> (source built-in name, target built-in name).
SHIFTED_PAIRS: dict[str, tuple[str, str]] = {
    "mnist->mnist-m": ("mnist", "mnist-m"),
    "fashion-mnist->fashion-mnist-m": ("fashion-mnist", "fashion-mnist-m"),
    "mnist->uci-digits": ("mnist", "uci-digits"),  # other writers, 8x8 scans drawn at 28 px
    # text: reviews of light films -> reviews of dark films, same fresh/rotten task (transferkit.data.text_shift)
    "rotten-tomatoes-comedy->rotten-tomatoes-thriller": ("rotten-tomatoes-comedy", "rotten-tomatoes-thriller"),
    "skada-covariate": ("skada-covariate-source", "skada-covariate-target"),
    "skada-label": ("skada-label-source", "skada-label-target"),
    "skada-conditional": ("skada-conditional-source", "skada-conditional-target"),
    "skada-subspace": ("skada-subspace-source", "skada-subspace-target"),
}

#: The bundled colour photographs: (import name, pip name, path inside the package). Order matters (seeded draws).
PHOTO_FILES: tuple[tuple[str, str, str], ...] = (
    ("sklearn", "scikit-learn", "datasets/images/china.jpg"),
    ("sklearn", "scikit-learn", "datasets/images/flower.jpg"),
    ("skimage", "scikit-image", "data/astronaut.png"),
    ("skimage", "scikit-image", "data/chelsea.png"),
    ("skimage", "scikit-image", "data/coffee.png"),
    ("skimage", "scikit-image", "data/hubble_deep_field.jpg"),
    ("skimage", "scikit-image", "data/ihc.png"),
    ("skimage", "scikit-image", "data/motorcycle_left.png"),
    ("skimage", "scikit-image", "data/retina.jpg"),
    ("skimage", "scikit-image", "data/rocket.jpg"),
)

#: skada's names of the four shifts, by the short name used in the built-in data set names.
SKADA_SHIFTS: dict[str, str] = {
    "covariate": "covariate_shift",
    "label": "target_shift",
    "conditional": "conditional_shift",
    "subspace": "subspace",
}
#: make_shifted_datasets' size argument per shift: 8 points per unit (4 for subspace), so 1,200 rows per domain.
SKADA_SIZE: dict[str, int] = {"covariate": 150, "label": 150, "conditional": 150, "subspace": 300}
SKADA_SEED = 0
SKADA_NOISE = 0.3  # std of extra Gaussian noise, so the classes overlap a little (as in skada's examples)


def _photo_path(module: str, pip_name: str, rel: str) -> Path:
    path = package_dir(module, pip_name) / rel
    if not path.is_file():
        raise DataError(f"The photograph '{rel}' is missing from the '{pip_name}' package; reinstall {pip_name}.")
    return path


@cache
def bundled_photos() -> tuple[np.ndarray, ...]:
    """The colour photographs of :data:`PHOTO_FILES` as read-only uint8 arrays ``(H, W, 3)`` (cached in-process).

    Raises:
        DataError: scikit-learn or scikit-image is not installed, or one of the files is missing.
    """
    from PIL import Image

    photos = []
    for module, pip_name, rel in PHOTO_FILES:
        with Image.open(_photo_path(module, pip_name, rel)) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        arr = np.ascontiguousarray(arr)
        arr.setflags(write=False)
        photos.append(arr)
    return tuple(photos)


def make_mnist_m(
    images: np.ndarray, seed: int = 0, photos: list[np.ndarray] | tuple[np.ndarray, ...] | None = None
) -> np.ndarray:
    """Blend grey images into random crops of colour photographs: ``out = |crop - image|`` per channel (MNIST-M).

    Args:
        images: uint8 ``(N, H, W)`` grey images (e.g. digits, white on black), values 0..255.
        seed: seeds the choice of photograph and crop of every image; the same seed gives the same output.
        photos: uint8 ``(Hp, Wp, 3)`` colour photographs at least ``H x W``; default :func:`bundled_photos`.

    Returns:
        uint8 ``(N, H, W, 3)`` RGB images, in the order of ``images`` (labels are unchanged).

    Raises:
        DataError: the images are not a 3-D uint8 array, or a photograph is not RGB or is smaller than the images.
    """
    x = np.asarray(images)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"make_mnist_m needs grey images as a uint8 array of shape (N, H, W), not {x.dtype} {x.shape}.")
    n, h, w = x.shape
    pics = list(bundled_photos() if photos is None else photos)
    if not pics:
        raise DataError("make_mnist_m needs at least one photograph to blend the images into.")
    for i, p in enumerate(pics):
        p = np.asarray(p)
        if p.ndim != 3 or p.shape[2] != 3 or p.dtype != np.uint8 or p.shape[0] < h or p.shape[1] < w:
            raise DataError(
                f"Photograph {i} must be a uint8 RGB array of at least {h}x{w} pixels, not {p.dtype} {p.shape}."
            )
    rng = np.random.default_rng(seed)
    which = rng.integers(len(pics), size=n)
    corner = rng.random((n, 2))  # scaled below to the valid offsets of each image's photo
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for k, photo in enumerate(pics):
        idx = np.flatnonzero(which == k)
        if idx.size == 0:
            continue
        photo = np.asarray(photo)
        rows = (corner[idx, 0] * (photo.shape[0] - h + 1)).astype(np.int64)
        cols = (corner[idx, 1] * (photo.shape[1] - w + 1)).astype(np.int64)
        windows = sliding_window_view(photo, (h, w), axis=(0, 1))  # (Hp-h+1, Wp-w+1, 3, h, w), a view
        crops = windows[rows, cols].transpose(0, 2, 3, 1).astype(np.int16)  # (n_k, h, w, 3)
        out[idx] = np.abs(crops - x[idx, :, :, None].astype(np.int16)).astype(np.uint8)
    return out


@cache
def make_skada_pair(shift: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_source, y_source, X_target, y_target)`` of one skada shift (float32 ``(n, 2)``, int64 labels 0/1).

    One call to :func:`skada.datasets.make_shifted_datasets` with ``random_state=0``, binary labels, noise 0.3 and
    the size in :data:`SKADA_SIZE`; skada marks source rows with a positive and target rows with a negative domain.
    Cached in-process (read-only arrays).

    Raises:
        DataError: unknown shift name, or skada is not installed.
    """
    if shift not in SKADA_SHIFTS:
        raise DataError(f"Unknown skada shift '{shift}'; choose one of {', '.join(SKADA_SHIFTS)}.")
    try:
        from skada.datasets import make_shifted_datasets
    except ImportError:
        raise DataError("The package 'skada' is not installed; run: pip install skada.") from None
    n = SKADA_SIZE[shift]
    x, y, domain = make_shifted_datasets(
        n_samples_source=n, n_samples_target=n, shift=SKADA_SHIFTS[shift], noise=SKADA_NOISE, label="binary",
        random_state=SKADA_SEED,
    )  # fmt: skip
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    src, tgt = np.asarray(domain) > 0, np.asarray(domain) < 0
    parts = (x[src], y[src], x[tgt], y[tgt])
    for a in parts:
        a.setflags(write=False)
    return parts  # type: ignore[return-value]
