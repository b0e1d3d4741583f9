"""Ensembles in weight space: uniform and greedy model soups, and stochastic weight averaging (SWA).

Members fine-tuned from the same pretrained source stay in one low-loss basin, so the average of their weights is a
good model itself (Wortsman et al. 2022, "Model soups"; Izmailov et al. 2018, SWA): the result is ONE model, with
one model's prediction cost, saved as a plain model folder.

* :func:`uniform_soup`: the mean of all members' weights.
* :func:`greedy_soup`: members sorted by validation accuracy, best first; each is added to the soup only if the
  soup's validation accuracy does not drop (the paper's recipe).
* Batch-norm running statistics: :func:`average_states` averages them with the weights (what the paper's recipe
  does; its CLIP ViTs have no batch-norm, so there it never mattered). For members whose statistics differ (full
  fine-tunes of a batch-norm network) the mean of the members' statistics is not the statistics of the averaged
  weights' activations (the variances in particular come out wrong), so a soup's ``finish`` step may re-estimate
  them on training inputs (:func:`batch_norm_differs` says whether that is needed); the greedy soup then judges
  each candidate soup after that step. Measured in BENCHMARKS.md ("Ensembles", table B): on MobileNetV2 fine-tunes
  (3 seeds) the greedy soup gained 4.1 +- 0.8 points over the best member with re-estimated statistics and 0.3 +-
  0.5 with averaged ones; the uniform soup lost 14 +- 8 points with averaged statistics, 3 +- 4 with re-estimated.
* :func:`swa_average`: ``torch.optim.swa_utils.AveragedModel`` over a run's per-epoch weights, then
  ``update_bn`` re-estimates the batch-norm running statistics of the averaged weights on the training data
  (averaged running statistics do not belong to the averaged weights).

Members must have the same architecture (same backbone spec, head and tensor shapes): :func:`check_same_architecture`
says which one differs. Integer buffers (batch-norm's ``num_batches_tracked``) are taken from the first member.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import ConfigError


def check_same_architecture(models: Sequence[Any], names: Sequence[str]) -> None:
    """Refuse members that cannot be averaged: another backbone, head or class list, or other tensor shapes."""
    if len(models) < 2:
        raise ConfigError(f"A soup needs two or more members, got {len(models)}.")
    ref = models[0]
    ref_meta = {k: v for k, v in ref.metadata().items() if k in ("backbone", "head", "classes")}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    for m, name in zip(models[1:], names[1:], strict=True):
        meta = {k: v for k, v in m.metadata().items() if k in ("backbone", "head", "classes")}
        shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
        if meta != ref_meta or shapes != ref_shapes:
            what = next((k for k in ref_meta if ref_meta[k] != meta.get(k)), "tensor shapes")
            raise ConfigError(f"Member '{name}' differs from '{names[0]}' in its {what}; weights can only be averaged "
                              "for members fine-tuned from the same source model (use --how average or stack "
                              "for others).")


def average_states(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float] | None = None
                   ) -> dict[str, torch.Tensor]:
    """The (weighted) mean of floating-point tensors; other tensors from the first state."""
    w = torch.ones(len(states), dtype=torch.float64) if weights is None else torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    out = {}
    for k, v in states[0].items():
        if all(s[k] is v or torch.equal(s[k], v) for s in states[1:]):
            out[k] = v.clone()  # shared by all (a frozen backbone): bit for bit, so its cached features still fit
        elif v.is_floating_point():
            acc = sum(float(wi) * s[k].detach().to(torch.float64) for wi, s in zip(w, states, strict=True))
            out[k] = acc.to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def batch_norm_differs(models: Sequence[Any]) -> bool:
    """Whether the members' batch-norm running statistics differ (then averaging them is only an approximation;
    members on one frozen backbone share them bit for bit)."""
    states = [m.state_dict() for m in models]
    keys = [k for k in states[0] if k.endswith(("running_mean", "running_var"))]
    return any(not torch.equal(s[k], states[0][k]) for s in states[1:] for k in keys)


def soup_model(models: Sequence[Any], indices: Sequence[int], finish: Callable[[Any], Any] | None = None) -> Any:
    """A copy of the first chosen member holding the mean weights of ``models[indices]``; ``finish(model)`` (if
    given, and the soup has two or more members) then adjusts it in place (re-estimates batch-norm statistics)."""
    model = copy.deepcopy(models[indices[0]])
    model.load_state_dict(average_states([models[i].state_dict() for i in indices]))
    if finish is not None and len(indices) > 1:
        finish(model)
    return model.eval()


def uniform_soup(models: Sequence[Any], names: Sequence[str], finish: Callable[[Any], Any] | None = None) -> Any:
    """The mean of all members' weights, as one model (``finish``: see :func:`soup_model`)."""
    check_same_architecture(models, names)
    return soup_model(models, list(range(len(models))), finish)


def greedy_soup(models: Sequence[Any], names: Sequence[str], accuracy: Callable[[Any], float],
                finish: Callable[[Any], Any] | None = None) -> tuple[Any, list[int], list[dict[str, Any]]]:
    """Wortsman et al.'s greedy soup: ``(model, chosen member indices, trace)``.

    ``accuracy(model)`` is the validation accuracy of a model (held-out data, never the test split). Members are
    tried best first; one joins when the soup's accuracy with it is at least the soup's accuracy without it. Each
    candidate soup is judged after ``finish`` (see :func:`soup_model`), as it will be saved.
    """
    check_same_architecture(models, names)
    single = [accuracy(m) for m in models]
    order = sorted(range(len(models)), key=lambda i: -single[i])
    chosen = [order[0]]
    best = single[order[0]]
    trace = [{"member": names[order[0]], "member_accuracy": single[order[0]], "soup_accuracy": best, "kept": True}]
    kept_model = None
    for i in order[1:]:
        candidate = soup_model(models, [*chosen, i], finish)
        acc = accuracy(candidate)
        kept = acc >= best
        trace.append({"member": names[i], "member_accuracy": single[i], "soup_accuracy": acc, "kept": kept})
        if kept:
            chosen.append(i)
            best, kept_model = acc, candidate
    return (kept_model if kept_model is not None else soup_model(models, chosen)), chosen, trace


def swa_average(model: Any, states: Sequence[dict[str, torch.Tensor]], bn_batches: Callable[[], Any] | None
                ) -> Any:
    """SWA: average ``states`` (per-epoch weights of one run) into a copy of ``model`` with
    ``torch.optim.swa_utils.AveragedModel``, then recompute batch-norm statistics with ``update_bn`` on the inputs
    ``bn_batches()`` yields (``(x, y)`` batches of the training data; skipped when the model has no batch-norm)."""
    from torch.optim.swa_utils import AveragedModel, update_bn

    if not states:
        raise ConfigError("SWA needs the weights of at least one epoch.")
    work = copy.deepcopy(model)
    swa = AveragedModel(work, use_buffers=False)
    for s in states:
        work.load_state_dict(s)
        swa.update_parameters(work)
    averaged = swa.module
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in averaged.modules())
    if has_bn and bn_batches is not None:
        update_bn((x for x, _ in bn_batches()), averaged)
    return averaged.eval()
