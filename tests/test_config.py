"""The config schema: unknown keys with suggestions, type coercion, overrides, the flat estimator view."""

from __future__ import annotations

import dataclasses

import pytest

from transferkit.config import (
    Constraint,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    constraint_of,
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


def _constrained_settings() -> list[tuple[str, object]]:
    """Every (section.key, value breaking its declared constraint) of the data, model and train sections."""
    out = []
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
        for f in dataclasses.fields(cls):
            c = constraint_of(f)
            if c is not None:
                out.append((f"{section}.{f.name}", c.violation()))
    return out


@pytest.mark.parametrize("key, bad", _constrained_settings(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_declared_setting_constraint_is_enforced(key: str, bad: object) -> None:
    """A rule written in a field's metadata is a rule: through --set, and through the estimator's hyperparameters."""
    with pytest.raises(ConfigError, match=f"'{key}' (must be|is )") as err:
        apply_overrides(RunConfig(), [(key, bad)])
    assert "\n" not in str(err.value)
    if not key.startswith("data."):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            split_hyperparameters({key.split(".")[1]: bad})


def test_range_wording() -> None:
    assert Constraint(gt=0).problem(0, "k") == "'k' must be a positive number, not 0."
    assert Constraint(ge=0).problem(-1, "k") == "'k' must be 0 or positive, not -1."
    assert Constraint(gt=0, le=1).problem(2, "k") == "'k' must be in (0, 1], not 2."
    assert Constraint(ge=1, says="at least 1 epoch").problem(0, "k") == "'k' must be at least 1 epoch, not 0."
    assert Constraint(choices=(None, "balanced")).problem("x", "k") == "'k' is 'x' but must be one of: null, balanced."
    assert Constraint(required="Give k.").problem(None, "k") == "Give k."
    assert Constraint(ge=0).problem(None, "k") is None  # None means off / the default
