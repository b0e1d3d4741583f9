"""Ensembles of transfer models: combining members' predictions, the ensemble folder, and weight averaging.

* :mod:`.combine`: average / vote / stack of the members' probabilities, disagreement (numpy, scikit-learn).
* :mod:`.folder`: :class:`EnsembleClassifier` (an estimator over members) and its folder, plus the folder-kind hook
  :data:`ENSEMBLE_KIND` through which ``TransferClassifier.load`` loads an ensemble folder.
* :mod:`.report`: per-member and ensemble accuracy, macro-F1, ECE and disagreement (``ensemble.json`` / ``.md``).
* :mod:`.weights`: uniform and greedy model soups and SWA (one model's prediction cost).

Training several members (bagging, boosting, snapshots) and combining existing runs is orchestration that needs
the fit pipeline: it lives in :mod:`transferkit.app.ensemble`. This package sits below the API (the API imports
it to dispatch on the folder kind) and imports nothing above the fit pipeline.
"""

from __future__ import annotations

from .combine import HOWS, Stacker, average, disagreement, vote
from .folder import ENSEMBLE_KIND, ENSEMBLE_META, EnsembleClassifier, FolderKind, is_ensemble_folder, load_ensemble

__all__ = ["HOWS", "Stacker", "average", "disagreement", "vote", "ENSEMBLE_KIND", "ENSEMBLE_META",
           "EnsembleClassifier", "FolderKind", "is_ensemble_folder", "load_ensemble"]
