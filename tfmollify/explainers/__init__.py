"""What a user calls in-process: the explainers, their results, their export, their progress.

:class:`~tfmollify.explainers.explainer.Explainer` (and ``SmoothGrad``, ``NoiseGrad``,
``FusionGrad``), :func:`~tfmollify.explainers.export.export` to a SavedModel, and the progress
bar a long call shows (:mod:`~tfmollify.explainers.progress`).
"""
