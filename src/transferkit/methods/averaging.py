"""An exponential moving average (EMA) of a model's weights, kept by a method during its fit and swapped in at the end.

The domain-adaptation family trains against a moving adversary (or moving pseudo-labels), so the weights of the
last step wander: on MNIST -> MNIST-M-style (peer protocol, 5 seeds x 10 epochs) DANN's last step scored
70.3 +- 5.6 % on the target (one seed 60.8), the average of its weights 73.5 +- 1.7. Source-only's spread is of
another kind (which features happen to transfer, not step-to-step wander): the average moved it from 48.9 +- 4.9 to
53.4 +- 6.5, a higher mean but no smaller spread. Measured with ``benchmarks/da_seed_noise.py`` (BENCHMARKS.md,
"DA against peers (issue 16)"), where the same runs are scored at the last step and averaged. The method keeps::

    w_ema <- d_n * w_ema + (1 - d_n) * w          after every optimisation step n = 1, 2, ...
    d_n = d (1 - d^(n-1)) / (1 - d^n)             (d_1 = 0, d_n -> d)

over every floating tensor of the model's state (integer counters are the last step's): the bias-corrected
average ``sum_k (1 - d) d^(n-k) w_k / (1 - d^n)`` of the weights ``w_1..w_n`` the steps left. The initial weights get
no share however short the run (a plain EMA started at them keeps ``d^n`` of them: 37 % after 100 steps at
d = 0.99); after a few hundred steps it is the plain EMA of decay ``d``.

When the fit keeps its last epoch (``train.monitor: last``, or a monitor that chose the last epoch) the method loads
``w_ema`` into the model and re-estimates its batch-norm running statistics in one pass over the training batches
(source and target batches together for an adaptation method, as it trains) with
``torch.optim.swa_utils.update_bn``: averaged running statistics do not belong to averaged weights (the model soups
of :mod:`transferkit.ensemble.weights` lost 14 points with averaged statistics, 3 with re-estimated ones). When a
monitor chose an earlier epoch, that epoch's own weights are kept (the monitor scored them, not an average), and
``result.extra["ema"]`` says so.

The average lives in buffers of the method (a child module), so it follows the method to the device and into the
loop's checkpoints: a resumed fit continues the same average. Written here rather than with
``torch.optim.swa_utils.AveragedModel`` because that wraps a deep copy of the whole model as a submodule, whose
parameters would join the method's optimizer group and whose copy doubles the model in the method's state; the
update itself is two in-place tensor operations per tensor (``torch._foreach`` would be a micro-optimisation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..data.devices import to_device
from ..model import TransferModel, unwrap


def ema_decay(decay: float, n: int) -> float:
    """The decay of update ``n`` (1-based) of the bias-corrected average: ``d (1 - d^(n-1)) / (1 - d^n)``."""
    return decay * (1.0 - decay ** (n - 1)) / (1.0 - decay**n)


class WeightEMA(nn.Module):
    """Buffers holding the EMA of ``model``'s floating state tensors (names with ``.`` stored as ``__``)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self._keys: dict[str, str] = {}
        for k, v in unwrap(model).state_dict().items():
            if v.is_floating_point():
                name = "w__" + k.replace(".", "__")
                self._keys[k] = name
                self.register_buffer(name, v.detach().clone())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the model's current state."""
        n = int(self.updates) + 1
        d = ema_decay(self.decay, n)
        state = unwrap(model).state_dict()
        for k, name in self._keys.items():
            avg = getattr(self, name)
            avg.mul_(d).add_(state[k].detach().to(avg.dtype), alpha=1 - d)
        self.updates.fill_(n)

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The averaged tensors under the model's own state-dict names."""
        return {k: getattr(self, name) for k, name in self._keys.items()}

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged tensors into ``model`` (in place, keeping its other state)."""
        state = unwrap(model).state_dict()
        for k, v in self.averaged_state().items():
            state[k].copy_(v.to(state[k].device, state[k].dtype))


class EMAMixin:
    """For a :class:`~transferkit.methods.base.Method` whose ``params`` has ``ema`` (the decay; 0: off).

    Put it before :class:`~transferkit.methods.base.Method` in the bases and call :meth:`ema_setup` at the end of
    ``setup``; its ``on_step_start`` (:meth:`ema_step`: it averages in the weights the previous step left) and
    ``finish`` (:meth:`ema_finish`) run after the next class's. :meth:`bn_batches` yields the inputs
    whose batch-norm statistics belong to the model: by default the labelled training batches; adaptation methods
    give source and target batches together, as they train.
    """

    def ema_setup(self, ctx: Any) -> None:
        decay = float(getattr(self.params, "ema", 0.0))  # type: ignore[attr-defined]
        # references, not submodules (the model's weights are the loop's)
        object.__setattr__(self, "_ema_model", ctx.model)
        object.__setattr__(self, "_ema_train", ctx.train)
        object.__setattr__(self, "_ema_loader", ctx.make_loader)
        if decay > 0:
            self.weight_ema = WeightEMA(ctx.model, decay)
        elif "weight_ema" in getattr(self, "_modules", {}):
            del self._modules["weight_ema"]

    def ema_step(self, step: int) -> None:
        ema: WeightEMA | None = getattr(self, "weight_ema", None)
        # steps 0, 1, ...: step k averages in the weights after step k - 1; after a resume the count continues
        if ema is not None and step > 0 and int(ema.updates) < step:
            ema.update(self._ema_model)

    def bn_batches(self, device: torch.device) -> Iterator[Any] | None:
        """Inputs for re-estimating batch-norm statistics: one pass over the labelled training split."""
        if self._ema_loader is None or self._ema_train is None:
            return None
        loader = self._ema_loader(self._ema_train, train=True, epoch=0)
        return (to_device(x, device) for x, _ in loader)

    def on_step_start(self, step: int, total_steps: int) -> None:
        super().on_step_start(step, total_steps)  # type: ignore[misc]
        self.ema_step(step)

    def finish(self, model: TransferModel, result: Any) -> None:
        super().finish(model, result)  # type: ignore[misc]
        self.ema_finish(model, result)

    def ema_finish(self, model: TransferModel, result: Any) -> None:
        ema: WeightEMA | None = getattr(self, "weight_ema", None)
        if ema is None:
            return
        history = getattr(result, "history", None) or []
        if history and result.best_epoch != len(history):
            result.extra["ema"] = (f"not applied: the monitor kept epoch {result.best_epoch} of {len(history)}, "
                                   "whose own weights were scored")
            return
        ema.update(model)  # the last step's weights
        ema.copy_to(model)
        note = f"applied: decay {ema.decay:g} over {int(ema.updates)} steps"
        if recompute_bn(model, self.bn_batches(next(model.parameters()).device)):
            note += ", batch-norm statistics re-estimated"
        result.extra["ema"] = note


def recompute_bn(model: nn.Module, batches: Iterator[Any] | None) -> bool:
    """Re-estimate the batch-norm running statistics of ``model`` on ``batches`` (inputs) with
    ``torch.optim.swa_utils.update_bn``; False (nothing done) without batch-norm layers or batches."""
    from torch.optim.swa_utils import update_bn

    if batches is None or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False
    with torch.no_grad():
        update_bn(batches, model)
    return True
