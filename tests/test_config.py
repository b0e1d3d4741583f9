"""The config schema: unknown keys with suggestions, type coercion, overrides, the flat estimator view."""

from __future__ import annotations

import pytest

from transferkit.config import (
    RunConfig,
    apply_overrides,
    hyperparameter_names,
    load_yaml,
    split_hyperparameters,
)
from transferkit.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {name: mnist}\nmodel: {backbone: minilm-l6, image_size: 32}\ntrain: {lr: 3e-4, epochs: 2}\n")
    cfg = load_yaml(p)
    assert cfg.data.name == "mnist"
    assert cfg.model.image_size == 32
    assert cfg.train.lr == pytest.approx(3e-4)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_suggests_closest(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  learning_rat: 0.1\n  epochs: 2\n")
    with pytest.raises(ConfigError, match="train.learning_rat"):
        load_yaml(p)
    p.write_text("train:\n  epoch: 2\n")
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        load_yaml(p)
    p.write_text("trian:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_yaml(p)


def test_overrides_coerce_types_and_refuse_unknown():
    cfg = apply_overrides(RunConfig(), ["train.lr=3e-4", "train.epochs=5", "model.head=mlp", "train.grad_clip=null"])
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.epochs == 5 and cfg.model.head == "mlp"
    assert cfg.train.grad_clip is None
    with pytest.raises(ConfigError, match="did you mean 'train.batch_size'"):
        apply_overrides(RunConfig(), ["train.batchsize=3"])
    with pytest.raises(ConfigError, match="whole number"):
        apply_overrides(RunConfig(), ["train.epochs=many"])
    with pytest.raises(ConfigError, match="must be one of"):
        apply_overrides(RunConfig(), ["train.optimizer=adam"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(RunConfig(), ["train.lr"])


def test_method_params_accept_free_keys():
    cfg = apply_overrides(RunConfig(), ["model.method_params.alpha=0.1"])
    assert cfg.model.method_params == {"alpha": 0.1}


def test_ranges_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="positive"):
        apply_overrides(RunConfig(), ["train.epochs=0"])
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        apply_overrides(RunConfig(), ["data.val_fraction=1.5"])


def test_invalid_yaml_is_one_sentence(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: [epochs: 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_flat_hyperparameters_split():
    m, t = split_hyperparameters({"backbone": "minilm-l6", "lr": 0.01, "freeze_blocks": 2})
    assert m.backbone == "minilm-l6" and t.lr == 0.01 and t.freeze_blocks == 2
    assert "backbone" in hyperparameter_names() and "epochs" in hyperparameter_names()
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        split_hyperparameters({"epoch": 3})
