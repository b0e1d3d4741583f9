"""THE one fit pipeline every entry point calls (see :mod:`transferkit.pipeline.fit`)."""

from .fit import FitPipeline, FittedModel, PreparedFit, fit_pipeline

__all__ = ["FitPipeline", "FittedModel", "PreparedFit", "fit_pipeline"]
