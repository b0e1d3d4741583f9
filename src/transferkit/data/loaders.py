"""Batches for training and evaluation: :func:`make_loader` turns a :class:`Dataset` into a ``DataLoader``.

Every batch is ``(inputs, labels)``:

* images: float32 ``(N, 3, S, S)``, resized and normalised with the backbone's mean/std;
* text: a dict of tensors from the backbone's tokenizer (``input_ids``, ``attention_mask``, ...);
* tabular: float32 ``(N, F)``;

and ``labels`` is an int64 ``(N,)`` tensor, all ``-1`` for unlabelled data, or, when the data set carries per-row
targets (``ds.meta["targets"]``: a float ``(N, K)`` array, see :meth:`Dataset.with_targets`), those rows as a float32
``(N, K)`` tensor instead: the same sampler, weights and sharding pick them, so a method that trains on more than the
label (a teacher's cached outputs, say) gets them with its batch without the loop knowing.

Speed: the loader fetches whole batches (the sampler yields lists of indices, the dataset answers with a batch),
so no per-example Python work happens where none is needed. For in-memory uint8 images without augmentation the
resized uint8 images are computed once per (array, size) and kept for as long as the array lives; a batch is then
one ``index_select`` plus one fused multiply-add to normalise, which keeps a fine-tuning loop within a few percent
of a hand-written loop over ready-made tensors. With augmentation, each image goes through the v2 transforms as a
uint8 tensor (cheaper than float or PIL) and the batch is normalised at once.

Determinism: with ``train=True`` the order of an epoch comes from a ``torch.Generator`` seeded from ``(seed,
epoch)``, and the random augmentations of each batch from ``(seed, epoch, batch number)`` (in a forked RNG, so the
global torch RNG is not touched). A resumed run therefore sees exactly the batches it would have seen, with any
number of workers. Reuse one loader across epochs with ``loader.sampler.set_epoch(epoch)`` or build one per epoch.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import v2

from ..errors import BackboneError, ConfigError, DataError
from .arrays import as_image_array
from .base import Dataset
from .devices import to_device as to_device  # its old home: code that imports it from here still works
from .image_folders import skipped_message
from .preprocessing import Preprocessing
from .transforms import BatchNormalizer, _resolve_size, check_preset, to_uint8_chw, uint8_transform

#: Largest resized uint8 copy of an in-memory image array kept for augment="none" (above it, resize per batch).
PRECOMPUTE_MAX_BYTES = 2 * 1024**3

_CHUNK = 512  # images resized at once when precomputing


def _mix(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (so (seed, epoch) = (0, 1) and (1, 0) give unrelated streams)."""
    state = np.random.SeedSequence([int(v) & 0xFFFFFFFFFFFFFFFF for v in values]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def batches_per_epoch(n: int, batch_size: int, *, train: bool, drop_last: bool = False) -> int:
    """How many batches one epoch of ``n`` examples has, over all processes.

    A training epoch never ends in a batch of a single example: batch-norm cannot normalise one example (torch
    raises), so when ``n % batch_size == 1`` that last example sits the epoch out; the order is reshuffled every
    epoch, so it is a different example each time. Evaluation keeps every example.
    """
    if drop_last:
        return n // batch_size
    if train and n > batch_size and n % batch_size == 1:
        return n // batch_size
    return (n + batch_size - 1) // batch_size


class EpochBatchSampler:
    """Yields ``(batch_seed, indices)`` for one epoch; the order is a pure function of ``(seed, epoch)``.

    ``indices`` is an int64 tensor; ``batch_seed`` seeds the random augmentations of that batch. Call
    :meth:`set_epoch` to move a reused loader to the next epoch.

    With ``weights`` (one non-negative number per example, shuffling on), an epoch is ``n`` draws *with replacement*
    with probability proportional to the weights (importance-weighted source training, source-sample selection):
    in expectation every example counts ``weight / mean(weight)`` times, whatever loss the method uses.

    With ``shard=(rank, world)`` (training in several processes) every process computes the same epoch order and
    takes batches ``rank, rank + world, ...``; all processes get the same number of batches (the last ones wrap around
    to the epoch's first batches, as torch's DistributedSampler pads), so none waits for a gradient exchange the
    others never start.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, epoch: int, drop_last: bool,
                 weights: np.ndarray | None = None, shard: tuple[int, int] | None = None) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive number, not {batch_size}.")
        self.weights: torch.Tensor | None = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if len(w) != n or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
                raise DataError(f"Sample weights must be {n} finite, non-negative numbers with a positive sum.")
            self.weights = torch.from_numpy(w)
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.drop_last = drop_last
        rank, world = shard or (0, 1)
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, not {shard}")
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce the order of ``epoch``."""
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        """The example order of the current epoch."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator()
        g.manual_seed(_mix(self.seed, self.epoch, 0x0D3E))
        if self.weights is not None:
            return torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        order = self.order()
        total = self._batches()
        for i in range(len(self)):
            b = (self.rank + i * self.world) % max(1, total)
            yield _mix(self.seed, self.epoch, b, 0xA116), order[b * self.batch_size : (b + 1) * self.batch_size]

    def _batches(self) -> int:
        """Batches in the whole epoch, over all shards."""
        return batches_per_epoch(self.n, self.batch_size, train=self.shuffle, drop_last=self.drop_last)

    def __len__(self) -> int:
        total = self._batches()
        return total if self.world == 1 or total == 0 else -(-total // self.world)


def _labels_tensor(ds: Dataset) -> torch.Tensor:
    targets = ds.meta.get("targets")
    if targets is not None:
        t = np.asarray(targets, dtype=np.float32)
        if t.ndim != 2 or len(t) != len(ds):
            raise DataError(f"The per-row targets of '{ds.name}' have shape {t.shape}; give one row per example.")
        return torch.from_numpy(np.ascontiguousarray(t))
    if ds.labels is None:
        return torch.full((len(ds),), -1, dtype=torch.int64)
    return torch.from_numpy(np.ascontiguousarray(ds.labels, dtype=np.int64))


class _Batches(TorchDataset):
    """A map-style dataset indexed by a whole batch ``(batch_seed, indices)``."""

    def __init__(self, ds: Dataset) -> None:
        self.labels = _labels_tensor(ds)
        self.n = len(ds)

    def __len__(self) -> int:
        return self.n


class _TabularBatches(_Batches):
    def __init__(self, ds: Dataset) -> None:
        super().__init__(ds)
        x = np.asarray(ds.inputs)
        if x.ndim != 2:
            raise DataError(f"Tabular data '{ds.name}' must be 2-D (rows, features), not of shape {x.shape}.")
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = item[1]
        return self.x.index_select(0, idx), self.labels.index_select(0, idx)


class _TextBatches(_Batches):
    def __init__(self, ds: Dataset) -> None:
        super().__init__(ds)
        self.texts = list(ds.inputs)

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> tuple[list[str], torch.Tensor]:
        idx = item[1]
        return [self.texts[i] for i in idx.tolist()], self.labels.index_select(0, idx)


@lru_cache(maxsize=8)
def load_tokenizer(path: str) -> Any:
    """The Hugging Face tokenizer at ``path`` (a local folder, or a hub name when online), loaded once per path."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)  # never a folder's own code
    except (OSError, ValueError) as e:
        if "trust_remote_code" in str(e) or "custom code" in str(e):
            raise BackboneError(
                f"Cannot load the tokenizer '{path}': it needs its own Python code, which transferkit never runs; "
                "use a tokenizer that transformers supports natively."
            ) from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackboneError(
            f"Cannot load the tokenizer '{path}' ({first}); point the backbone at a local model folder."
        ) from None


class _TextCollate:
    """Tokenise one batch of strings (in the worker when there are workers): padding to the longest, truncation."""

    def __init__(self, tokenizer: str, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, batch: tuple[list[str], torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts, labels = batch
        enc = load_tokenizer(self.tokenizer)(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return dict(enc), labels


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------

# (id(array), size) -> (weak reference to the array, resized uint8 tensor). An entry dies with its array.
_RESIZED: dict[tuple[int, int], tuple[weakref.ref[np.ndarray], torch.Tensor]] = {}


def _as_nchw(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W)`` or ``(B, H, W, 3)`` -> ``(B, C, H, W)`` (a view, no copy)."""
    t = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)


def _resize_batch(batch: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    t = _as_nchw(batch)
    if t.shape[-2:] == (size, size):
        return t
    return v2.functional.resize(t.contiguous(), [size, size], antialias=True)


def resized_images(images: np.ndarray, size: int) -> torch.Tensor | None:
    """The uint8 ``(N, C, S, S)`` resized copy of an image array (C = 1 for grey), computed once and cached.

    Returns ``None`` when the copy would exceed :data:`PRECOMPUTE_MAX_BYTES` (the caller then resizes per batch).
    The cache assumes the array is not modified in place while it lives (datasets are treated as immutable).
    """
    key = (id(images), size)
    hit = _RESIZED.get(key)
    if hit is not None and hit[0]() is images:
        return hit[1]
    n = images.shape[0]
    c = 1 if images.ndim == 3 else images.shape[-1]
    if n * c * size * size > PRECOMPUTE_MAX_BYTES:
        return None
    if not images.flags.writeable:
        images_t = torch.from_numpy(images.copy())
    else:
        images_t = torch.from_numpy(images)
    if images.shape[1:3] == (size, size):
        out = _as_nchw(images_t)
    else:
        out = torch.empty((n, c, size, size), dtype=torch.uint8)
        for i in range(0, n, _CHUNK):
            out[i : i + _CHUNK] = _resize_batch(images_t[i : i + _CHUNK], size)
    try:
        ref = weakref.ref(images, lambda _r, k=key: _RESIZED.pop(k, None))
    except TypeError:  # not weak-referenceable: do not cache
        return out
    _RESIZED[key] = (ref, out)
    return out


class _ArrayImageBatches(_Batches):
    """In-memory uint8 images, no augmentation: batched resize (precomputed when it fits) + batched normalise."""

    def __init__(self, ds: Dataset, size: int, normalizer: BatchNormalizer) -> None:
        super().__init__(ds)
        self.images = ds.inputs
        self.size = size
        self.normalize = normalizer
        self.resized = resized_images(ds.inputs, size)

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = item[1]
        if self.resized is not None:
            u8 = self.resized.index_select(0, idx)
        else:
            u8 = _resize_batch(self.images[idx.numpy()], self.size)
        return self.normalize(u8), self.labels.index_select(0, idx)


def open_image(path: str | os.PathLike[str], draft_size: int | None = None) -> torch.Tensor:
    """Decode an image file to uint8 ``(C, H, W)`` (C = 1 or 3).

    ``draft_size`` lets JPEG decoding work at a reduced scale that still covers the requested size, which is much
    faster for large photos.

    Raises:
        DataError: the file is missing or cannot be decoded (it may have changed since the data was checked).
    """
    try:
        return _decode(path, draft_size)
    except Exception as e:  # noqa: BLE001 - any decoding failure is the file's fault
        raise DataError(
            f"Image file '{path}' cannot be read ({_decode_failure(path, e)}); it may have changed since the data was "
            "checked, so fix or remove it."
        ) from None


def _decode(path: str | os.PathLike[str], draft_size: int | None) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        if draft_size and im.format == "JPEG":
            im.draft("RGB" if im.mode != "L" else "L", (draft_size, draft_size))
        im.load()
        return to_uint8_chw(im)


def _decode_failure(path: str | os.PathLike[str], e: BaseException) -> str:
    """Why decoding failed, in the words of the folder check (``truncated``, ``corrupt: OSError``)."""
    if "truncated" in str(e):
        return "truncated"
    return type(e).__name__ if str(path) in str(e) or not str(e) else f"{type(e).__name__}: {e}"


class _PerImageBatches(_Batches):
    """Images transformed one by one (augmentation, or lazily decoded files), then stacked and normalised at once.

    With ``substitute`` (training on files), an image that fails to decode (one the up-front folder check could not
    catch, or one that changed since) does not stop the run: it is skipped with the folder check's warning, and the
    next readable example of the data set (cyclically) takes its place in the batch, with its own label. Which
    example replaces which depends only on the files, so training stays deterministic and a resumed run sees the
    same batches. Evaluation and prediction (``substitute=False``) still refuse such a file, since a substitute
    there would change a reported metric or prediction.
    """

    def __init__(
        self, ds: Dataset, size: int, train: bool, augment: str, normalizer: BatchNormalizer, random: bool,
        substitute: bool = False,
    ) -> None:
        super().__init__(ds)
        self.items = ds.inputs
        self.from_files = not isinstance(ds.inputs, np.ndarray)
        self.transform = uint8_transform(size, train, augment)
        self.normalize = normalizer
        self.random = random
        self.draft = size if augment != "standard" or not train else None
        self.substitute = substitute and self.from_files
        self.unreadable: set[int] = set()  # indices found undecodable in this process (each warned about once)

    def _load(self, i: int) -> Any:
        item = self.items[i]
        if isinstance(item, str | os.PathLike):
            return open_image(item, self.draft)
        return item

    def _load_or_substitute(self, i: int) -> tuple[torch.Tensor, int]:
        """The image of row ``i``, or of the next readable row after it: (image, row used)."""
        for k in range(self.n):
            j = (i + k) % self.n
            if j in self.unreadable:
                continue
            try:
                return _decode(self.items[j], self.draft), j
            except Exception as e:  # noqa: BLE001 - any decoding failure is the file's fault
                self.unreadable.add(j)
                self._warn(self.items[j], _decode_failure(self.items[j], e))
        raise DataError(f"None of the {self.n} training images can be decoded; check the image files.")

    @staticmethod
    def _warn(path: str, why: str) -> None:
        note = "; another training image takes its place in each batch"
        warnings.warn(skipped_message([(str(path), why)], os.path.dirname(str(path)), note), UserWarning,
                      stacklevel=2)

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        seed, idx = item
        rows = idx.tolist()
        with torch.random.fork_rng(devices=[], enabled=self.random):
            if self.random:
                torch.manual_seed(seed)
            if self.substitute:
                loaded = [self._load_or_substitute(i) for i in rows]
                if any(j != i for (_, j), i in zip(loaded, rows, strict=True)):
                    idx = torch.tensor([j for _, j in loaded], dtype=torch.int64)
                images = [self.transform(img) for img, _ in loaded]
            else:
                images = [self.transform(self._load(i)) for i in rows]
        return self.normalize(torch.stack(images)), self.labels.index_select(0, idx)


def _is_stored_image_array(x: np.ndarray) -> bool:
    """Whether ``x`` is already uint8 ``(N, H, W)`` or ``(N, H, W, 3)``, the form every image consumer reads."""
    return x.dtype == np.uint8 and (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3))


def _identity(batch: Any) -> Any:
    return batch


class TransferkitLoader(DataLoader):
    """A ``DataLoader`` whose worker errors keep their one-sentence :class:`DataError` message.

    PyTorch re-raises an exception from a worker process with the worker's whole traceback prepended to the
    message; the CLI prints a ``DataError`` message as is, so we restore the original sentence.
    """

    def __iter__(self) -> Iterator[Any]:
        it = super().__iter__()
        try:
            yield from it
        except DataError as e:
            # stop the workers now: left running after an error, their shutdown later blocks for seconds
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
                self._iterator = None
            msg = str(e)
            if msg.startswith("Caught DataError in DataLoader worker"):
                last = msg.rstrip().splitlines()[-1]
                raise DataError(last.split("DataError: ", 1)[-1]) from None
            raise


# ---------------------------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------------------------


def make_loader(
    ds: Dataset,
    pre: Preprocessing,
    *,
    image_size: int | None,
    train: bool,
    augment: str = "none",
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    weights: np.ndarray | None = None,
    shard: tuple[int, int] | None = None,
) -> TransferkitLoader:
    """A ``DataLoader`` of ``(inputs, labels)`` batches for ``ds``, prepared as the backbone's ``pre`` says.

    Args:
        ds: the split to load.
        pre: the backbone's preprocessing (image size and mean/std, or the tokenizer and max length).
        image_size: side of the square images; ``None`` uses ``pre.image_size``. Ignored for text and tabular data.
        train: shuffle (deterministically from ``seed`` and ``epoch``) and apply the augmentation preset.
        augment: ``"none"``, ``"light"`` or ``"standard"`` (see :mod:`transferkit.data.transforms`); only used
            when ``train`` is true, but always checked.
        batch_size: examples per batch.
        seed, epoch: fix the shuffling order and the augmentations of this epoch.
        num_workers: worker processes (0: load in the main process, usually fastest for in-memory data).
        drop_last: drop the last incomplete batch.
        pin_memory: pin batches in page-locked memory (speeds up copies to a GPU).
        weights: with ``train``, sample each epoch's ``len(ds)`` examples with replacement in proportion to these
            per-example weights (see :class:`EpochBatchSampler`).
        shard: ``(rank, world)``: this process's share of the batches when training in several processes.

    Raises:
        ConfigError: unknown augmentation preset, or no image size known for an image data set.
        DataError: the inputs do not fit the data set's modality.
        BackboneError: the tokenizer cannot be loaded (text).
    """
    check_preset(augment)
    shuffle = bool(train)
    sampler = EpochBatchSampler(len(ds), batch_size, shuffle, seed, epoch, drop_last, weights if train else None,
                                shard=shard)
    collate: Any = _identity
    if ds.modality == "image":
        size = _resolve_size(pre, image_size)
        normalizer = BatchNormalizer(pre)
        random = train and augment != "none"
        if isinstance(ds.inputs, np.ndarray) and not _is_stored_image_array(ds.inputs):
            # a Dataset built by hand (not through from_arrays): bring its array to the stored form, or refuse it
            ds = Dataset(ds.modality, as_image_array(ds.inputs, ds.name), ds.labels, ds.classes, ds.name, ds.meta)
        if isinstance(ds.inputs, np.ndarray) and not random:
            batches: _Batches = _ArrayImageBatches(ds, size, normalizer)
        else:
            batches = _PerImageBatches(ds, size, train, augment, normalizer, random, substitute=train)
    elif ds.modality == "text":
        if not pre.tokenizer:
            raise BackboneError("This backbone has no tokenizer, so it cannot read text; use a text backbone.")
        load_tokenizer(pre.tokenizer)  # fail now, in the main process, and let forked workers inherit it
        batches = _TextBatches(ds)
        collate = _TextCollate(pre.tokenizer, pre.max_length)
    elif ds.modality == "tabular":
        batches = _TabularBatches(ds)
    else:
        raise DataError(f"Data set '{ds.name}' has unknown modality '{ds.modality}'.")
    return TransferkitLoader(
        batches,
        batch_size=None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        # the loader draws a base seed per iteration; from its own generator it neither consumes nor depends on
        # the global torch RNG (our augmentations are seeded per batch anyway)
        generator=torch.Generator().manual_seed(_mix(seed, 0x10AD)),
    )
