"""Base attribution methods evaluated at every noisy sample, built in or your own.

A base method is a function ``method(score_fn, x) -> a``: ``x [n, ...]`` is a batch of (noisy)
points, ``score_fn(v)`` gives the ``[n]`` target scores at points ``v`` (rows are independent:
layers run in inference mode, and ``v`` may hold ``k * n`` rows, ``k`` points per row of ``x``, as
integrated gradients' path does), and ``a [n, ...]`` is the attribution of every row. The method
is traced into the explainer's compiled graph, so it must be written with TensorFlow ops.

Built in (by name, ``attribution="..."``):

* ``gradient``:             ``g(x)``, the gradient of the score (:func:`tape_gradient`)
* ``input_x_gradient``:     ``x * g(x)``
* ``integrated_gradients``: ``(x - x0) * integral_0^1 g(x0 + s (x - x0)) ds`` (Sundararajan et
  al. 2017) with baseline ``x0`` and the integral by ``steps``-point Gauss-Legendre quadrature,
  which is exact when ``g`` is a polynomial of degree ``< 2 * steps`` along the path.
* ``grad_cam``:             ``relu(sum_c w_c A_c)`` with ``w_c`` the mean over positions of
  ``dS/dA_c`` (Selvaraju et al. 2017), at a layer with output ``A [n, ..., C]`` (channels last);
  the map has the layer's spatial shape ``[n, ...]`` (``attribute_at=`` a convolutional layer).
* ``grad_cam_plus_plus``:   Grad-CAM++ (Chattopadhyay et al. 2018): ``w_c = sum_ij a_ij^c
  relu(g_ij^c)`` with ``a_ij^c = g^2 / (2 g^2 + sum_ij(A_c) g^3)`` (the closed form for an
  exponential of the score), same shape as ``grad_cam``.

Your own method is a callable (``attribution=my_method``) or a name you :func:`register`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf

__all__ = [
    "ATTRIBUTIONS",
    "LAYER_ONLY",
    "evaluations_per_sample",
    "gauss_legendre",
    "get",
    "grad_cam",
    "grad_cam_plus_plus",
    "make",
    "names",
    "register",
    "tape_gradient",
    "unregister",
]

#: The built-in base methods.
ATTRIBUTIONS = (
    "gradient", "input_x_gradient", "integrated_gradients", "grad_cam", "grad_cam_plus_plus",
)
#: Built-ins that only exist at a layer with channels (``attribute_at=``).
LAYER_ONLY = ("grad_cam", "grad_cam_plus_plus")
#: Built-ins that are a function of the point ``h`` and the gradient there: one pass each.
FROM_GRADIENT = ("gradient", "input_x_gradient", "grad_cam", "grad_cam_plus_plus")

Method = Callable[[Callable[[tf.Tensor], tf.Tensor], tf.Tensor], tf.Tensor]

_LOCK = threading.Lock()
_REGISTRY: dict[str, Method] = {}


def tape_gradient(score_fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    """The gradient of ``score_fn`` at ``x``, row by row (zero where a score ignores ``x``).

    Args:
        score_fn: Maps points ``[m, ...]`` to ``[m]`` scores, each row's score depending on its
            own row only.
        x: Points ``[m, ...]``.

    Returns:
        ``d score_fn(x)[r] / d x[r]`` for every row ``r``, shaped like ``x``.

    Example:

    >>> import tensorflow as tf
    >>> import tfmollify as tfm
    >>> x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    >>> tfm.tape_gradient(lambda v: tf.reduce_sum(v**2, axis=1), x).numpy().tolist()
    [[2.0, 4.0], [6.0, 8.0]]
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = score_fn(x)
    return tape.gradient(score, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def grad_cam(h: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """Grad-CAM from a layer's output ``h [n, ..., C]`` and the score's gradient ``g`` there.

    Returns:
        ``relu(sum_c mean_pos(g_c) h_c)`` of shape ``[n, ...]`` (the positions).
    """
    axes = list(range(1, h.shape.rank - 1))
    w = tf.reduce_mean(g, axis=axes, keepdims=True)
    return tf.nn.relu(tf.reduce_sum(w * h, axis=-1))


def grad_cam_plus_plus(h: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++ from a layer's output ``h [n, ..., C]`` and the score's gradient ``g``.

    Returns:
        ``relu(sum_c w_c h_c)`` with ``w_c = sum_pos a relu(g_c)``, ``a = g^2 / (2 g^2 +
        sum_pos(h_c) g^3)`` (0 where ``g = 0``), shaped ``[n, ...]``.
    """
    axes = list(range(1, h.shape.rank - 1))
    g2 = tf.square(g)
    g3 = g2 * g
    total = tf.reduce_sum(h, axis=axes, keepdims=True)
    denominator = 2.0 * g2 + total * g3
    safe = tf.where(tf.equal(denominator, 0.0), tf.ones_like(denominator), denominator)
    a = tf.where(tf.equal(g, 0.0), tf.zeros_like(g), g2 / safe)
    w = tf.reduce_sum(a * tf.nn.relu(g), axis=axes, keepdims=True)
    return tf.nn.relu(tf.reduce_sum(w * h, axis=-1))


def from_gradient(method: str, h: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """A built-in of :data:`FROM_GRADIENT` from the point ``h`` and the gradient ``g`` there."""
    if method == "gradient":
        return g
    if method == "input_x_gradient":
        return h * g
    if method == "grad_cam":
        return grad_cam(h, g)
    if method == "grad_cam_plus_plus":
        return grad_cam_plus_plus(h, g)
    raise ValueError(f"{method!r} is not a gradient-based built-in")  # pragma: no cover


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of Gauss-Legendre quadrature on [0, 1] (weights sum to 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    return 0.5 * (nodes + 1.0), 0.5 * weights


def evaluations_per_sample(method: str | Callable, steps: int) -> int:
    """Model evaluations one attribution sample costs (a method of your own counts as one)."""
    return int(steps) if method == "integrated_gradients" else 1


def register(name: str, method: Method, *, replace: bool = False) -> Method:
    """Makes ``method`` available as ``attribution=name``.

    Args:
        name: The method's name (not one of :data:`ATTRIBUTIONS`).
        method: ``method(score_fn, x) -> a`` (see the module docstring).
        replace: Replace a method already registered under ``name`` (so that a notebook cell
            can run again).

    Returns:
        ``method``, so that ``register`` works as a decorator's body.

    Raises:
        TypeError: If ``name`` is not a string or ``method`` is not callable.
        ValueError: For a built-in name, or a name taken without ``replace=True``.

    Example:

    >>> import tfmollify as tfm
    >>> _ = tfm.register_attribution(
    ...     "twice_ixg", lambda f, x: 2 * tfm.tape_gradient(f, x) * x, replace=True)
    >>> "twice_ixg" in tfm.attribution.names()
    True
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"Argument `name` must be a non-empty string. Received: name={name!r}")
    if not callable(method):
        raise TypeError(
            "Argument `method` must be a callable method(score_fn, x) -> attribution. "
            f"Received: method={method!r}"
        )
    key = name.strip().lower()
    if key in ATTRIBUTIONS:
        raise ValueError(
            f"Argument `name`: {name!r} is a built-in attribution {list(ATTRIBUTIONS)}; "
            "choose another name."
        )
    with _LOCK:
        if key in _REGISTRY and not replace:
            raise ValueError(
                f"An attribution named {name!r} is already registered. Pass replace=True to "
                "replace it."
            )
        _REGISTRY[key] = method
    return method


def unregister(name: str) -> None:
    """Removes a method registered with :func:`register` (a missing name is a ``KeyError``)."""
    with _LOCK:
        del _REGISTRY[str(name).strip().lower()]


def names() -> tuple[str, ...]:
    """The built-in names, then the registered ones."""
    with _LOCK:
        return (*ATTRIBUTIONS, *sorted(_REGISTRY))


def get(value: str | Method) -> tuple[str, Method | None]:
    """``(name, method)`` for ``attribution=value``: ``method`` is None for a built-in.

    Raises:
        TypeError: For a value that is neither a string nor a callable.
        ValueError: For an unknown name (the message lists the known ones).
    """
    if callable(value) and not isinstance(value, str):
        return getattr(value, "__name__", type(value).__name__), value
    if not isinstance(value, str):
        raise TypeError(
            f"Argument `attribution` must be one of {list(names())} or a callable "
            f"method(score_fn, x) -> attribution. Received: attribution={value!r}"
        )
    key = value.strip().lower()
    if key in ATTRIBUTIONS:
        return key, None
    with _LOCK:
        method = _REGISTRY.get(key)
    if method is None:
        raise ValueError(
            f"Argument `attribution` must be one of {list(names())} (built-in or registered "
            "with tfmollify.register_attribution) or a callable method(score_fn, x). "
            f"Received: attribution={value!r}"
        )
    return key, method


def make(method: str, steps: int = 16, baseline: np.ndarray | float = 0.0) -> Method:
    """A built-in method as ``method(score_fn, x) -> a``.

    Args:
        method: One of :data:`ATTRIBUTIONS` other than :data:`LAYER_ONLY`.
        steps: Quadrature points for integrated gradients.
        baseline: Integrated-gradients baseline, broadcastable to one example.

    Returns:
        The method (see the module docstring).
    """
    if method == "gradient":
        return tape_gradient
    if method == "input_x_gradient":
        return lambda score_fn, x: x * tape_gradient(score_fn, x)
    if method != "integrated_gradients":  # pragma: no cover - validated by the explainer
        raise ValueError(f"Unknown attribution {method!r}")
    nodes, weights = gauss_legendre(steps)
    baseline = np.asarray(baseline)

    def integrated_gradients(score_fn: Callable, x: tf.Tensor) -> tf.Tensor:
        x0 = tf.cast(tf.broadcast_to(baseline, tf.shape(x)[1:]), x.dtype)[None]
        s = tf.constant(nodes, x.dtype)
        w = tf.constant(weights, x.dtype)
        extra = [1] * (x.shape.rank - 1)
        s_b = tf.reshape(s, [-1, 1, *extra])
        path = x0[None] + s_b * (x - x0)[None]  # [K, n, ...]
        flat = tf.reshape(path, tf.concat([[-1], tf.shape(x)[1:]], 0))  # row k * n + i
        g = tf.reshape(tape_gradient(score_fn, flat), tf.shape(path))
        avg = tf.tensordot(w, g, axes=[[0], [0]])
        return (x - x0) * avg

    return integrated_gradients
