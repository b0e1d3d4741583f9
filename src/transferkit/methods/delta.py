"""DELTA (Li et al. 2019): keep the fine-tuned model's intermediate feature maps close to the source model's.

    L(w) = CE(y_hat, y) + s(t) * ( alpha * sum_j D_j(x)  +  beta / 2 * ||w_H||^2 )

    D_j(x) = 1/N sum_i  1/C_j sum_c  a_jc * 1/S_j || FM_jc(x_i; w) - FM_jc(x_i; w^0) ||^2

``FM_j`` is the output of tapped block ``j`` (``C_j`` channels, ``S_j`` positions: pixels, or the tokens the attention
mask keeps), ``w^0`` the source weights (a frozen copy of the backbone, run once per step without gradients on the
same batch) and ``w_H`` the new head, which gets plain L2 as in the paper. Normalising by ``C_j * S_j`` makes
``alpha`` independent of the layer sizes: with uniform weights, ``D_j`` is the mean squared difference per element.
The maps are taken with the toolkit's one tap mechanism (:mod:`transferkit.backbones.taps`: forward hooks) on the
chosen layers (``layers``: block indices, negative from the end, or module paths such as ``"features.7"``, the same
names as the frozen features' ``layers``; default the last four blocks after the stem, the paper taps the four stages
of a ResNet).

Channel weights ``a_jc`` (mean 1 over the channels of a layer):

* ``uniform``: ``a_jc = 1``, the behavioural regulariser without attention;
* ``taylor``: the paper's attention, ``a_j = softmax_c(delta L_jc)`` with ``delta L_jc`` the rise of the loss of a
  classifier on the source features when channel ``c`` of layer ``j`` is removed. The paper removes each channel in
  turn and re-evaluates (one pass over the data per channel); here the rise is estimated to first order (Taylor, the
  pruning criterion of Molchanov et al. 2017), ``delta L_jc ~ -1/N sum_i sum_s FM_jcs * dL/dFM_jcs``, from one
  forward and backward pass over at most ``attention_samples`` training examples. The classifier is a logistic
  regression (scikit-learn) fitted on the source features of those examples. The rises are standardised over each
  layer's channels before the softmax (raw first-order rises are tiny, and a softmax of them would be uniform) and
  scaled by ``C_j``, so the weights have mean 1.

The default ``alpha = 1`` makes the term comparable to the cross-entropy once the maps have drifted (mean squared
differences of 0.3 to 2 per element were measured on MobileNetV2 after a few steps of AdamW at lr 1e-3); it is a
hyperparameter to search, like the paper's.

Cost per step: one no-grad forward of the frozen copy plus the distances, about a third of a training step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.taps import Taps, in_module_order, is_stem, resolve_layers
from ..config import param
from ..data.sampling import subsample
from ..errors import ConfigError
from ..model import TransferModel, unwrap
from .base import FitContext, StepOutput
from .registry import register
from .regularised import Frozen, RegularisedMethod, ScheduleParams, sum_of_squares

ATTENTIONS = ("uniform", "taylor")


def layer_names(value: object) -> str | None:
    """``None`` for a list of block indices or module paths; what ``layers`` must be otherwise."""
    ok = isinstance(value, list) and all(isinstance(i, int | str) and not isinstance(i, bool) for i in value)
    return None if ok else "a list of block indices or module paths"


@dataclass
class DeltaParams(ScheduleParams):
    alpha: float = field(default=1.0, metadata=param(ge=0))  # weight of the feature-map distance
    beta: float = field(default=0.01, metadata=param(ge=0))  # weight of the plain L2 penalty on the new head
    # tapped layers: block indices (negative from the end) or module paths
    layers: list[int | str] | None = field(default=None, metadata=param(check=layer_names))
    # uniform | taylor (channel weights, see the module docstring)
    attention: str = field(default="uniform", metadata=param(choices=ATTENTIONS))
    # training examples used to estimate the taylor weights
    attention_samples: int = field(default=256, metadata=param(gt=0))
    num_layers: int = field(default=4, metadata=param(gt=0))  # with layers unset: tap the last this many blocks


def _as_ncs(t: torch.Tensor) -> torch.Tensor:
    """A feature map as ``(N, C, S)``: conv maps ``(N, C, H, W)``, token maps ``(N, L, D)`` (channels last), vectors."""
    if t.ndim == 4:
        return t.flatten(2)
    if t.ndim == 3:
        return t.transpose(1, 2)
    if t.ndim == 2:
        return t[:, :, None]
    return t.reshape(t.shape[0], -1, 1)


def feature_distance(new: torch.Tensor, old: torch.Tensor, weights: torch.Tensor | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """``D_j`` of the module docstring: weighted mean over channels of the per-position squared distance."""
    a, b = _as_ncs(new).float(), _as_ncs(old).float()
    d = (a - b).pow(2)  # (N, C, S)
    if mask is not None and mask.ndim == 2 and mask.shape[1] == d.shape[2]:
        m = mask[:, None, :].to(d.dtype)
        per_channel = (d * m).sum(2) / m.sum(2).clamp(min=1.0)
    else:
        per_channel = d.mean(2)  # (N, C)
    if weights is not None:
        per_channel = per_channel * weights[None, :]
    return per_channel.mean()


def _mask_of(x: Any) -> torch.Tensor | None:
    return x.get("attention_mask") if isinstance(x, dict) else None


@register
class Delta(RegularisedMethod):
    name: ClassVar[str] = "delta"
    summary: ClassVar[str] = "fine-tune keeping intermediate feature maps close to the frozen source model's (DELTA)"
    Params: ClassVar[type] = DeltaParams

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self.tap_paths: list[str] = []

    # --- set-up -------------------------------------------------------------------------------------------
    def choose_taps(self, model: TransferModel) -> list[str]:
        """Module paths (inside the backbone) of the tapped layers, in the order their modules sit in the network."""
        backbone = model.backbone
        if self.params.layers is not None:
            points = resolve_layers(backbone, self.params.layers, setting="model.method_params.layers")
        else:  # the last num_layers stage outputs (a stem ends in a norm or activation, not a stage)
            stages = [i for i, b in enumerate(backbone.blocks()) if not is_stem(b)]
            points = resolve_layers(backbone, stages[-self.params.num_layers:])
        return in_module_order(backbone, [p.path for p in points])

    def setup(self, ctx: FitContext) -> None:
        super().setup(ctx)
        self.tap_paths = self.choose_taps(ctx.model)
        self.source = Frozen(ctx.model.backbone)
        self._weights_count = 0
        if self.params.attention == "taylor":
            for j, w in enumerate(self._taylor_attention(ctx)):
                self.register_buffer(f"attention_{j}", w)
            self._weights_count = len(self.tap_paths)

    def channel_weights(self) -> list[torch.Tensor | None]:
        if not self._weights_count:
            return [None] * len(self.tap_paths)
        return [getattr(self, f"attention_{j}") for j in range(self._weights_count)]

    def _taylor_attention(self, ctx: FitContext) -> list[torch.Tensor]:
        """Channel weights from first-order estimates of the loss rise when a channel is removed (see docstring)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        from ..data.devices import to_device

        ds = subsample(ctx.train, self.params.attention_samples, seed=ctx.train_config.seed)
        loader_of = ctx.make_loader
        if loader_of is None:
            raise ConfigError("DELTA's taylor attention needs the training loader; train through fit().")
        device = ctx.device
        net = self.source.to(device).module
        feats, labels = [], []
        for x, y in loader_of(ds, train=False):
            feats.append(self.source(to_device(x, device)).float().cpu())
            labels.append(y)
        f = torch.cat(feats).numpy()
        y_all = torch.cat(labels).numpy()
        scaler = StandardScaler().fit(f)
        clf = LogisticRegression(max_iter=300).fit(scaler.transform(f), y_all)
        coef = clf.coef_ / scaler.scale_[None, :]
        bias = clf.intercept_ - coef @ scaler.mean_
        if coef.shape[0] == 1:  # binary: sklearn keeps one row; softmax over (0, z) is the same model
            coef, bias = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, bias]
        w = torch.as_tensor(coef, dtype=torch.float32, device=device)
        b = torch.as_tensor(bias, dtype=torch.float32, device=device)
        cls_index = {int(c): i for i, c in enumerate(clf.classes_)}
        rise: list[torch.Tensor] = []
        count = 0
        for x, y in loader_of(ds, train=False):
            x = to_device(x, device)
            target = torch.tensor([cls_index[int(v)] for v in y], device=device)
            with torch.enable_grad():
                with Taps(net, self.tap_paths, grad=True) as taps:
                    logits = F.linear(net(x).float(), w, b)
                maps = taps.in_order()
                loss = F.cross_entropy(logits, target, reduction="sum")
                grads = torch.autograd.grad(loss, maps, allow_unused=True)
            for j, (fm, g) in enumerate(zip(maps, grads)):
                contrib = torch.zeros(_as_ncs(fm).shape[1], device=device) if g is None else \
                    -(_as_ncs(fm.detach()).float() * _as_ncs(g).float()).sum(dim=(0, 2))
                if len(rise) <= j:
                    rise.append(contrib)
                else:
                    rise[j] += contrib
            count += len(y)
        out = []
        for r in rise:
            r = r / max(1, count)
            z = (r - r.mean()) / r.std().clamp(min=1e-12) if r.numel() > 1 else torch.zeros_like(r)
            out.append((torch.softmax(z, 0) * r.numel()).cpu())
        return out

    # --- training -----------------------------------------------------------------------------------------
    def regulariser(self, model: TransferModel, x: Any, new_maps: list[torch.Tensor]) -> torch.Tensor:
        """``sum_j D_j(x)`` given the fine-tuned model's maps on ``x`` (runs the frozen source copy once)."""
        self.source.mirror_norm_modes(unwrap(model).backbone)
        with Taps(self.source.module, self.tap_paths) as taps:
            self.source(x)
        mask = _mask_of(x)
        total = torch.zeros((), device=new_maps[0].device)
        for new, old, w in zip(new_maps, taps.in_order(), self.channel_weights(), strict=True):
            total = total + feature_distance(new, old, w, mask)
        return total

    def training_step(self, model: TransferModel, batch: tuple[Any, torch.Tensor]) -> StepOutput:
        x, y = self.mix(batch)
        core = unwrap(model)
        with Taps(core.backbone, self.tap_paths) as taps:
            logits = model(x)
        ce = self.classification_loss(logits, y)
        maps = taps.in_order()
        head = [q for q in core.head.parameters() if q.requires_grad]
        reg = self.params.alpha * self.regulariser(model, x, maps) + 0.5 * self.params.beta * sum_of_squares(head)
        return StepOutput(ce + self.strength() * reg, logits)
