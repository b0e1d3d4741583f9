"""Structured pruning of a :class:`~transferkit.model.TransferModel` with torch-pruning's DepGraph.

Structured pruning removes whole channels (a convolution's filters, with the matching batch-norm entries and the next
layers' input channels), so the pruned model is a smaller dense model that runs faster on any CPU, unlike
unstructured sparsity. torch-pruning (Fang et al., "DepGraph", CVPR 2023) finds the groups of coupled layers (a
residual block's convolutions must keep the same channels) and removes them consistently; we use it rather than
hand-written surgery.

Importance of a channel group (which channels go):

- ``l1`` / ``l2``: the group's weight magnitude, ``sum |w|`` or ``sum w^2`` (``GroupMagnitudeImportance``);
- ``taylor``: the first-order Taylor estimate of the loss change when the group is removed, ``|sum w * dL/dw|``
  (``GroupTaylorImportance``, Molchanov et al. 2019), with the gradients of the cross-entropy on a few training
  batches, accumulated before each pruning step.

Targets (``target``, with ``amount`` in (0, 1)):

- ``channels``: remove the fraction ``amount`` of the channels of every prunable layer (torch-pruning's
  ``pruning_ratio``), in ``steps`` equal steps (``between`` is called after each one: recover, then go on);
- ``params`` / ``macs``: remove channels in small steps (2% of every layer's channels each) until the parameter /
  multiply-accumulate count is at most ``(1 - amount)`` times the original.

The head stays whole (its outputs are the classes; only its input features shrink with the backbone). The pruned
architecture is recorded as data, ``model.pruned`` (:func:`transferkit.model.layer_shapes`): saving the model
writes it into ``model.json`` and :func:`transferkit.model.load_model` rebuilds the pruned model from it with no
pickle. :func:`prune_model` checks that rebuild (save, load, same outputs) before it returns.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, RunError
from ..model import DEFAULT_INFERENCE, TransferModel, layer_shapes, load_model, save_model

IMPORTANCES = ("l1", "l2", "taylor")
_FINE_STEPS = 45  # a params / macs target removes 2% of every layer's channels per step (up to 90%)
TARGETS = ("channels", "params", "macs")


@dataclass
class PruneResult:
    """The pruned model (on the CPU, eval mode) and what pruning removed."""

    model: TransferModel
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    steps: int
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {**self.settings, "steps_taken": self.steps, "params_before": self.params_before,
                "params_after": self.params_after, "params_ratio": self.params_after / max(self.params_before, 1),
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "macs_ratio": self.macs_after / max(self.macs_before, 1)}


def count_params_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """``(parameters, MACs for one example)`` of ``model`` (torch-pruning's counter, which traces a forward pass)."""
    import torch_pruning as tp

    was = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example[:1])
    model.train(was)
    return int(params), int(macs)


def check_settings(amount: float, target: str, importance: str, steps: int) -> None:
    """Refuse pruning settings that cannot work, in one sentence each."""
    if not 0 < amount < 1:
        raise ConfigError(f"The pruning amount must be in (0, 1) (the fraction removed), not {amount}.")
    if target not in TARGETS:
        raise ConfigError(f"The pruning target '{target}' is unknown; choose one of: {', '.join(TARGETS)}.")
    if importance not in IMPORTANCES:
        raise ConfigError(f"The pruning importance '{importance}' is unknown; choose one of: {', '.join(IMPORTANCES)}.")
    if steps < 1:
        raise ConfigError(f"The number of pruning steps must be at least 1, not {steps}.")


def prune_model(model: TransferModel, example: torch.Tensor, *, amount: float = 0.5, target: str = "channels",
                importance: str = "l2", steps: int = 1, grad_batches: Iterable[tuple[Any, torch.Tensor]] = (),
                between: Callable[[TransferModel, int], None] | None = None, verify: bool = True,
                norm_batches: Iterable[Any] = ()) -> PruneResult:
    """A structurally pruned copy of ``model`` (see the module docstring); ``model`` itself is left as it is.

    Args:
        model: a trained model with a convolutional (or linear) backbone.
        example: a real input batch (images at the model's size): torch-pruning traces it to build the graph.
        amount, target, importance, steps: see the module docstring.
        grad_batches: ``(inputs, labels)`` batches whose loss gradients the ``taylor`` importance uses.
        between: called as ``between(model, step)`` after each pruning step but the last (iterative pruning with
            recovery: fine-tune the model in place, then pruning goes on).
        verify: save the pruned model to a temporary folder, reload it and check the outputs are identical.
        norm_batches: training batches (inputs, or ``(inputs, labels)``) to re-estimate the batch-norm statistics of
            the pruned model on (:func:`recalibrate_batch_norm`); without them the unpruned model's statistics stay.

    Raises:
        ConfigError: bad settings; ``taylor`` without ``grad_batches``.
        RunError: torch-pruning cannot prune this architecture, or the pruned one cannot be rebuilt from data.
    """
    import torch_pruning as tp

    check_settings(amount, target, importance, steps)
    batches = list(grad_batches) if importance == "taylor" else []
    if importance == "taylor" and not batches:
        raise ConfigError("The taylor importance needs a few labelled training batches for its gradients; give "
                          "grad_batches, or choose the l1 or l2 importance.")
    pruned = copy.deepcopy(model).to("cpu").eval()
    example = example.detach().to("cpu")
    params0, macs0 = count_params_macs(pruned, example)
    imp = (tp.importance.GroupTaylorImportance() if importance == "taylor"
           else tp.importance.GroupMagnitudeImportance(p=1 if importance == "l1" else 2))
    fine = target != "channels"
    try:
        pruner = tp.pruner.MetaPruner(
            pruned, example[:2], importance=imp, pruning_ratio=0.9 if fine else amount,
            iterative_steps=_FINE_STEPS if fine else steps, ignored_layers=[pruned.head],
        )
    except Exception as e:  # noqa: BLE001 - torch-pruning raises anything when it cannot trace a model
        raise RunError(f"torch-pruning cannot build the dependency graph of this model ({type(e).__name__}: {e}); "
                       "structured pruning supports convolutional and linear backbones.") from None
    goal = (1 - amount) * (params0 if target == "params" else macs0)
    norm = list(norm_batches)
    taken = 0
    for step in range(_FINE_STEPS if fine else steps):
        if importance == "taylor":
            _accumulate_gradients(pruned, batches)
        pruner.step()
        taken += 1
        pruned.zero_grad(set_to_none=True)
        if fine:
            size = (sum(p.numel() for p in pruned.parameters()) if target == "params"
                    else count_params_macs(pruned, example)[1])
            if size <= goal:
                break
        elif between is not None and step < steps - 1:
            if norm:  # the recovery in between starts from statistics that fit the channels left
                recalibrate_batch_norm(pruned, norm)
            pruned.pruned = layer_shapes(pruned)  # what a recovery saves in between must rebuild too
            pruned.inference = dict(DEFAULT_INFERENCE)
            between(pruned, step)
            pruned.eval()
    if norm:
        recalibrate_batch_norm(pruned, norm)
    pruned.eval()
    params1, macs1 = count_params_macs(pruned, example)
    pruned.pruned = layer_shapes(pruned)
    pruned.inference = dict(DEFAULT_INFERENCE)  # a pruned backbone runs as a plain torch model
    if verify:
        check_rebuild(pruned, example)
    settings = {"amount": amount, "target": target, "importance": importance, "steps": steps}
    return PruneResult(pruned, params0, params1, macs0, macs1, taken, settings)


def _accumulate_gradients(model: nn.Module, batches: list[tuple[Any, torch.Tensor]]) -> None:
    """Fresh gradients of the mean cross-entropy over ``batches`` (eval mode: batch-norm statistics stay)."""
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.enable_grad():
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y) / len(batches)
            loss.backward()


def check_rebuild(model: TransferModel, example: torch.Tensor) -> None:
    """Save ``model``, rebuild it with :func:`~transferkit.model.load_model` and require identical outputs.

    This is what makes the saved channel counts trustworthy: a layer kind that :func:`~transferkit.model.layer_shapes`
    does not record but pruning changed would fail here, at pruning time, rather than when a user loads the model.
    """
    with tempfile.TemporaryDirectory(prefix="transferkit-prune-") as tmp:
        save_model(model, tmp)
        try:
            again = load_model(tmp)
        except Exception as e:  # noqa: BLE001 - any failure means the architecture is not recorded as data
            raise RunError(f"The pruned model cannot be rebuilt from its recorded channel counts ({e}); this "
                           "architecture holds a layer kind pruning changed that transferkit does not record."
                           ) from None
    with torch.no_grad():
        same = torch.equal(model.eval()(example), again(example))
    if not same:
        raise RunError("The pruned model rebuilt from its recorded channel counts gives other outputs; this "
                       "architecture cannot be saved as data after pruning.")


def recalibrate_batch_norm(model: nn.Module, batches: list[Any]) -> None:
    """Re-estimate every batch-norm layer's running mean and variance on ``batches`` (no gradients, no weight change).

    Removing channels changes what every later layer sees, so the statistics the unpruned model collected no longer
    fit and the pruned model in evaluation mode can be near chance even where its weights are fine; a short recovery
    (a few steps at momentum 0.1) does not replace them either. This is the cumulative average (momentum ``None``) over
    the batches, as in "BN recalibration" after pruning or quantisation.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for b in batches:
            model(b[0] if isinstance(b, tuple | list) else b)
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    model.eval()
