"""Rank candidate backbones (and layers) on a target data set without training them.

A ranking extracts frozen features of a seeded, stratified subsample of the training split (at most
``max_samples`` examples, 500 by default) once per candidate and scores them with the transferability scores of
:mod:`transferkit.ranking.scores`. Scoring a thousand examples is what makes it several times cheaper than training
a probe per candidate: one forward pass over a subsample instead of forward passes over the whole training and test
splits plus a fit. k-NN accuracy is leave-one-out on the same subsample, so no validation features are extracted.
Candidates that are the same network at several depths (``mobilenet_v2.imagenet``, ``mobilenet_v2.imagenet@4``...)
share one forward pass (and one ONNX export): the network runs once with hooks on every requested block, and each
candidate reads its own columns; the time of that shared pass is split evenly among them in the reported seconds.

Candidate names (one string each; no commas, so a list fits one CLI argument):

- ``name``: any backbone name (``mobilenet_v2.imagenet``, ``timm:resnet18``, ``minilm-l6``...), final features;
- ``name@L``: the output of layer ``L``, average-pooled: a block index into ``backbone.blocks()`` (negative counts
  from the end) or a module path of the network (``mobilenet_v2.imagenet@features.7``; see
  :mod:`transferkit.backbones.taps`);
- ``name@L1+L2``: several layers, concatenated (feature fusion of layers);
- ``name~random`` (before or after ``@``): the same architecture with random initialisation (``pretrained=False``),
  e.g. ``timm:resnet18~random``, whose pretrained weights are not available offline. Catalog names that are already
  random baselines (``mobilenet_v2.random``) need no suffix. Random weights are drawn from ``torch.manual_seed(seed)``
  (the caller's RNG state is restored), so a ranking and a later probe see the same random network.

The recommendation is the candidate with the highest LogME: it applies to every candidate (LEEP needs a source
classifier, so it is n/a for random weights, inner layers and sentence encoders), it has no hyperparameter (k-NN has
its k, the H-score its covariance estimate), and it is per sample, so it does not drift with the subsample size.
When LogME is not requested, the first requested metric decides. ``benchmarks/ranking.py`` measures how well each
score's order agrees with the accuracy of probes actually trained.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..backbones.base import Backbone
from ..backbones.tapped import SharedPass, TapBackbone
from ..backbones.taps import resolve_layer
from ..data.base import Dataset, Splits
from ..errors import BackboneError, ConfigError, DataError
from . import scores

__all__ = ["METRICS", "Candidate", "CandidateResult", "RankResult", "build_candidate", "parse_candidate",
           "rank_backbones"]

METRICS: dict[str, str] = {
    "logme": "LogME, mean log evidence of a Bayesian linear model per sample (You et al. 2021)",
    "leep": "LEEP, log expected empirical prediction of the source head (Nguyen et al. 2020); n/a without one",
    "hscore": "H-score with Ledoit-Wolf shrinkage (Bao et al. 2019; Ibrahim et al. 2022)",
    "knn": "k-NN accuracy (k=10, cosine), leave-one-out on the subsample",
}
_TITLES = {"logme": "LogME", "leep": "LEEP", "hscore": "H-score", "knn": "kNN acc"}
_LAYER = r"(-?\d+|\w+(\.\w+)*)"  # a block index or a dotted module path
_LAYERS = re.compile(rf"^{_LAYER}(\+{_LAYER})*$")
_INDEX = re.compile(r"^-?\d+$")
_RANDOM = "~random"


@dataclass(frozen=True)
class Candidate:
    """A parsed candidate: backbone name, layers to tap (``None``: final features) and whether weights are loaded.

    ``layers`` holds block indices as integers and module paths as text, as written.
    """

    text: str
    name: str
    layers: tuple[int | str, ...] | None = None
    pretrained: bool = True


def parse_candidate(text: str) -> Candidate:
    """Parse ``name[~random][@L[+L2...]]`` (see the module docstring).

    Raises:
        BackboneError: an empty name, or an ``@`` suffix that is not a list of block indices or module paths.
    """
    if not isinstance(text, str) or not text.strip():
        raise BackboneError("A candidate backbone name is empty; list names separated by commas, e.g. a,b@3,c.")
    raw = text.strip()
    body = raw
    pretrained = True
    if body.endswith(_RANDOM):
        body, pretrained = body[: -len(_RANDOM)], False
    layers: tuple[int | str, ...] | None = None
    head, at, tail = body.rpartition("@")
    if at:
        if not _LAYERS.match(tail):
            raise BackboneError(
                f"Cannot read the layers in candidate '{raw}'; write name@L or name@L1+L2 with block indices "
                "(negative counts from the end) or module paths, e.g. mobilenet_v2.imagenet@4 or "
                "mobilenet_v2.imagenet@features.7."
            )
        body, layers = head, tuple(int(v) if _INDEX.match(v) else v for v in tail.split("+"))
    if body.endswith(_RANDOM):
        body, pretrained = body[: -len(_RANDOM)], False
    if not body:
        raise BackboneError(f"Candidate '{raw}' has no backbone name before its suffix; e.g. timm:resnet18~random@2.")
    return Candidate(raw, body, layers, pretrained)


def _precheck(cand: Candidate) -> None:
    """Fail fast, before any extraction, on a plain name that is neither in the catalog nor prefixed."""
    from ..backbones import CATALOG, build_backbone

    if cand.name not in CATALOG and ":" not in cand.name:
        build_backbone(cand.name)  # raises the catalog's "unknown backbone, did you mean" error without loading


def build_candidate(cand: Candidate | str, *, seed: int = 0, final: bool = False) -> Backbone:
    """The feature backbone of a candidate (``transferkit.backbones.feature_backbone``), random weights seeded.

    ``final=True`` ignores the candidate's layers and returns the whole network (to share it between candidates).
    """
    from ..backbones import feature_backbone

    c = parse_candidate(cand) if isinstance(cand, str) else cand
    layers = None if final or not c.layers else list(c.layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return feature_backbone(c.name, layers=layers, pretrained=c.pretrained)


def _layer_key(layer: int | str, n_blocks: int) -> int | str:
    """The column key of a layer: a block index counted from the start, or the module path."""
    return layer % n_blocks if isinstance(layer, int) else layer


def _group_source(backbone: Backbone, group: list[Candidate]) -> tuple[Backbone, dict[int | str | None, slice]]:
    """One feature source for all candidates of one network, and the columns of its final features / each layer."""
    n = len(backbone.blocks())
    layers: list[int | str] = []
    for c in group:
        for v in c.layers or ():
            resolve_layer(backbone, v)  # an index out of range or a path that does not exist: the taps' error
            v = _layer_key(v, n)
            if v not in layers:
                layers.append(v)
    wants_final = any(c.layers is None for c in group)
    if not layers:
        return backbone, {None: slice(0, int(backbone.feature_dim))}
    if wants_final:
        shared = SharedPass(backbone, layers)
        source: Backbone = shared
        keys: list[int | str | None] = [None, *layers]
        dims = shared.dims
    else:  # a TapBackbone stops the forward pass after the deepest tapped block
        tapped = TapBackbone(backbone, layers)
        source, keys, dims = tapped, list(layers), tapped.tap_dims
    cols, start = {}, 0
    for key, dim in zip(keys, dims):
        cols[key] = slice(start, start + dim)
        start += dim
    return source, cols


def _columns(feats: np.ndarray, cols: dict[int | str | None, slice], cand: Candidate, n_blocks: int) -> np.ndarray:
    if cand.layers is None:
        return np.asarray(feats[:, cols[None]])
    return np.concatenate([feats[:, cols[_layer_key(v, n_blocks)]] for v in cand.layers], axis=1)


@dataclass
class CandidateResult:
    """Scores of one candidate. ``scores[m]`` is NaN where metric ``m`` does not apply (see ``notes``)."""

    candidate: str
    backbone: str
    layers: list[int | str] | None
    pretrained: bool
    feature_dim: int
    scores: dict[str, float]
    seconds: float
    extract_seconds: float
    score_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "backbone": self.backbone,
            "layers": self.layers,
            "pretrained": self.pretrained,
            "feature_dim": self.feature_dim,
            "scores": {k: (None if math.isnan(v) else v) for k, v in self.scores.items()},
            "seconds": self.seconds,
            "extract_seconds": self.extract_seconds,
            "score_seconds": self.score_seconds,
            "notes": list(self.notes),
        }


@dataclass
class RankResult:
    """The outcome of :func:`rank_backbones`: one :class:`CandidateResult` per candidate, in the order given."""

    data: str
    n_samples: int
    num_classes: int
    metrics: tuple[str, ...]
    recommend_by: str
    candidates: list[CandidateResult]
    seconds: float
    seed: int = 0

    def order(self, metric: str | None = None) -> list[str]:
        """Candidate names from best to worst by ``metric`` (default: the recommendation metric); NaN last."""
        m = metric or self.recommend_by
        if m not in self.metrics:
            raise ConfigError(f"Metric '{m}' was not computed; choose one of {', '.join(self.metrics)}.")
        ranked = sorted(self.candidates, key=lambda c: (math.isnan(c.scores[m]), -np.nan_to_num(c.scores[m])))
        return [c.candidate for c in ranked]

    @property
    def best(self) -> str | None:
        """The recommended candidate: highest score on ``recommend_by`` (LogME by default); ``None`` if all NaN."""
        valid = [c for c in self.candidates if not math.isnan(c.scores[self.recommend_by])]
        return max(valid, key=lambda c: c.scores[self.recommend_by]).candidate if valid else None

    def table(self) -> str:
        """A fixed-width text table, best candidate first (by the recommendation metric)."""
        by_name = {c.candidate: c for c in self.candidates}
        headers = ["#", "candidate", "dim", *(_TITLES[m] for m in self.metrics), "seconds"]
        rows = []
        for i, name in enumerate(self.order(), 1):
            c = by_name[name]
            vals = ["n/a" if math.isnan(c.scores[m]) else f"{c.scores[m]:.4f}" for m in self.metrics]
            rows.append([str(i), c.candidate, str(c.feature_dim), *vals, f"{c.seconds:.1f}"])
        widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(headers)]
        right = {0, 2, *range(3, len(headers))}

        def line(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths)))

        out = [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]
        notes = [f"  {c.candidate}: {n}" for c in self.candidates for n in c.notes]
        if notes:
            out += ["notes:", *notes]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "n_samples": self.n_samples,
            "num_classes": self.num_classes,
            "seed": self.seed,
            "metrics": list(self.metrics),
            "recommend_by": self.recommend_by,
            "best": self.best,
            "order": self.order(),
            "seconds": self.seconds,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def _check_metrics(metrics: Any) -> tuple[str, ...]:
    ms = tuple(metrics.split(",")) if isinstance(metrics, str) else tuple(metrics)
    ms = tuple(m.strip().lower() for m in ms if m.strip())
    bad = [m for m in ms if m not in METRICS]
    if bad or not ms:
        what = f"Unknown ranking metric '{bad[0]}'" if bad else "No ranking metric given"
        raise ConfigError(f"{what}; choose from {', '.join(METRICS)}.")
    return tuple(dict.fromkeys(ms))


def _source_probs(backbone: Any, feats: np.ndarray) -> np.ndarray | None:
    """Softmax of the backbone's source head on its final features, or ``None`` when it has no head."""
    head = backbone.source_head() if hasattr(backbone, "source_head") else None
    if head is None:
        return None
    param = next(iter(head.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    with torch.inference_mode():
        out = []
        for i in range(0, len(feats), 1024):
            x = torch.from_numpy(np.array(feats[i : i + 1024], dtype=np.float32)).to(device)
            out.append(torch.softmax(head.eval()(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _score(
    feats: np.ndarray, labels: np.ndarray, metrics: tuple[str, ...], cand: Candidate, backbone: Backbone, knn_k: int
) -> tuple[dict[str, float], list[str]]:
    """The requested scores of one candidate's features (NaN where one does not apply), and notes saying why."""
    values = {m: float("nan") for m in metrics}
    if not np.all(np.isfinite(feats)):
        return values, ["its features contain NaN or infinite values, so no score applies"]
    notes: list[str] = []
    for m in metrics:
        if m == "logme":
            values[m] = scores.logme(feats, labels)
        elif m == "hscore":
            values[m] = scores.hscore(feats, labels)
        elif m == "knn":
            values[m] = scores.knn_accuracy(feats, labels, k=knn_k)
        elif m == "leep":
            why = "it taps inner layers" if cand.layers else "it has no source classifier"
            try:
                probs = None if cand.layers else _source_probs(backbone, feats)
            except RuntimeError as e:  # a head that does not take the pooled features (e.g. its own pooling)
                probs, why = None, f"its source classifier does not apply to its features ({str(e).splitlines()[0]})"
            if probs is None:
                notes.append(f"LEEP n/a: {why} (LEEP needs the source model's class probabilities)")
            else:
                values[m] = scores.leep(probs, labels)
    return values, notes


def rank_backbones(
    data: Splits | Dataset,
    candidates: list[str],
    *,
    metrics: tuple[str, ...] | list[str] = ("logme", "leep", "hscore", "knn"),
    max_samples: int = 500,
    seed: int = 0,
    image_size: int | None = None,
    engine: str = "auto",
    cache: bool = True,
    progress: bool = False,
    knn_k: int = 10,
) -> RankResult:
    """Score each candidate backbone on ``data`` from frozen features, and recommend the best (highest LogME).

    Args:
        data: :class:`Splits` (the training split is used) or one labelled :class:`Dataset`.
        candidates: candidate names (``name``, ``name@L``, ``name@L1+L2``, ``name~random``; see the module docstring).
        metrics: any of ``logme``, ``leep``, ``hscore``, ``knn``. LEEP is NaN (``n/a``) for a candidate without a
            source classifier on its final features: random weights, inner layers, or a text encoder.
        max_samples: at most this many training examples, chosen by a seeded stratified subsample.
        seed: the subsample's seed, and the seed of randomly initialised candidates.
        image_size, engine, cache, progress: passed to :func:`transferkit.features.extract_features`
            (``image_size`` only for image data).
        knn_k: neighbours of the k-NN score.

    Returns:
        A :class:`RankResult`; ``.table()`` prints it, ``.best`` is the recommendation, ``.to_dict()`` is JSON-able.

    Raises:
        ConfigError: an unknown metric, too few ``max_samples`` or no candidates.
        BackboneError: a candidate name that cannot be read or built.
        DataError: unlabelled data or a single class.
    """
    from ..data import subsample_train

    t_all = time.perf_counter()
    ms = _check_metrics(metrics)
    if isinstance(candidates, str):
        candidates = [c for c in candidates.split(",") if c.strip()]
    if not candidates:
        raise ConfigError("No candidate backbones given; list at least one, e.g. mobilenet_v2.imagenet,minilm-l6.")
    parsed = [parse_candidate(c) for c in candidates]
    if len({c.text for c in parsed}) != len(parsed):
        raise ConfigError("A candidate backbone is listed twice; list each candidate once.")
    for c in parsed:
        _precheck(c)
    train = data.train if isinstance(data, Splits) else data
    if not isinstance(train, Dataset):
        raise DataError("rank_backbones needs a transferkit Dataset or Splits; load one with transferkit.load_data.")
    if train.labels is None:
        raise DataError(f"The training split of '{train.name}' has no labels, so backbones cannot be ranked on it.")
    present = np.unique(train.labels)
    if len(present) < 2:
        raise DataError(f"'{train.name}' has {len(present)} class; ranking needs labelled data with at least two.")
    if int(max_samples) < 2 * len(present):
        raise ConfigError(
            f"max_samples={max_samples} is too small for {len(present)} classes; use at least {2 * len(present)}."
        )
    sub = subsample_train(train, train_size=int(max_samples), seed=seed)
    labels = np.asarray(sub.labels)

    from ..features import extract_features

    kwargs: dict[str, Any] = {"engine": engine, "cache": cache, "progress": progress}
    if sub.modality == "image":
        kwargs["image_size"] = image_size
    groups: dict[tuple[str, bool], list[Candidate]] = {}
    for cand in parsed:
        groups.setdefault((cand.name, cand.pretrained), []).append(cand)
    done: dict[str, CandidateResult] = {}
    for group in groups.values():
        t0 = time.perf_counter()
        backbone = build_candidate(group[0], seed=seed, final=True)
        source, cols = _group_source(backbone, group)
        feats_all = np.asarray(extract_features(source, sub, **kwargs))
        shared = (time.perf_counter() - t0) / len(group)
        n_blocks = len(backbone.blocks())
        for cand in group:
            t1 = time.perf_counter()
            feats = _columns(feats_all, cols, cand, n_blocks)
            values, notes = _score(feats, labels, ms, cand, backbone, knn_k)
            t2 = time.perf_counter()
            done[cand.text] = CandidateResult(
                candidate=cand.text,
                backbone=cand.name,
                layers=list(cand.layers) if cand.layers else None,
                pretrained=cand.pretrained,
                feature_dim=int(feats.shape[1]),
                scores=values,
                seconds=shared + t2 - t1,
                extract_seconds=shared,
                score_seconds=t2 - t1,
                notes=notes,
            )
        del backbone, source
    results = [done[c.text] for c in parsed]
    return RankResult(
        data=train.name,
        n_samples=len(sub),
        num_classes=len(np.unique(labels)),
        metrics=ms,
        recommend_by="logme" if "logme" in ms else ms[0],
        candidates=results,
        seconds=time.perf_counter() - t_all,
        seed=seed,
    )
