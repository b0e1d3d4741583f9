"""``transferkit ensemble``: combine finished runs, or train an ensemble, into one folder that loads like a model.

Of runs that exist (:func:`ensemble_runs`, ``how``):

* ``average`` / ``vote`` / ``stack``: an :class:`~transferkit.ensemble.EnsembleClassifier` over the runs' models
  (any backbones and methods, same classes). ``stack`` fits its meta-learner on the members' probabilities on
  ``fit_split`` (default ``val``), refusing the training split and any data that overlaps a member's training
  rows (read from the run's ``config.yaml``).
* ``uniform-soup`` / ``greedy-soup``: the members' weights averaged into one plain model folder (members fine-tuned
  from the same source); the greedy soup keeps a member only when ``fit_split`` accuracy does not drop. When the
  members' batch-norm statistics differ (full fine-tunes), ``soup_bn="recompute"`` (the default) re-estimates them
  on the training split's inputs (no labels; at most 2,048 of them, as ``finetune`` recalibrates) for every soup,
  candidates of the greedy soup included; ``"average"`` keeps the members' mean (see
  :mod:`transferkit.ensemble.weights`).

Trained as an ensemble (:func:`train_ensemble`, ``strategy``, from one run configuration):

* ``bagging``: ``members`` fits with seeds ``seed, seed+1, ...``, each on a bootstrap sample of the training split
  (or on all of it with ``bootstrap=False``), averaged; independent, so they run in parallel (``jobs``, ``backend``:
  see :mod:`transferkit.app.parallel`).
* ``boosting``: AdaBoost-SAMME (Zhu et al. 2009): fit ``m`` trains with the loop's per-row sample weights ``w``;
  with its weighted training error ``err``, ``alpha = log((1 - err) / err) + log(K - 1)``, the weights of the rows it
  got wrong are multiplied by ``exp(alpha)``; the ensemble is the alpha-weighted vote. Stops early when a fit is no
  better than chance (``err >= 1 - 1/K``) or perfect (``err = 0``). Sequential by nature.
* ``snapshot``: one run; its last ``members`` epochs' weights (read by the loop's per-epoch hook) averaged as an
  ensemble: several models for the training cost of one.
* ``swa``: the same per-epoch weights averaged in weight space (``torch.optim.swa_utils``) with the batch-norm
  statistics recomputed on the training data: one plain model folder.

Every folder is built in ``.<name>.partial`` and renamed into place (:class:`~transferkit.app.runs.RunFolder`) and
holds ``config.yaml``, ``ensemble.json`` (with the evaluation: per-member and ensemble accuracy, macro-F1, ECE, and
the members' disagreement) and ``ensemble.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DataConfig, RunConfig
from ..errors import ConfigError, DataError

HOW_RUNS = ("average", "vote", "stack", "uniform-soup", "greedy-soup")
SOUPS = ("uniform-soup", "greedy-soup")
SOUP_BN = ("recompute", "average")
STRATEGIES = ("bagging", "boosting", "snapshot", "swa")
_NO_LOOP = ("'{strategy}' needs a method the training loop trains epoch by epoch (sample weights, per-epoch "
            "weights); '{method}' fits in one step without it (on frozen features); use bagging, or finetune.")
#: Share of the stacking data allowed to be in a member's training data (exact duplicates across splits happen).
OVERLAP_LIMIT = 0.01


@dataclass
class EnsembleResult:
    """Where the ensemble folder is, its evaluation and the Markdown table."""

    out: Path
    report: dict[str, Any]
    table: str


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- of runs that exist -----------------------------------------------------------------------------------------
def ensemble_runs(runs: list[str | Path], *, how: str, out: str | Path, data: Any, split: str = "test",
                  fit_split: str = "val", weights: list[float] | None = None, overwrite: bool = False,
                  trust_code: bool = False, soup_bn: str = "recompute") -> EnsembleResult:
    """Combine finished runs (or saved model folders) into the ensemble folder ``out`` (see the module docstring).

    ``data`` (a data set name or path, a DataConfig, or Splits) gives the ``split`` the report is measured on and the
    ``fit_split`` a stacker or greedy soup is fitted on; ``soup_bn`` says what a soup does with batch-norm
    statistics (``recompute`` on the training split, or ``average``).
    """
    from .runs import RunFolder

    if how not in HOW_RUNS:
        raise ConfigError(f"Unknown way to combine '{how}'; use one of {', '.join(HOW_RUNS)}.")
    if len(runs) < 2:
        raise ConfigError(f"An ensemble needs two or more runs, got {len(runs)}.")
    if soup_bn not in SOUP_BN:
        raise ConfigError(f"Unknown soup batch-norm handling '{soup_bn}'; use one of {', '.join(SOUP_BN)}.")
    if weights is not None and (how not in ("average", "vote") or len(weights) != len(runs)):
        raise ConfigError("--weights takes one number per run, with --how average or vote.")
    for r in runs:
        if not Path(r).is_dir():
            raise ConfigError(f"'{r}' is not a run folder; give finished run folders (or folders written by save()).")
    folder = RunFolder(out, overwrite=overwrite)
    config = {"ensemble": {"runs": [str(r) for r in runs], "how": how, "data": _describe(data), "split": split,
                           "fit_split": fit_split, "weights": weights,
                           **({"soup_bn": soup_bn} if how in SOUPS else {})}}
    with folder.hold():
        folder.check(config)
        return _ensemble_runs_in(folder, config, [Path(r) for r in runs], how, data, split, fit_split, weights,
                                 trust_code, soup_bn)


def _ensemble_runs_in(folder: Any, config: dict[str, Any], runs: list[Path], how: str, data: Any, split: str,
                      fit_split: str, weights: list[float] | None, trust_code: bool, soup_bn: str
                      ) -> EnsembleResult:
    from ..api import TransferClassifier
    from ..ensemble import EnsembleClassifier, Stacker
    from ..ensemble.report import ensemble_report

    members = [TransferClassifier.load(r, trust_code=trust_code) for r in runs]
    names = _names(runs)
    splits = _splits(data)
    probe = EnsembleClassifier(members, names, "average")  # checks the classes; gives the members' predictions
    eval_ds = probe.labelled(_split(splits, split))
    if how in SOUPS:
        return _soup(folder, config, members, names, runs, how, probe, eval_ds, split,
                     _split(splits, fit_split) if how == "greedy-soup" else None, fit_split,
                     splits.train if soup_bn == "recompute" else None)
    stacker, extra = None, {}
    if how == "stack":
        if fit_split == split:
            raise ConfigError(f"The stacker would be fitted and measured on the same split ({split}); fit it on "
                              "another split (--fit-split val).")
        fit_ds = _split(splits, fit_split)
        _refuse_training_overlap(runs, names, fit_ds, fit_split)
        fit_ds = probe.labelled(fit_ds)
        _log(f"fitting the stacker on the members' {fit_split} predictions ({len(fit_ds)} examples)")
        stacker = Stacker.fit(probe.member_probas(fit_ds, cache=True), fit_ds.labels, split=fit_split)
        extra = {"stacker_fitted_on": f"{fit_split} split ({len(fit_ds)} examples), C = {stacker.C:g}"}
    ens = EnsembleClassifier(members, names, how, weights=weights, stacker=stacker, sources=[str(r) for r in runs])
    probas = ens.member_probas(eval_ds, cache=True)
    ens.report_ = ensemble_report(names, probas, ens.combine(probas), eval_ds.labels, ens.classes_, split=split,
                                  how=how, extra=extra)
    return _write_ensemble(folder, config, ens)


def _soup(folder: Any, config: dict[str, Any], members: list[Any], names: list[str], runs: list[Path], how: str,
          probe: Any, eval_ds: Any, split: str, fit_ds: Any, fit_split: str, bn_data: Any) -> EnsembleResult:
    """Average the members' weights (uniform or greedy) into one plain model folder with an ``ensemble.json``;
    with ``bn_data`` (the training split) batch-norm statistics that differ between members are re-estimated."""
    from ..ensemble.report import ensemble_report
    from ..ensemble.weights import batch_norm_differs, check_same_architecture, greedy_soup, uniform_soup

    if any(not hasattr(m, "model_") or hasattr(m, "members_") for m in members):
        raise ConfigError("A soup averages single models; an ensemble folder cannot be a soup member.")
    models = [m.model_ for m in members]
    check_same_architecture(models, names)
    has_bn = any(k.endswith("running_mean") for k in models[0].state_dict())
    finish, bn_note = None, ("the members' own (they share them)" if has_bn else "none (no batch-norm layers)")
    if batch_norm_differs(models):
        if bn_data is None:
            bn_note = "averaged with the weights (--soup-bn average)"
        else:
            finish, bn_note = _bn_recalibration(bn_data)
    extra: dict[str, Any] = {"batch_norm_statistics": bn_note}
    if how == "uniform-soup":
        model, chosen = uniform_soup(models, names, finish), list(range(len(models)))
    else:
        if fit_split == split:
            raise ConfigError(f"The greedy soup would choose and be measured on the same split ({split}); choose on "
                              "another split (--fit-split val).")
        fit_ds = probe.labelled(fit_ds)
        model, chosen, trace = greedy_soup(models, names, lambda m: _accuracy(members[0], m, fit_ds), finish)
        extra.update({"chosen_on": f"{fit_split} split ({len(fit_ds)} examples)", "greedy_trace": trace})
    soup = copy.copy(members[chosen[0]])
    soup.model_ = model
    probas = probe.member_probas(eval_ds, cache=True)
    report = ensemble_report(names, probas, soup.predict_proba(eval_ds), eval_ds.labels, probe.classes_,
                             split=split, how=how, extra={"members_in_soup": [names[i] for i in chosen], **extra})
    work = folder.start(config)
    soup.save(work)
    _write_meta(work, how, names, [str(r) for r in runs], report, kind="soup")
    _finish_report(work)
    out = folder.finalize()
    return EnsembleResult(out, report, _table(report))


def _bn_recalibration(train: Any) -> tuple[Any, str]:
    """The soup's ``finish`` step that re-estimates batch-norm statistics on (a seeded subsample of) ``train``'s
    inputs, as ``finetune`` recalibrates them, and the note the report keeps about it."""
    from ..data.loaders import make_loader
    from ..data.sampling import subsample
    from ..methods import finetune as ft

    if train is None or not len(train):
        raise DataError("Re-estimating the soup's batch-norm statistics needs the training split of --data; give "
                        "data with one, or keep the members' mean with --soup-bn average.")
    ds = subsample(train, ft.RECALIBRATION_SAMPLES, seed=0, stream=ft.RECALIBRATION_STREAM)

    def finish(model: Any) -> None:
        loader = make_loader(ds, model.preprocessing, image_size=model.image_size, train=False,
                             batch_size=ft.RECALIBRATION_BATCH)
        ft.recalibrate_norm_statistics(model, loader)

    return finish, f"re-estimated on {len(ds)} training inputs (the members' differ)"


def _accuracy(like: Any, model: Any, ds: Any) -> float:
    """Accuracy of ``model`` on ``ds``, predicting as the estimator ``like`` does (a frozen backbone through the
    feature cache, so a greedy soup of heads on one frozen backbone extracts the features once)."""
    est = copy.copy(like)
    est.model_ = model
    return float(np.mean(est.predict_proba(ds, cache=True).argmax(1) == ds.labels))


def _refuse_training_overlap(runs: list[Path], names: list[str], fit_ds: Any, fit_split: str) -> None:
    """Refuse stacking data that a member was trained on (from its run's ``config.yaml``; see the module doc)."""
    from ..config import load_yaml
    from ..data import load_data

    if fit_split == "train":
        raise DataError("Stacking must be fitted on data the members were not trained on, not on the training split; "
                        "use the validation split (--fit-split val) or out-of-fold predictions.")
    keys = _row_keys(fit_ds)
    for run, name in zip(runs, names, strict=True):
        cfg_path = run / "config.yaml"
        if not cfg_path.is_file():
            warnings.warn(f"'{run}' has no config.yaml, so it cannot be checked that member '{name}' was not trained "
                          "on the stacking data; make sure it was not.", stacklevel=3)
            continue
        train_keys = set(_row_keys(load_data(load_yaml(cfg_path).data).train))
        share = float(np.mean([k in train_keys for k in keys]))
        if share > OVERLAP_LIMIT:
            raise DataError(f"{100 * share:.0f}% of the stacking data ({fit_split} split) is in the training data of "
                            f"member '{name}'; fit the stacker on data no member was trained on (a validation "
                            "split or out-of-fold predictions).")


def _row_keys(ds: Any) -> list[str]:
    """One key per example (a hash of an array row, or the path or text itself), to compare data sets by rows."""
    if isinstance(ds.inputs, np.ndarray):
        return [hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest() for r in ds.inputs]
    return [str(x) for x in ds.inputs]


# --- trained as an ensemble ---------------------------------------------------------------------------------------
def train_ensemble(cfg: RunConfig, strategy: str, *, members: int = 5, jobs: int = 1, backend: str = "local",
                   bootstrap: bool = True) -> EnsembleResult:
    """Train ``members`` models as ``strategy`` says (see the module docstring) into the folder ``cfg.out``."""
    from .parallel import check_backend
    from .runs import RunFolder

    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown ensemble strategy '{strategy}'; use one of {', '.join(STRATEGIES)}.")
    if isinstance(members, bool) or not isinstance(members, int) or members < 2:
        raise ConfigError(f"An ensemble needs two or more members, got {members!r}.")
    check_backend(backend, jobs)
    if strategy in ("snapshot", "swa") and cfg.train.epochs < members:
        raise ConfigError(f"'{strategy}' takes the last {members} epochs of one run, but train.epochs is "
                          f"{cfg.train.epochs}; train for at least {members} epochs.")
    if cfg.target is not None:
        raise ConfigError("Ensembles of domain-adaptation runs are not supported; remove the target section.")
    config = {**cfg.to_dict(), "ensemble": {"strategy": strategy, "members": members, "bootstrap": bootstrap}}
    folder = RunFolder(cfg.out, overwrite=cfg.overwrite)
    with folder.hold():
        folder.check(config)
        return _train_in(folder, config, cfg, strategy, members, jobs, backend, bootstrap)


def _train_in(folder: Any, config: dict[str, Any], cfg: RunConfig, strategy: str, k: int, jobs: int, backend: str,
              bootstrap: bool) -> EnsembleResult:
    from ..data import load_data
    from ..ensemble import EnsembleClassifier
    from ..ensemble.report import ensemble_report

    splits = load_data(cfg.data)
    split = "test" if splits.test is not None and len(splits.test) else "val"
    params = {**dataclasses.asdict(cfg.model), **dataclasses.asdict(cfg.train), "progress": False}
    work = folder.start(config)
    t0 = time.perf_counter()
    if strategy == "bagging":
        ests, names, extra = _bagging(work, params, splits, k, jobs, backend, bootstrap)
        how, weights = "average", None
    elif strategy == "boosting":
        ests, names, extra = _boosting(params, splits, k)
        how, weights = "vote", extra["alphas"]
    else:
        ests, names, extra, swa_est = _snapshots(params, splits, k, swa=strategy == "swa")
        how, weights = "average", None
    extra = {"strategy": strategy, "train_seconds": round(time.perf_counter() - t0, 1), **extra}
    ens = EnsembleClassifier(ests, names, how, weights=weights)
    eval_ds = ens.labelled(getattr(splits, split))
    probas = ens.member_probas(eval_ds, cache=True)
    if strategy == "swa":
        report = ensemble_report(names, probas, swa_est.predict_proba(eval_ds), eval_ds.labels, ens.classes_,
                                 split=split, how="swa", extra=extra)
        swa_est.save(work)
        _write_meta(work, "swa", names, [], report, kind="swa")
        _finish_report(work)
        out = folder.finalize()
        return EnsembleResult(out, report, _table(report))
    ens.report_ = ensemble_report(names, probas, ens.combine(probas), eval_ds.labels, ens.classes_, split=split,
                                  how=how, extra=extra)
    shutil.rmtree(work / "fits", ignore_errors=True)
    return _write_ensemble(folder, None, ens, started=work)


def fit_member(params: dict[str, Any], train: Any, val: Any, out: str) -> dict[str, Any]:
    """One independent member fit (a worker's job): train, save the model to ``out``, return its record."""
    from ..api import TransferClassifier

    t0 = time.perf_counter()
    est = TransferClassifier(**params).fit(train, val=val)
    est.save(out)
    return {"seed": params["seed"], "best_epoch": est.fit_result_.best_epoch,
            "seconds": round(time.perf_counter() - t0, 1)}


def _bagging(work: Path, params: dict[str, Any], splits: Any, k: int, jobs: int, backend: str, bootstrap: bool
             ) -> tuple[list[Any], list[str], dict[str, Any]]:
    from ..api import TransferClassifier
    from .parallel import run_parallel

    train = splits.train
    calls = []
    for i in range(k):
        seed = params["seed"] + i
        if bootstrap:
            idx = np.random.default_rng(seed).integers(0, len(train), len(train))
            sample = train.subset(idx, name=f"{train.name} bootstrap {i}")
        else:
            sample = train
        calls.append({"params": {**params, "seed": seed}, "train": sample, "val": splits.val,
                      "out": str(work / "fits" / str(i))})

    def done(i: int, rec: dict[str, Any]) -> None:
        _log(f"[member {i + 1}/{k}] seed {rec['seed']} trained in {rec['seconds']:.0f} s")

    _log(f"bagging: {k} fits ({'bootstrap samples' if bootstrap else 'all the data'}, seeds "
         f"{params['seed']}..{params['seed'] + k - 1}) with {jobs} job(s)")
    records = run_parallel(fit_member, calls, jobs=jobs, backend=backend, on_done=done)
    ests = [TransferClassifier.load(c["out"]) for c in calls]
    return ests, [f"bag-{i}-seed{r['seed']}" for i, r in enumerate(records)], {"fits": records,
                                                                                "bootstrap": bootstrap}


def _boosting(params: dict[str, Any], splits: Any, k: int) -> tuple[list[Any], list[str], dict[str, Any]]:
    """AdaBoost-SAMME over fits trained with the loop's sample weights (see the module docstring)."""
    from ..api import TransferClassifier
    from ..config import split_hyperparameters
    from ..ensemble.combine import samme_step
    from ..pipeline import FitPipeline

    train = splits.train
    n, n_classes = len(train), len(train.classes)
    w = np.full(n, 1.0 / n)
    ests, alphas, trace = [], [], []
    for m in range(k):
        model_cfg, train_cfg = split_hyperparameters({**params, "seed": params["seed"] + m})
        pipe = FitPipeline(model_cfg, train_cfg)
        prepared = pipe.prepare(train, val=splits.val)
        prepared.sample_weights = w * n  # mean 1: the loop draws rows in proportion to them
        epochs: list[dict[str, Any]] = []
        est = TransferClassifier.from_fitted(pipe.run(prepared, on_epoch_end=epochs.append))
        if not epochs:
            raise ConfigError(_NO_LOOP.format(strategy="boosting", method=model_cfg.method))
        miss = est.predict_proba(train, cache=False).argmax(1) != train.labels
        err, alpha, new_w = samme_step(w, miss, n_classes)
        if err >= 1.0 - 1.0 / n_classes:
            _log(f"[boost {m + 1}/{k}] weighted error {err:.3f} is no better than chance; stopping")
            if not ests:
                ests, alphas = [est], [1.0]
            trace.append({"round": m + 1, "weighted_error": err, "alpha": None})
            break
        ests.append(est)
        alphas.append(alpha)
        trace.append({"round": m + 1, "weighted_error": err, "alpha": alpha})
        _log(f"[boost {m + 1}/{k}] weighted training error {err:.4f}, alpha {alpha:.3f}")
        if err == 0.0:
            _log("a perfect fit of the weighted training data: later rounds would repeat it; stopping")
            break
        w = new_w
    if len(ests) < 2:
        raise DataError(f"Boosting kept {len(ests)} member(s) (see the weighted errors: {trace}); a fit that is "
                        "perfect on the training data or no better than chance leaves nothing to boost. Use fewer "
                        "epochs or a weaker method, or bagging.")
    return ests, [f"boost-{i + 1}" for i in range(len(ests))], {"alphas": alphas, "rounds": trace}


def _snapshots(params: dict[str, Any], splits: Any, k: int, *, swa: bool
               ) -> tuple[list[Any], list[str], dict[str, Any], Any]:
    """One run; the weights of its last ``k`` epochs as members (and, with ``swa``, their SWA average)."""
    from ..api import TransferClassifier
    from ..config import split_hyperparameters
    from ..data.loaders import make_loader
    from ..ensemble.weights import swa_average
    from ..pipeline import FitPipeline

    model_cfg, train_cfg = split_hyperparameters(params)
    pipe = FitPipeline(model_cfg, train_cfg)
    prepared = pipe.prepare(splits.train, val=splits.val)
    states: list[dict[str, Any]] = []

    def keep(row: dict[str, Any]) -> None:
        states.append({k_: v.detach().to("cpu", copy=True) for k_, v in prepared.model.state_dict().items()})
        del states[:-k]

    _log(f"training {model_cfg.method} on {model_cfg.backbone} for {train_cfg.epochs} epochs; keeping the last {k}")
    fitted = pipe.run(prepared, on_epoch_end=keep)
    if not states:
        raise ConfigError(_NO_LOOP.format(strategy="swa" if swa else "snapshot", method=model_cfg.method))
    final = fitted.model
    if set(states[-1]) != set(final.state_dict()):
        raise ConfigError(f"Method '{model_cfg.method}' changes the model after training (its per-epoch weights are "
                          "not the saved model's), so its epochs cannot be snapshots; use finetune or bagging.")
    first = train_cfg.epochs - len(states) + 1
    ests, names = [], []
    for i, state in enumerate(states):
        model = copy.deepcopy(final)
        model.load_state_dict(state)
        est = TransferClassifier.from_fitted(fitted)
        est.model_ = model.eval()
        ests.append(est)
        names.append(f"epoch-{first + i}")
    kept = fitted.history[first - 1:]
    extra: dict[str, Any] = {"epochs": [first + i for i in range(len(states))], "best_epoch": fitted.result.best_epoch,
                             "val_accuracy_per_epoch": [row.get("val_accuracy") for row in kept]}
    swa_est = None
    if swa:
        pre = final.preprocessing

        def batches() -> Any:
            return make_loader(splits.train, pre, image_size=final.image_size, train=False,
                               batch_size=train_cfg.batch_size)

        swa_est = TransferClassifier.from_fitted(fitted)
        swa_est.model_ = swa_average(final, states, batches)
    return ests, names, extra, swa_est


# --- writing ------------------------------------------------------------------------------------------------------
def _write_ensemble(folder: Any, config: dict[str, Any] | None, ens: Any, started: Path | None = None
                    ) -> EnsembleResult:
    from ..ensemble.folder import ENSEMBLE_REPORT
    from ..ensemble.report import report_markdown
    from ..io import write_text

    work = started if started is not None else folder.start(config)
    ens.write_into(work)
    table = report_markdown(ens.report_)
    write_text(work / ENSEMBLE_REPORT, table)
    _finish_report(work)
    out = folder.finalize()
    return EnsembleResult(out, ens.report_, table)


def _write_meta(work: Path, how: str, names: list[str], sources: list[str], report: dict[str, Any], *, kind: str
                ) -> None:
    """``ensemble.json`` / ``ensemble.md`` of a folder that holds one plain model (a soup, SWA)."""
    from ..ensemble.folder import ENSEMBLE_META, ENSEMBLE_REPORT, FORMAT
    from ..ensemble.report import report_markdown
    from ..io import write_json, write_text

    members = [{"name": n, "source": s} for n, s in zip(names, sources or [""] * len(names), strict=True)]
    write_json(work / ENSEMBLE_META, {"format": FORMAT, "kind": kind, "how": how, "members": members,
                                      "evaluation": report,
                                      "note": "one model (model.json): it loads and predicts like any model"})
    write_text(work / ENSEMBLE_REPORT, report_markdown(report))


def _finish_report(work: Path) -> None:
    """``environment.json`` and ``report.html`` in the partial folder, so they appear with it."""
    from ..report import finish_ensemble_folder

    finish_ensemble_folder(work)


def _table(report: dict[str, Any]) -> str:
    from ..ensemble.report import report_markdown

    return report_markdown(report)


def _names(runs: list[Path]) -> list[str]:
    names: list[str] = []
    for r in runs:
        base = r.resolve().name or "run"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def _describe(data: Any) -> Any:
    if isinstance(data, str | Path):
        return str(data)
    if isinstance(data, DataConfig):
        return dataclasses.asdict(data)
    return type(data).__name__


def _splits(data: Any) -> Any:
    from ..data import load_data, resolve_data_arg
    from ..data.coerce import as_splits

    if isinstance(data, str | Path):
        return load_data(resolve_data_arg(data))
    if isinstance(data, DataConfig):
        return load_data(data)
    return as_splits(data)


def _split(splits: Any, name: str) -> Any:
    if name not in ("train", "val", "test"):
        raise ConfigError(f"Unknown split '{name}'; use train, val or test.")
    ds = getattr(splits, name)
    if ds is None or not len(ds):
        raise DataError(f"The data has no {name} split; choose another split.")
    return ds
