"""An ensemble as a model: :class:`EnsembleClassifier` and its folder (data only, never code or pickles).

An ensemble folder holds::

    ensemble.json            format, how (average | vote | stack), classes, members, weights, stacker settings,
                             and the evaluation written when it was built (see :mod:`transferkit.ensemble.report`)
    ensemble.md              that evaluation as a table a person reads
    members/<i>-<name>/      each member's own model folder (model.safetensors + model.json), copied inside
    stacker.safetensors      with ``how: stack``: the meta-learner's ``coef`` and ``intercept`` arrays

:class:`EnsembleClassifier` has the estimator surface the commands use (``classes_``, ``predict_proba``,
``predict``, ``evaluate``, ``save``), so ``transferkit predict`` / ``evaluate`` and ``TransferClassifier.load``
treat an ensemble folder like any model: :data:`ENSEMBLE_KIND` is the hook :mod:`transferkit.api` dispatches on
(a folder with ``ensemble.json`` and no ``model.json``). Members are loaded by the loader the caller passes
(``TransferClassifier.load``), so this package stays below the API and knows nothing of how a member predicts.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, RunError
from ..io import write_json, write_text
from .combine import HOWS, Stacker, combine

ENSEMBLE_META = "ensemble.json"
ENSEMBLE_REPORT = "ensemble.md"
STACKER_FILE = "stacker.safetensors"
FORMAT = "transferkit-ensemble/1"


def check_member_classes(members: Sequence[Any], names: Sequence[str]) -> list[str]:
    """The ensemble's classes (the first member's order); refuse members whose label sets differ."""
    first = list(members[0].classes_)
    for m, name in zip(members[1:], names[1:], strict=True):
        if sorted(m.classes_) != sorted(first):
            extra = sorted(set(m.classes_) ^ set(first))[:3]
            raise DataError(f"Member '{name}' was trained on other classes than '{names[0]}' (they differ in "
                            f"{extra}); an ensemble needs members with the same classes.")
    return first


class EnsembleClassifier:
    """Several fitted classifiers combined into one (see the module docstring)."""

    def __init__(self, members: Sequence[Any], names: Sequence[str], how: str = "average", *,
                 weights: Sequence[float] | None = None, stacker: Stacker | None = None,
                 sources: Sequence[str] | None = None) -> None:
        if len(members) < 2:
            raise ConfigError(f"An ensemble needs two or more members, got {len(members)}.")
        if how not in HOWS:
            raise ConfigError(f"Unknown way to combine '{how}'; use one of {', '.join(HOWS)}.")
        if len(names) != len(members):
            raise ConfigError("Give one name per member.")
        self.members_ = list(members)
        self.names_ = [str(n) for n in names]
        self.how = how
        self.weights = None if weights is None else [float(w) for w in weights]
        self.stacker_ = stacker
        self.sources_ = list(sources) if sources is not None else [""] * len(members)
        self.classes_ = check_member_classes(self.members_, self.names_)
        self.report_: dict[str, Any] | None = None

    # --- what the commands use of an estimator -----------------------------------------------------------
    @property
    def model_(self) -> Any:
        """The first member's model (its ``preprocessing`` says what inputs the ensemble takes)."""
        return self.members_[0].model_

    def _dataset(self, X: Any) -> Any:
        from ..data.coerce import as_dataset

        return as_dataset(X, modality=self.model_.preprocessing.modality, classes=self.classes_)

    def member_probas(self, X: Any, *, batch_size: int = 256, progress: bool = False, cache: bool = False
                      ) -> list[np.ndarray]:
        """Each member's probabilities ``(N, C)``, columns in the ensemble's class order."""
        ds = self._dataset(X)
        out = []
        for m in self.members_:
            p = np.asarray(m.predict_proba(ds, batch_size=batch_size, progress=progress, cache=cache))
            order = [list(m.classes_).index(c) for c in self.classes_]
            out.append(p[:, order])
        return out

    def combine(self, probas: Sequence[np.ndarray]) -> np.ndarray:
        """The ensemble's probabilities from its members' (as :meth:`member_probas` returns them)."""
        return combine(self.how, probas, weights=self.weights, stacker=self.stacker_)

    def predict_proba(self, X: Any, *, batch_size: int = 256, progress: bool = False, cache: bool = False
                      ) -> np.ndarray:
        """Class probabilities ``(N, C)`` in the order of ``classes_``."""
        return self.combine(self.member_probas(X, batch_size=batch_size, progress=progress, cache=cache))

    def predict(self, X: Any, **kw: Any) -> np.ndarray:
        """Predicted class names."""
        return np.asarray(self.classes_, dtype=object)[self.predict_proba(X, **kw).argmax(1)]

    def labelled(self, data: Any) -> Any:
        """``data`` as a labelled Dataset whose label indices follow ``classes_``."""
        from ..data.coerce import remap_labels

        ds = self._dataset(data)
        if not ds.is_labelled:
            raise DataError("evaluate() needs labelled data; use predict() for unlabelled inputs.")
        return ds if list(ds.classes) == list(self.classes_) else remap_labels(ds, self.classes_)

    def evaluate(self, data: Any, *, batch_size: int = 256) -> dict[str, Any]:
        """The ensemble's metrics on labelled data (as ``TransferClassifier.evaluate``, plus ``ece``)."""
        from ..evaluate.metrics import classification_metrics, expected_calibration_error

        ds = self.labelled(data)
        proba = self.predict_proba(ds, batch_size=batch_size, cache=True)
        out = classification_metrics(ds.labels, proba, self.classes_)
        out["ece"] = expected_calibration_error(ds.labels, proba)
        return out

    # --- the folder ----------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """What ``ensemble.json`` holds (besides the evaluation)."""
        members = [{"name": n, "folder": f"members/{i}-{_safe(n)}", "source": s}
                   for i, (n, s) in enumerate(zip(self.names_, self.sources_, strict=True))]
        meta: dict[str, Any] = {"format": FORMAT, "kind": "ensemble", "how": self.how, "classes": self.classes_,
                                "members": members, "weights": self.weights}
        if self.stacker_ is not None:
            meta["stacker"] = {"file": STACKER_FILE, "C": self.stacker_.C, "inputs": "members' log-probabilities",
                               "model": "sklearn.linear_model.LogisticRegression"}
        if self.report_ is not None:
            meta["evaluation"] = self.report_
        return meta

    def save(self, folder: str | Path) -> Path:
        """Write the ensemble folder (members copied inside); built next to ``folder`` and renamed into place."""
        from .report import report_markdown

        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            raise RunError(f"'{folder}' already exists and is not empty; choose another folder.")
        tmp = folder.parent / f".{folder.name}.saving"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            self.write_into(tmp)
            if self.report_ is not None:
                write_text(tmp / ENSEMBLE_REPORT, report_markdown(self.report_))
            if folder.exists():
                folder.rmdir()
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def write_into(self, work: Path) -> None:
        """Write members, stacker and ``ensemble.json`` into an existing (partial) folder."""
        from safetensors.numpy import save_file

        from ..io import write_with

        meta = self.meta()
        for m, entry in zip(self.members_, meta["members"], strict=True):
            m.save(work / entry["folder"])
        if self.stacker_ is not None:
            arrays = self.stacker_.arrays()
            write_with(work / STACKER_FILE, lambda tmp: save_file(arrays, str(tmp)))
        write_json(work / ENSEMBLE_META, meta)


def _safe(name: str) -> str:
    """A member name as a folder name: letters, digits, ``._-`` only, at most 40 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:40] or "member"


def is_ensemble_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is an ensemble folder (``ensemble.json`` and no ``model.json`` of its own: a soup, which
    is one plain model, keeps its ``ensemble.json`` report but loads as that model)."""
    folder = Path(folder)
    return (folder / ENSEMBLE_META).is_file() and not (folder / "model.json").is_file()


def read_ensemble_meta(folder: Path) -> dict[str, Any]:
    """``ensemble.json`` checked: every entry the loader reads exists with the right type, member folders inside."""
    path = folder / ENSEMBLE_META

    def damaged(why: str) -> RunError:
        return RunError(f"'{path}' is damaged ({why}); build the ensemble again.")

    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise damaged("it is not valid UTF-8 JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise damaged(f"it is not a {FORMAT} file")
    if meta.get("how") not in HOWS:
        raise damaged(f"'how' must be one of {', '.join(HOWS)}")
    members = meta.get("members")
    if not isinstance(members, list) or len(members) < 2:
        raise damaged("'members' must list two or more members")
    for m in members:
        rel = m.get("folder") if isinstance(m, dict) else None
        if not isinstance(rel, str) or not isinstance(m.get("name"), str):
            raise damaged("each member needs a name and a folder")
        inside = (folder / rel).resolve()
        if Path(rel).is_absolute() or folder.resolve() not in inside.parents:
            raise damaged(f"member folder '{rel}' is outside the ensemble folder")
    weights = meta.get("weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(members)
                                or not all(isinstance(w, int | float) for w in weights)):
        raise damaged("'weights' must be one number per member")
    if meta["how"] == "stack" and not isinstance((meta.get("stacker") or {}).get("C"), int | float):
        raise damaged("a stacking ensemble needs its 'stacker' entry")
    return meta


def load_ensemble(folder: str | Path, load_member: Callable[..., Any], *, trust_code: bool = False
                  ) -> EnsembleClassifier:
    """Rebuild an :class:`EnsembleClassifier` from its folder; each member through ``load_member(path,
    trust_code=...)`` (``TransferClassifier.load``), the meta-learner from its arrays."""
    folder = Path(folder)
    meta = read_ensemble_meta(folder)
    members = [load_member(folder / m["folder"], trust_code=trust_code) for m in meta["members"]]
    names = [m["name"] for m in meta["members"]]
    stacker = None
    if meta["how"] == "stack":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(folder / STACKER_FILE))
        except (SafetensorError, OSError) as e:
            raise RunError(f"'{folder / STACKER_FILE}' cannot be read ({e}); build the ensemble again.") from None
        n_classes = len(members[0].classes_)
        coef = arrays.get("coef")
        if coef is None or "intercept" not in arrays or coef.shape[1] != n_classes * len(members):
            raise RunError(f"'{folder / STACKER_FILE}' does not fit the members; build the ensemble again.")
        stacker = Stacker.from_arrays(arrays, n_classes, float(meta["stacker"]["C"]))
    ens = EnsembleClassifier(members, names, meta["how"], weights=meta.get("weights"), stacker=stacker,
                             sources=[m.get("source", "") for m in meta["members"]])
    ens.report_ = meta.get("evaluation")
    return ens


@dataclass(frozen=True)
class FolderKind:
    """A kind of model folder other than one TransferModel: how to recognise it and how to load it."""

    name: str
    claims: Callable[[str | Path], bool]
    load: Callable[..., Any]  # load(folder, load_member, trust_code=...)


#: The hook :meth:`transferkit.api.TransferClassifier.load` dispatches ensemble folders through.
ENSEMBLE_KIND = FolderKind("ensemble", is_ensemble_folder, load_ensemble)
