"""Domain adaptation through the estimator and app.fit.run_fit: target data, source selection, label-free validators."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferkit import TransferClassifier
from transferkit.config import DataConfig, RunConfig, load_yaml
from transferkit.data import load_data
from transferkit.data.base import Dataset, Splits
from transferkit.errors import ConfigError, DataError

VALIDATORS = {"iw_val_accuracy", "iw_val_loss", "dev_val_loss", "snd", "im"}
# logistic regression (the linear head on mlp:2's identity features): misspecified on skada's covariate shift
LOGREG = dict(backbone="mlp:2", pretrained=False, lr=0.05, batch_size=64, progress=False, schedule="constant",
              warmup_fraction=0.0)


@pytest.fixture(scope="module")
def pair() -> tuple[Splits, Splits]:
    return (load_data(DataConfig(name="skada-covariate-source")), load_data(DataConfig(name="skada-covariate-target")))


def test_fit_with_a_target_adds_the_validators_to_the_history(pair):
    src, tgt = pair
    clf = TransferClassifier(epochs=2, iw_validators=True, **LOGREG).fit(src, target=tgt)
    assert len(clf.history_) == 2
    row = clf.history_[-1]
    assert VALIDATORS | {"target_accuracy", "val_accuracy"} <= set(row)
    assert 0 <= row["target_accuracy"] <= 1 and row["snd"] > 0 and 0 <= row["im"] <= np.log(2) + 1e-9
    assert clf.selection_ is None  # source_selection: none (the weights only feed the validators)
    # an unlabelled target gives every label-free validator but not the oracle
    clf2 = TransferClassifier(epochs=1, iw_validators=True, **LOGREG).fit(src, target=tgt.train.unlabelled())
    assert VALIDATORS <= set(clf2.history_[0]) and "target_accuracy" not in clf2.history_[0]
    # by default (the monitor reads none of them) the importance-weighted ones are not computed
    clf3 = TransferClassifier(epochs=1, **LOGREG).fit(src, target=tgt)
    assert {"snd", "im"} <= set(clf3.history_[0]) and not {"iw_val_accuracy", "dev_val_loss"} & set(clf3.history_[0])


def test_monitor_snd_chooses_the_epoch_with_the_highest_snd(pair):
    src, tgt = pair
    clf = TransferClassifier(epochs=3, monitor="snd", **LOGREG).fit(src, target=tgt)
    snd = [r["snd"] for r in clf.history_]
    assert clf.fit_result_.best_epoch == int(np.argmax(snd)) + 1


def test_source_selection_weight_keep_and_tradaboost_run(pair):
    src, tgt = pair
    w = TransferClassifier(epochs=3, source_selection="weight", monitor="iw_val_loss", **LOGREG).fit(src, target=tgt)
    assert w.selection_.mode == "weight" and w.selection_.weights.mean() == pytest.approx(1.0)
    assert w.selection_.domain_auc > 0.8  # skada's covariate shift is visible to the domain classifier
    assert w.fit_result_.best_epoch == int(np.argmin([r["iw_val_loss"] for r in w.history_])) + 1  # minimised
    k = TransferClassifier(epochs=1, source_selection="keep", selection_fraction=0.25, **LOGREG).fit(src, target=tgt)
    assert len(k.selection_.keep) == round(0.25 * len(src.train))
    assert k.selection_.summary()["n_kept"] == len(k.selection_.keep)
    t = TransferClassifier(epochs=1, source_selection="tradaboost", target_labels_per_class=3, **LOGREG)
    t.fit(src, target=tgt)
    assert len(t.selection_.target_weights) == 6  # 3 labelled target examples per class joined the training set


@pytest.mark.slow
def test_importance_weighting_beats_unweighted_training_on_the_target(pair):
    """The real-data claim through the API: logistic regression on skada's covariate shift, one seed."""
    src, tgt = pair
    acc = {}
    for sel in ("none", "weight"):
        clf = TransferClassifier(epochs=10, source_selection=sel, monitor="iw_val_loss", **LOGREG)
        acc[sel] = clf.fit(src, target=tgt).evaluate(tgt.test)["accuracy"]
    assert acc["weight"] > acc["none"] + 0.03, acc


def test_target_oracle_trains_on_the_labelled_target(pair):
    src, tgt = pair
    clf = TransferClassifier(epochs=2, method="target-oracle", **LOGREG).fit(src, target=tgt)
    assert clf.evaluate(tgt.test)["accuracy"] > 0.9  # the target alone is easy for a linear model
    with pytest.raises(ConfigError, match="labelled target"):
        TransferClassifier(epochs=1, method="target-oracle", **LOGREG).fit(src)


def test_target_labels_reach_methods_only_as_allowed(pair, monkeypatch):
    from transferkit.methods.base import Method

    seen: dict[str, Dataset] = {}
    original = Method.setup

    def spy(self, ctx):
        seen.update(ctx.extra)
        return original(self, ctx)

    monkeypatch.setattr(Method, "setup", spy)
    src, tgt = pair
    TransferClassifier(epochs=1, target_labels_per_class=2, **LOGREG).fit(src, target=tgt)
    assert seen["target"].labels is None and len(seen["target"]) == len(tgt.train)
    assert "target_oracle" not in seen  # finetune may not see the target's labels
    labelled = seen["target_labelled"]
    assert labelled.is_labelled and np.bincount(labelled.labels).tolist() == [2, 2]


def test_adaptation_settings_without_what_they_need_are_refused(pair):
    src, tgt = pair
    with pytest.raises(ConfigError, match="monitor 'snd' needs target data"):
        TransferClassifier(epochs=1, monitor="snd", **LOGREG).fit(src)
    with pytest.raises(ConfigError, match="source_selection 'weight' needs target data"):
        TransferClassifier(epochs=1, source_selection="weight", **LOGREG).fit(src)
    with pytest.raises(ConfigError, match="needs a source validation split"):
        TransferClassifier(epochs=1, monitor="iw_val_accuracy", **LOGREG).fit(src.train, target=tgt)
    with pytest.raises(ConfigError, match="needs labelled target data"):
        TransferClassifier(epochs=1, monitor="target_accuracy", **LOGREG).fit(src, target=tgt.train.unlabelled())
    with pytest.raises(DataError, match="same kind of data"):
        TransferClassifier(epochs=1, **LOGREG).fit(src, target=Dataset("text", ["a", "b"], None, ["0", "1"]))
    other = Dataset("tabular", tgt.train.inputs, tgt.train.labels, ["0", "2"])
    with pytest.raises(DataError, match="classes the source lacks"):
        TransferClassifier(epochs=1, **LOGREG).fit(src, target=other)


def test_bad_adaptation_hyperparameters_give_one_sentence_errors():
    with pytest.raises(ConfigError, match="'train.source_selection' is 'wieght' but must be one of"):
        TransferClassifier(source_selection="wieght")
    with pytest.raises(ConfigError, match="'train.selection_clip' must be at least 1"):
        TransferClassifier(selection_clip=0.5)
    with pytest.raises(ConfigError, match=r"'train.selection_fraction' must be in \(0, 1\]"):
        TransferClassifier(selection_fraction=1.5)
    with pytest.raises(ConfigError, match="tradaboost needs a few labelled target examples"):
        TransferClassifier(source_selection="tradaboost")
    with pytest.raises(ConfigError, match="'train.monitor' is 'snnd' but must be one of"):
        TransferClassifier(monitor="snnd")
    with pytest.raises(ConfigError, match="'train.selection_on' is 'pixels'"):
        TransferClassifier(selection_on="pixels")
    with pytest.raises(ConfigError, match="whole number"):
        TransferClassifier(target_labels_per_class="two")


def test_yaml_target_section(tmp_path):
    p = tmp_path / "da.yaml"
    p.write_text("data: {name: skada-covariate-source}\ntarget: {name: skada-covariate-target}\n"
                 "train: {source_selection: keep, monitor: im}\n")
    cfg = load_yaml(p)
    assert cfg.target.name == "skada-covariate-target" and cfg.train.source_selection == "keep"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    p.write_text("data: {name: skada-covariate-source}\ntarget: {nmae: skada-covariate-target}\n")
    with pytest.raises(ConfigError, match="Unknown config key 'target.nmae'.*did you mean 'target.name'"):
        load_yaml(p)


def test_run_fit_with_a_target_writes_target_metrics_and_validator_columns(tmp_path):
    from transferkit.app.fit import run_fit

    cfg = RunConfig.from_dict({
        "data": {"name": "skada-covariate-source"}, "target": {"name": "skada-covariate-target"},
        "model": {"backbone": "mlp:2", "pretrained": False},
        "train": {"epochs": 2, "lr": 0.05, "progress": False, "source_selection": "weight", "monitor": "iw_val_loss"},
        "out": str(tmp_path / "run"),
    })
    res = run_fit(cfg)
    metrics = json.loads((res.out / "metrics.json").read_text())
    assert {"val", "test", "target_val", "target_test"} <= set(metrics)
    header = (res.out / "history.csv").read_text().splitlines()[0].split(",")
    assert VALIDATORS | {"target_accuracy"} <= set(header)
    summary = json.loads((res.out / "summary.json").read_text())
    assert summary["selection"]["mode"] == "weight" and summary["data_sizes"]["target_train"] == 720
    again = load_yaml(res.out / "config.yaml")
    assert again.target.name == "skada-covariate-target"


@pytest.mark.slow
def test_image_target_selects_on_frozen_features_of_the_model_backbone(blobs_images):
    from transferkit.data import from_arrays

    x, y = blobs_images
    names = np.array(["a", "b", "c"])[y]
    src = from_arrays(x, names, modality="image")
    tgt = from_arrays(np.clip(x.astype(int) + 60, 0, 255).astype(np.uint8), names, modality="image")  # brighter
    clf = TransferClassifier(backbone="module:tests.tiny:make_tiny", pretrained=False, image_size=16, epochs=2,
                             batch_size=16, progress=False, source_selection="keep", monitor="im")
    with pytest.warns(UserWarning, match="almost perfectly separable"):
        clf.fit(Splits(src.subset(range(45)), src.subset(range(45, 60))), target=tgt)
    assert clf.selection_.on == "features" and len(clf.selection_.keep) == 22
    assert VALIDATORS | {"target_accuracy"} <= set(clf.history_[-1])


def test_feature_head_methods_take_keep_but_not_the_validator_monitors(pair):
    src, tgt = pair
    with pytest.raises(ConfigError, match="cannot monitor 'snd'"):
        TransferClassifier(method="probe", monitor="snd", **LOGREG).fit(src, target=tgt)
    clf = TransferClassifier(method="probe", source_selection="keep", **LOGREG).fit(src, target=tgt)
    assert len(clf.selection_.keep) == len(src.train) // 2  # keep mode applies to a feature method too
    with pytest.warns(UserWarning, match="takes no sample weights"):
        TransferClassifier(method="probe", source_selection="weight", **LOGREG).fit(src, target=tgt)
