"""What the domain-adaptation methods share: unlabelled target batches, and features of both domains in one pass.

Every adaptation method trains on

    L = CE(h(f(x_s)), y_s) + trade_off * L_DA(source batch, target batch)

with ``f`` the backbone, ``h`` the head, a labelled source batch from the loop and an unlabelled target batch the
method draws itself: the data reaches it as ``ctx.extra["target"]`` (an unlabelled :class:`Dataset` with the
source's modality), and it takes batches of the loop's batch size through ``ctx.make_loader`` (the model's
preprocessing; ``augment`` picks the augmentation preset of the target view, the loop's own by default). The method
declares the need (``needs = {"target"}``) and the pipeline supplies it, refusing a fit without a target. The loop
knows nothing of this: it calls :meth:`~transferkit.methods.base.Method.training_step` with the source batch as
for any method.

Target order and resume: each epoch restarts the target stream from an order that depends only on
``(seed, epoch)`` (loader rounds ``epoch * 10^4 + r``), so a run resumed at an epoch boundary draws exactly the
target batches of an uninterrupted run. Batches are full (``drop_last``) unless the target set is smaller than one
batch; when the target set is larger than what an epoch consumes, each epoch sees a fresh random part of it.

Images and tabular rows of both domains go through the model in **one** forward pass (source rows first), so
batch-norm layers normalise with statistics of the mixed batch, as the reference implementations do (DANN, CDAN and
MCC in Transfer-Learning-Library concatenate the two batches); text batches (dicts of padded token tensors of
different lengths) take two passes.

The result is the moving average of the weights (``ema``, decay 0.99 per step, :mod:`.averaging`), not the last
step's: the adversarial and pseudo-label terms keep the weights wandering to the end, and on MNIST -> MNIST-M-style
(peer protocol, 5 seeds x 10 epochs) DANN's last step scored 70.3 +- 5.6 % on the target (one seed fell to 60.8)
and its average 73.5 +- 1.7 (the uniform average of the last half of the steps: 72.8 +- 1.3; decay 0.995 without
bias correction, i.e. partly the initial weights: 65.8); with this module's average (bias-corrected, batch-norm
statistics re-estimated) ``benchmarks/da_peers.py`` measured 77.3 +- 1.4. ``source-only`` keeps the same average,
so gains stay comparable; ``ema: 0`` turns it off.

Owned modules (a domain discriminator, a random projection) are built in :meth:`setup`, from
``model.backbone.feature_dim`` and ``len(model.classes)``, so they are part of the method: they join the optimizer's
``method.<name>`` parameter group (at the head's learning rate) and are saved in checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..adaptation.losses import GradientReversal, dann_schedule
from ..config import param
from ..data.base import Dataset
from ..data.devices import to_device
from ..errors import ConfigError, DataError
from ..model import TransferModel, forward_with_features, make_head, unwrap
from .averaging import EMAMixin
from .base import FitContext, Method, infinite

#: Loader rounds per epoch in the target stream's seed (see the module docstring).
ROUNDS_PER_EPOCH = 10_000


@dataclass
class AdaptationParams:
    """The weight of the adaptation term (every adaptation method has one)."""

    # weight of the domain-adaptation loss next to the source cross-entropy
    trade_off: float = field(default=1.0, metadata=param(ge=0))
    # decay per step of the moving average of the weights kept as the result (methods/averaging.py); 0: the last
    # step's weights
    ema: float = field(default=0.99, metadata=param(ge=0, lt=1))


@dataclass
class Views:
    """One forward pass over source and target: features and logits of each (source rows first)."""

    f_s: torch.Tensor
    f_t: torch.Tensor
    z_s: torch.Tensor
    z_t: torch.Tensor


class AdaptationMethod(EMAMixin, Method):
    """Base of methods that adapt to unlabelled target data (see the module docstring)."""

    Params: ClassVar[type] = AdaptationParams
    needs: ClassVar[frozenset[str]] = frozenset({"target"})
    #: Augmentation preset of the target batches; ``None``: the loop's ``train.augment`` (as the source).
    target_augment: ClassVar[str | None] = None

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self._make_loader: Callable[..., Any] | None = None
        self._target: Dataset | None = None
        self._streams: dict[str | None, Iterator[Any]] = {}
        self._epoch = 0

    # --- set-up -------------------------------------------------------------------------------------------
    def setup(self, ctx: FitContext) -> None:
        super().setup(ctx)
        target = ctx.extra.get("target")
        if target is None:
            raise ConfigError(
                f"Method '{self.name}' needs unlabelled target data; set `target:` in the config or pass target= "
                "to fit()."
            )
        if len(target) == 0:
            raise DataError(f"The target data of method '{self.name}' is empty; give at least one target example.")
        if ctx.train is not None and target.modality != ctx.train.modality:
            raise DataError(
                f"The target data is {target.modality} but the source data is {ctx.train.modality}; adapt between "
                "data of the same kind."
            )
        self._make_loader = ctx.make_loader
        self._target = target
        self._streams = {}
        self.build_modules(ctx.model)
        self.ema_setup(ctx)

    def build_modules(self, model: TransferModel) -> None:
        """Create owned modules (discriminators...) for ``model``; nothing by default."""

    @staticmethod
    def num_classes(model: TransferModel) -> int:
        return len(model.classes)

    @staticmethod
    def feature_dim(model: TransferModel) -> int:
        return int(model.backbone.feature_dim)

    # --- target batches -----------------------------------------------------------------------------------
    def on_epoch_start(self, model: TransferModel, epoch: int) -> None:
        super().on_epoch_start(model, epoch)
        self._epoch = epoch
        self._streams = {}  # restart every stream from this epoch's order

    def bn_batches(self, device: torch.device) -> Iterator[Any] | None:
        """One pass over the source batches, each with a target batch in the same forward (as training has them);
        ``None`` for text (its models have no batch-norm, and its batches are dicts)."""
        batches = super().bn_batches(device)
        if batches is None or self._target is None:
            return None

        def mixed() -> Iterator[Any]:
            for x_s in batches:
                x_t = self.next_target(device)
                if not (torch.is_tensor(x_s) and torch.is_tensor(x_t)):
                    return
                yield torch.cat([x_s, x_t])

        return mixed()

    def train_mode(self, model: TransferModel) -> None:
        super().train_mode(model)
        self.train()  # owned modules (discriminator dropout) train too

    def target_stream(self, augment: str | None = None) -> Iterator[Any]:
        """The epoch's endless stream of target batches ``(inputs, labels=-1)`` with augmentation ``augment``.

        Streams with different ``augment`` but the same epoch visit the target examples in the same order (the
        order depends only on the seed and the round), which is what weak/strong views of one batch need.
        """
        if augment not in self._streams:
            assert self._target is not None and self._make_loader is not None, "setup() was not called"
            target, make, epoch = self._target, self._make_loader, self._epoch
            drop_last = len(target) >= self.train_config.batch_size

            def factory(r: int) -> Any:
                kwargs: dict[str, Any] = {"train": True, "epoch": epoch * ROUNDS_PER_EPOCH + r, "drop_last": drop_last}
                if augment is not None:
                    kwargs["augment"] = augment
                return make(target, **kwargs)

            self._streams[augment] = infinite(factory)
        return self._streams[augment]

    def next_target(self, device: torch.device | str, augment: str | None = None) -> Any:
        """The next unlabelled target batch's inputs, on ``device``."""
        x, _ = next(self.target_stream(augment if augment is not None else self.target_augment))
        return to_device(x, torch.device(device))

    # --- forward passes -----------------------------------------------------------------------------------
    @staticmethod
    def forward_views(model: TransferModel, x_s: Any, x_t: Any) -> Views:
        """Features and logits of a source and a target batch: one pass for tensors, two for text dicts."""
        if torch.is_tensor(x_s) and torch.is_tensor(x_t):
            n = x_s.shape[0]
            f, z = forward_with_features(model, torch.cat([x_s, x_t]))
            return Views(f[:n], f[n:], z[:n], z[n:])
        f_s, z_s = forward_with_features(model, x_s)
        f_t, z_t = forward_with_features(model, x_t)
        return Views(f_s, f_t, z_s, z_t)

    @staticmethod
    def device_of(model: TransferModel) -> torch.device:
        return next(unwrap(model).parameters()).device


class ReversedHeadMethod(AdaptationMethod):
    """An adaptation method with a second classifier head behind a gradient reversal (MDD's adversary, MCD's second
    head): the head is built like the model's own, and the reversal coefficient follows ``max_coeff * s(progress)``
    with DANN's warm-up ``s`` (``params.gamma``; 0 keeps ``max_coeff`` from the start)."""

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self.grl = GradientReversal(0.0)

    def head_like_models(self, model: TransferModel) -> torch.nn.Module:
        """A new head of the model's head kind, width and dropout, from its features to its classes."""
        m = unwrap(model)
        return make_head(getattr(m, "head_kind", "linear"), self.feature_dim(m), self.num_classes(m),
                         getattr(m, "head_hidden", 512), getattr(m, "head_dropout", 0.0))

    def coefficient(self) -> float:
        p = self.params
        return p.max_coeff * (1.0 if p.gamma == 0 else dann_schedule(self.progress, p.gamma))

    def on_step_start(self, step: int, total_steps: int) -> None:
        super().on_step_start(step, total_steps)
        self.grl.coeff = self.coefficient()
