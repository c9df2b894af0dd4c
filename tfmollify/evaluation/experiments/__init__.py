"""Experiments that reproduce the paper's evaluations on data available offline.

``table1``: the paper's Table 1 (Consistency, Invariance, Localization, Sparseness for the raw
gradient and the 15 mode x kernel methods), run with ``python -m
tfmollify.evaluation.experiments.table1`` or
``tfmollify table1``. See :func:`tfmollify.evaluation.experiments.table1.run`.
"""

from __future__ import annotations

__all__ = ["table1"]
