"""DAN (Long et al. 2015, "Learning transferable features with deep adaptation networks"): match the domains'
feature distributions by the multi-kernel maximum mean discrepancy.

    L = CE(h(f(x_s)), y_s) + trade_off * sum_l MK-MMD^2(l(x_s), l(x_t))

over the adapted layers ``l``: the backbone's features, and with ``logits: true`` also the logits (DAN adapts the
last layers of the network, the classifier's output among them). ``MK-MMD^2`` is the biased quadratic estimate
with an average of Gaussian kernels at bandwidths ``b * 2^u``, ``u = -2..2``, ``b`` the mean squared pairwise
distance of the pooled batch (:mod:`transferkit.adaptation.losses`). With ``joint: true`` the layers' kernels are
multiplied instead of their MMDs added: the joint MMD of JAN (Long et al. 2017), which aligns the joint
distribution of features and predictions (softmax of the logits, as JAN does).

DAN's kernel weights ``beta`` come from a quadratic program in the paper; the uniform average used here is what
the common re-implementations do and has no parameters to learn.

Logged per step: ``mmd`` (the adaptation term before ``trade_off``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..adaptation.losses import joint_mmd, mk_mmd
from ..model import TransferModel
from .base import StepOutput
from .domain_adaptive import AdaptationMethod, AdaptationParams
from .registry import register


@dataclass
class DANParams(AdaptationParams):
    logits: bool = False  # also adapt the logits (DAN's last layer)
    joint: bool = False  # joint MMD over features and predictions (JAN) instead of a sum of per-layer MMDs


@register
class DAN(AdaptationMethod):
    name: ClassVar[str] = "dan"
    summary: ClassVar[str] = "match source and target features by multi-kernel MMD (DAN; joint: JAN)"
    Params: ClassVar[type] = DANParams

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x_s, y_s = self.mix(batch)
        x_t = self.next_target(self.device_of(model))
        v = self.forward_views(model, x_s, x_t)
        ce = self.classification_loss(v.z_s, y_s)
        if self.params.joint:
            mmd = joint_mmd([v.f_s, torch.softmax(v.z_s.float(), 1)], [v.f_t, torch.softmax(v.z_t.float(), 1)])
        else:
            mmd = mk_mmd(v.f_s, v.f_t)
            if self.params.logits:
                mmd = mmd + mk_mmd(v.z_s, v.z_t)
        return StepOutput(ce + self.params.trade_off * mmd, v.z_s, {"mmd": mmd.detach()})
