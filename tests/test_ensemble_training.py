"""Ensembles trained as such (bagging, boosting, snapshots, SWA) on real data, and fits in parallel processes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferkit.errors import ConfigError

SKADA = "skada-covariate-source"


def _cfg(out, **sets):
    from transferkit.config import RunConfig, apply_overrides

    base = {"data.name": SKADA, "model.backbone": "mlp:2-16", "model.pretrained": False, "train.epochs": 3,
            "train.lr": 0.01, "train.progress": False, "out": str(out)}
    return apply_overrides(RunConfig(), list({**base, **sets}.items()))


def test_snapshot_members_are_the_runs_last_epochs_and_swa_is_one_plain_model(tmp_path):
    from transferkit.api import TransferClassifier
    from transferkit.app.ensemble import train_ensemble
    from transferkit.config import DataConfig
    from transferkit.data import load_data
    from transferkit.ensemble import EnsembleClassifier

    res = train_ensemble(_cfg(tmp_path / "snap"), "snapshot", members=2)
    ens = TransferClassifier.load(res.out)
    assert isinstance(ens, EnsembleClassifier) and ens.names_ == ["epoch-2", "epoch-3"]
    val = load_data(DataConfig(name=SKADA)).val
    # each member is that epoch's weights: its val accuracy is the one the loop logged for the epoch
    got = [m.evaluate(val)["accuracy"] for m in ens.members_]
    assert got == pytest.approx(res.report["val_accuracy_per_epoch"])
    swa = train_ensemble(_cfg(tmp_path / "swa"), "swa", members=2)
    assert type(TransferClassifier.load(swa.out)) is TransferClassifier
    assert json.loads((swa.out / "ensemble.json").read_text())["kind"] == "swa"
    with pytest.raises(ConfigError, match="at least 5 epochs"):
        train_ensemble(_cfg(tmp_path / "x"), "snapshot", members=5)
    with pytest.raises(ConfigError, match="frozen features"):
        train_ensemble(_cfg(tmp_path / "y", **{"model.method": "probe"}), "boosting", members=2)


def test_boosting_weighs_the_rows_the_previous_member_got_wrong(tmp_path):
    from transferkit.api import TransferClassifier
    from transferkit.app.ensemble import train_ensemble

    # a linear model on skada's covariate shift (misspecified): every round leaves errors to boost on
    res = train_ensemble(_cfg(tmp_path / "b", **{"model.backbone": "mlp:2", "train.epochs": 2}), "boosting",
                         members=3)
    rounds = res.report["rounds"]
    assert len(rounds) >= 2 and all(0 < r["weighted_error"] < 0.5 for r in rounds)
    # SAMME: later members face the reweighted (harder) rows, so their weighted error is higher
    assert rounds[1]["weighted_error"] > rounds[0]["weighted_error"]
    ens = TransferClassifier.load(res.out)
    assert ens.how == "vote" and ens.weights == pytest.approx([r["alpha"] for r in rounds])


@pytest.mark.slow
def test_bagging_in_two_processes_gives_the_same_members_as_in_one(tmp_path):
    from transferkit.api import TransferClassifier
    from transferkit.app.ensemble import train_ensemble
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    test = load_data(DataConfig(name=SKADA)).test
    probas = []
    for jobs in (1, 2):
        res = train_ensemble(_cfg(tmp_path / f"j{jobs}", **{"train.epochs": 2}), "bagging", members=2, jobs=jobs)
        ens = TransferClassifier.load(res.out)
        probas.append([m.predict_proba(test) for m in ens.members_])
    for a, b in zip(*probas, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(probas[0][0], probas[0][1])  # bootstrap samples and seeds differ between members
