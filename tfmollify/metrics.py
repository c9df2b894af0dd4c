"""Evaluation metrics for attributions.

``sparseness``: the Gini index of ``|attribution|`` per example (Chalasani et al. 2020, "Concise
explanations of neural networks using adversarial training"; as in Quantus' ``Sparseness``).
For the sorted absolute values ``v_1 <= ... <= v_n`` of one example,

    G = sum_i (2 i - n - 1) v_i / (n * sum_i v_i)

which is 0 when all values are equal and ``(n - 1)/n`` when a single value holds all the mass.
Higher is sparser.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["sparseness"]


def sparseness(attributions: Any) -> np.ndarray:
    """Gini index of ``|attribution|`` for each example.

    Args:
        attributions: ``[B, ...]`` array; each example is flattened.

    Returns:
        A float64 array ``[B]``; an all-zero example gives 0.

    Raises:
        ValueError: If ``attributions`` has no batch axis or contains NaN/Inf.

    Example:

    >>> import numpy as np
    >>> from tfmollify.metrics import sparseness
    >>> sparseness(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0]]))
    array([0.  , 0.75])
    """
    a = np.asarray(attributions, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(
            f"Argument `attributions` must have a batch axis: [B, ...]. Received shape {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("Argument `attributions` contains NaN or Inf.")
    v = np.sort(np.abs(a.reshape(a.shape[0], -1)), axis=1)
    n = v.shape[1]
    i = np.arange(1, n + 1)
    total = v.sum(axis=1)
    num = ((2 * i - n - 1) * v).sum(axis=1)
    return np.divide(num, n * total, out=np.zeros_like(total), where=total > 0)
