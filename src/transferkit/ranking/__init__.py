"""Backbone ranking: score candidate backbones (and layers) on the target data without training them.

:func:`rank_backbones` extracts frozen features of a small stratified subsample once per candidate and scores them
with LogME, LEEP (where the backbone has a source classifier), H-score and k-NN accuracy (:mod:`.scores`), and
recommends the candidate with the highest LogME. The command line is ``transferkit rank --data D --backbones a,b,c``.
"""

from __future__ import annotations

from .rank import (
    METRICS,
    Candidate,
    CandidateResult,
    RankResult,
    build_candidate,
    parse_candidate,
    rank_backbones,
)
from .scores import hscore, knn_accuracy, leep, logme

__all__ = [
    "METRICS",
    "Candidate",
    "CandidateResult",
    "RankResult",
    "build_candidate",
    "hscore",
    "knn_accuracy",
    "leep",
    "logme",
    "parse_candidate",
    "rank_backbones",
]
