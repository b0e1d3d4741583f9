"""The moving average of the weights that the domain-adaptation family keeps as its result
(:mod:`transferkit.methods.averaging`): the update, the warm-up, what a fit ends with, and when it is not applied.

Mechanics only, on the tiny random backbone; what the average does to target accuracy and its spread over seeds on
real data is measured in ``benchmarks/da_seed_noise.py`` (BENCHMARKS.md, "DA seed noise (issue 16)").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.tiny import TinyConvBackbone
from transferkit.config import ModelConfig, TrainConfig
from transferkit.data.base import Dataset
from transferkit.errors import ConfigError
from transferkit.methods import create_method
from transferkit.methods.averaging import WeightEMA, ema_decay
from transferkit.methods.dann import DANN
from transferkit.model import TransferModel
from transferkit.train.contract import FitResult
from transferkit.train.loop import fit as fit_loop

CLASSES = ["a", "b", "c"]


def _data(blobs_images) -> tuple[Dataset, Dataset]:
    x, y = blobs_images
    return (Dataset("image", x, y, CLASSES, "blobs"),
            Dataset("image", (255 - x[:40]).astype(np.uint8), None, CLASSES, "blobs-inverted"))


def _model() -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(TinyConvBackbone(), CLASSES)


def test_the_average_is_bias_corrected_so_the_initial_weights_get_no_share() -> None:
    assert ema_decay(0.99, 1) == 0.0  # the first update takes the first step's weights whole
    # the recursion gives sum_k (1 - d) d^(n-k) w_k / (1 - d^n): check it on scalars
    d, ws, m = 0.9, [3.0, -1.0, 4.0, 1.0, 5.0], 123.0
    for n, w in enumerate(ws, start=1):
        m = ema_decay(d, n) * m + (1 - ema_decay(d, n)) * w
    direct = sum((1 - d) * d ** (len(ws) - k) * w for k, w in enumerate(ws, start=1)) / (1 - d ** len(ws))
    assert m == pytest.approx(direct)
    assert ema_decay(0.99, 10_000) == pytest.approx(0.99)


def test_weight_ema_is_the_hand_computed_average_of_floats_and_keeps_integer_state_as_is() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = WeightEMA(net, 0.5)
    expected = {k: v.clone() for k, v in net.state_dict().items() if v.is_floating_point()}
    for n in range(1, 4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(float(n))
        net(torch.randn(4, 3))  # moves the batch-norm running statistics and its counter
        ema.update(net)
        d = ema_decay(0.5, n)
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                expected[k] = d * expected[k] + (1 - d) * v
    assert int(ema.updates) == 3
    for k, v in ema.averaged_state().items():
        torch.testing.assert_close(v, expected[k])
    counter = net.state_dict()["1.num_batches_tracked"].clone()
    ema.copy_to(net)
    for k, v in expected.items():
        torch.testing.assert_close(net.state_dict()[k], v)
    assert torch.equal(net.state_dict()["1.num_batches_tracked"], counter)


class _Recording(DANN):
    """DANN that records the model's state before every step (the weights the previous step left)."""

    name = "dann"  # not registered: used directly

    def setup(self, ctx) -> None:
        super().setup(ctx)
        object.__setattr__(self, "_model_ref", ctx.model)
        self.seen: list[dict[str, torch.Tensor]] = []

    def on_step_start(self, step: int, total_steps: int) -> None:
        self.seen.append({k: v.detach().clone() for k, v in self._model_ref.state_dict().items()})
        super().on_step_start(step, total_steps)


def _fit(method, source, target, monitor="last"):
    model = _model()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, progress=False, device="cpu", monitor=monitor)
    result = fit_loop(model, method, source, None, ModelConfig(), cfg, extra={"target": target})
    model.load_state_dict(result.best_state)
    method.finish(model, result)
    return model, result


def test_a_fit_ends_with_the_moving_average_of_its_step_weights(blobs_images) -> None:
    source, target = _data(blobs_images)
    raw_method = _Recording(DANN.Params(ema=0.0))
    raw_model, raw = _fit(raw_method, source, target)
    assert "weight_ema" not in dict(raw_method.named_children()) and "ema" not in raw.extra
    # the trajectory does not depend on the average: average it by hand
    trajectory = [*raw_method.seen[1:], {k: v.clone() for k, v in raw_model.state_dict().items()}]
    expected = {k: v.clone() for k, v in raw_method.seen[0].items() if v.is_floating_point()}
    for n, state in enumerate(trajectory, start=1):
        d = ema_decay(0.9, n)
        for k in expected:
            expected[k] = d * expected[k] + (1 - d) * state[k]

    model, result = _fit(create_method("dann", {"ema": 0.9}), source, target)
    assert result.history == raw.history  # the same training
    assert result.extra["ema"] == f"applied: decay 0.9 over {len(trajectory)} steps, batch-norm statistics re-estimated"
    weights = dict(model.named_parameters())
    for k, v in weights.items():
        torch.testing.assert_close(v.detach(), expected[k], rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(v, raw_model.state_dict()[k]) for k, v in weights.items())
    # the batch-norm statistics are those of the averaged weights on source and target batches, not an average
    bn = [k for k in expected if k.endswith("running_mean")]
    assert bn and not any(torch.allclose(model.state_dict()[k], expected[k]) for k in bn)


def test_an_earlier_epoch_chosen_by_a_monitor_keeps_its_own_weights(blobs_images) -> None:
    source, target = _data(blobs_images)
    method = create_method("dann", {"ema": 0.9})
    model = _model()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, progress=False, device="cpu", monitor="last")
    result = fit_loop(model, method, source, None, ModelConfig(), cfg, extra={"target": target})
    chosen = FitResult(history=result.history, best_epoch=1, best_state=result.best_state)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method.finish(model, chosen)
    assert chosen.extra["ema"].startswith("not applied: the monitor kept epoch 1 of 2")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_a_decay_outside_zero_to_one_is_a_config_error() -> None:
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="ema"):
            create_method("dann", {"ema": bad})
