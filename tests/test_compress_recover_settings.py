"""``compress``'s recovery settings: ``--recover-set`` (train.* / model.method_params.* of the recovery's fit config,
checked like ``fit --set``) and iterative pruning (``--prune-steps``), on the small ``digits-cnn`` and real MNIST.

Mechanics only (a few seconds): what the recovery trains with is what its run folder's config says, and a bad
setting is refused in one sentence before anything is pruned or written. Whether a recipe recovers accuracy is
benchmarks/compress.py's (MobileNetV2 on Animal-MNIST) and tests/test_compress_flow.py's.
"""

from __future__ import annotations

import pytest
import yaml

from transferkit.app.compress import run_compress
from transferkit.app.fit import run_fit
from transferkit.cli import main
from transferkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from transferkit.errors import ConfigError


@pytest.fixture(scope="module")
def run(tmp_path_factory):  # noqa: ANN001, ANN201
    out = tmp_path_factory.mktemp("recover") / "run"
    run_fit(RunConfig(data=DataConfig(name="mnist", train_size=128), out=str(out),
                      model=ModelConfig(backbone="digits-cnn", method="finetune"),
                      train=TrainConfig(epochs=1, progress=False)))
    return out


@pytest.mark.slow  # ~10 s: two short recoveries
def test_recover_set_reaches_the_recovery_config_and_iterative_steps_recover_in_between(run, tmp_path):
    assert main(["compress", str(run), "--prune", "0.5", "--prune-steps", "2", "--recover-epochs", "1",
                 "--recover-set", "model.method_params.alpha=0.8", "--recover-set", "train.schedule=constant",
                 "--recover-set", "train.lr=2e-3", "--lr", "1e-3", "--repeats", "1", "--test-samples", "64",
                 "--out", str(tmp_path / "comp")]) == 0
    comp = tmp_path / "comp"
    for name in ("step-1", "recovered"):  # 2 steps: the first recovered for one epoch before the second
        cfg = yaml.safe_load((comp / name / "config.yaml").read_text())
        assert cfg["model"]["method"] == "kd"
        assert cfg["model"]["method_params"]["alpha"] == 0.8
        assert cfg["model"]["method_params"]["teacher_mode"] == "online"  # compress's own settings stay
        assert cfg["train"]["schedule"] == "constant"
        assert cfg["train"]["lr"] == 2e-3  # --recover-set comes after --lr
    import json

    summary = json.loads((comp / "compression.json").read_text())
    assert summary["settings"]["recover_overrides"] == ["model.method_params.alpha=0.8", "train.schedule=constant",
                                                        "train.lr=2e-3"]
    assert summary["prune"]["steps"] == 2 and summary["prune"]["steps_taken"] == 2
    assert 0.2 < summary["prune"]["params_ratio"] < 0.45  # the two steps end at half the channels, not a quarter


@pytest.mark.parametrize("override, says", [
    ("data.name=mnist", "is not a recovery setting"),
    ("train.epochs=5", "use that flag instead"),
    ("model.method_params.alpah=0.7", "did you mean 'model.method_params.alpha'"),
    ("train.lr=-1", "train.lr"),
    ("train.shedule=cosine", "Unknown config key 'train.shedule'"),
])
def test_a_bad_recovery_setting_is_one_sentence_before_anything_is_written(run, tmp_path, override, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(".", r"\.")):
        run_compress(run, tmp_path / "comp", recover_epochs=1, recover_overrides=[override], int8=False, repeats=1,
                     progress=False)
    assert not (tmp_path / "comp").exists() and not list(tmp_path.glob(".comp*"))


def test_interleaved_latency_times_every_engine_in_turn_with_the_order_rotated():
    """The engines alternate round by round (so each sees the same load), each call counted once per repeat."""
    from transferkit.compress.measure import interleaved_latency

    calls: list[str] = []
    runs = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    out = interleaved_latency(runs, rounds=3, repeats=2, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up; then rounds 0-2: a a b b c c, b b c c a a, c c a a b b
    assert calls[3:] == ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a", "c", "c", "a", "a", "b", "b"]
    assert set(out) == {"a", "b", "c"} and all(set(v) == {"wall_ms", "cpu_ms"} for v in out.values())
    assert all(v["wall_ms"] >= 0 and v["cpu_ms"] >= 0 for v in out.values())
