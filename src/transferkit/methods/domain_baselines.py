"""The two ends of every domain-adaptation comparison: ``source-only`` (the floor) and ``target-oracle`` (the
ceiling).

* ``source-only``: supervised training on the labelled source data alone, ``L = CE(h(f(x_s)), y_s)``, evaluated on
  the target. It is *deliberately* the base :class:`~transferkit.methods.base.Method`'s loss (plain fine-tuning,
  with the same freezing, learning rates, label smoothing and mixup options) and ignores any target data it is
  given, so that an adaptation method compared with it under the same configuration differs only by its
  adaptation term. (Adaptation methods also pass the target batch through batch-norm with the source batch; that
  is part of what they do, and source-only does not.)
* ``target-oracle``: the same supervised training, but on the *labelled target* training split, which the pipeline
  hands only to a method that declares ``"target_oracle"`` in its ``needs``, as ``ctx.extra["target_oracle"]``. No
  adaptation method may see these labels; the oracle shows how much of the gap to a model trained on the target is
  left. The one training loop trains it on that split (:meth:`TargetOracle.training_data`), choosing its epoch on
  the validation data it is given.
"""

from __future__ import annotations

from typing import ClassVar

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
    needs: ClassVar[frozenset[str]] = frozenset({"target_oracle"})

    def training_data(self, ctx: FitContext) -> Dataset:
        """The labelled target training split (``ctx.extra["target_oracle"]``) instead of the source's."""
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
        return oracle
