"""Evaluation: metrics of explanations, pictures of them, and the paper's experiments.

:mod:`~tfmollify.evaluation.metrics`, :mod:`~tfmollify.evaluation.plot`,
:mod:`~tfmollify.evaluation.digits` (the offline digits data and CNN) and
:mod:`tfmollify.evaluation.experiments`.
"""
