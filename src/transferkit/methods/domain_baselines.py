"""The two ends of every domain-adaptation comparison: ``source-only`` (the floor) and ``target-oracle`` (the
ceiling).

* ``source-only``: supervised training on the labelled source data alone, ``L = CE(h(f(x_s)), y_s)``, evaluated on
  the target. It is *deliberately* the base :class:`~transferkit.methods.base.Method`'s loss (plain fine-tuning,
  with the same freezing, learning rates, label smoothing and mixup options) and ignores any target data it is
  given, so that an adaptation method compared with it under the same configuration differs only by its
  adaptation term. (Adaptation methods also pass the target batch through batch-norm with the source batch; that
  is part of what they do, and source-only does not.)
* ``target-oracle``: the same supervised training, but on the *labelled target* training split, which the API hands
  to methods with ``uses_target_labels = True`` as ``ctx.extra["target_oracle"]``. No adaptation method may see
  these labels; the oracle shows how much of the gap to a model trained on the target is left. It trains with the
  one training loop (:meth:`TargetOracle.custom_fit`), choosing its epoch on the validation data it is given.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..data.base import Dataset
from ..errors import ConfigError, DataError
from .base import FitContext, Method
from .registry import register


@register
class SourceOnly(Method):
    name: ClassVar[str] = "source-only"
    summary: ClassVar[str] = "baseline: supervised training on the source alone (target data is ignored)"


@register
class TargetOracle(Method):
    name: ClassVar[str] = "target-oracle"
    summary: ClassVar[str] = "upper baseline: supervised training on the labelled target training split"
    uses_target_labels: ClassVar[bool] = True

    def custom_fit(self, ctx: FitContext, val: Dataset | None, **kwargs: Any) -> Any:
        """The one training loop on ``ctx.extra["target_oracle"]`` instead of the source training split."""
        from ..train.loop import fit as fit_loop

        oracle = ctx.extra.get("target_oracle")
        if oracle is None:
            raise ConfigError(
                "Method 'target-oracle' trains on the labelled target training split but got none; give a labelled "
                "`target:` data set in the config, or extra={'target_oracle': labelled_target} to fit()."
            )
        if not oracle.is_labelled:
            raise DataError("The target data of 'target-oracle' has no labels; the oracle needs labelled target data.")
        if list(oracle.classes) != list(ctx.model.classes):
            raise DataError("The labelled target data has a different label set from the source; use the same classes.")
        extra = {k: v for k, v in ctx.extra.items() if k != "target_oracle"}
        return fit_loop(ctx.model, self, oracle, val, ctx.model_config, ctx.train_config,
                        checkpoint_dir=ctx.options.get("checkpoint_dir"), resume=bool(ctx.options.get("resume")),
                        extra=extra, **kwargs)
