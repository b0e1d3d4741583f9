"""The application layer: one orchestrator per command, side by side, above the estimator and the fit pipeline.

* :func:`~transferkit.app.fit.run_fit`: ``transferkit fit`` (data -> the pipeline -> a run folder);
* :func:`~transferkit.app.compare.run_compare`: ``transferkit compare`` (methods x seeds on a source/target pair);
* :class:`~transferkit.app.runs.RunFolder`: the run folders they write (locked, checked, atomic).

The coming ``distil``, ``ensemble`` and ``compress`` commands belong here too. The submodules are imported on use,
so that ``transferkit --help`` stays fast.
"""
