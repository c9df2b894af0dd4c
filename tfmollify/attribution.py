"""Base attribution methods evaluated at every noisy sample: gradient, input x gradient, IG.

Each method maps a batch of (noisy) inputs ``x [n, ...]`` to attributions of the same shape,
given ``grad(x)``: the gradient of the selected target score with respect to ``x`` (rows are
independent: layers run in inference mode).

* ``gradient``:             ``g(x)``
* ``input_x_gradient``:     ``x * g(x)``
* ``integrated_gradients``: ``(x - x0) * integral_0^1 g(x0 + s (x - x0)) ds`` (Sundararajan et
  al. 2017) with baseline ``x0`` and the integral by ``steps``-point Gauss-Legendre quadrature,
  which is exact when ``g`` is a polynomial of degree ``< 2 * steps`` along the path.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

__all__ = ["ATTRIBUTIONS", "gauss_legendre", "make"]

ATTRIBUTIONS = ("gradient", "input_x_gradient", "integrated_gradients")

GradFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of Gauss-Legendre quadrature on [0, 1] (weights sum to 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    return 0.5 * (nodes + 1.0), 0.5 * weights


def evaluations_per_sample(method: str, steps: int) -> int:
    """Model evaluations one attribution sample costs."""
    return int(steps) if method == "integrated_gradients" else 1


def make(method: str, steps: int = 16, baseline: np.ndarray | float = 0.0):
    """Builds ``attribute(x, targets, grad) -> a`` for a base method.

    Args:
        method: One of :data:`ATTRIBUTIONS`.
        steps: Quadrature points for integrated gradients.
        baseline: Integrated-gradients baseline, broadcastable to one example.

    Returns:
        A function of a batch ``x [n, ...]``, its per-row targets ``[n]`` and a gradient
        function ``grad(x, targets)``.
    """
    if method == "gradient":
        return lambda x, t, grad: grad(x, t)
    if method == "input_x_gradient":
        return lambda x, t, grad: x * grad(x, t)
    if method != "integrated_gradients":  # pragma: no cover - validated by the explainer
        raise ValueError(f"Unknown attribution {method!r}")
    nodes, weights = gauss_legendre(steps)
    baseline = np.asarray(baseline)

    def integrated_gradients(x: tf.Tensor, t: tf.Tensor, grad: GradFn) -> tf.Tensor:
        x0 = tf.cast(tf.broadcast_to(baseline, tf.shape(x)[1:]), x.dtype)[None]
        s = tf.constant(nodes, x.dtype)
        w = tf.constant(weights, x.dtype)
        extra = [1] * (x.shape.rank - 1)
        s_b = tf.reshape(s, [-1, 1, *extra])
        path = x0[None] + s_b * (x - x0)[None]  # [K, n, ...]
        flat = tf.reshape(path, tf.concat([[-1], tf.shape(x)[1:]], 0))
        g = tf.reshape(grad(flat, tf.tile(t, [len(nodes)])), tf.shape(path))
        avg = tf.tensordot(w, g, axes=[[0], [0]])
        return (x - x0) * avg

    return integrated_gradients
