"""AdaptGrad's bounded noise: the per-element kernel scale that keeps noise inside a range.

AdaptGrad (Zhou et al., NeurIPS 2025, arXiv 2410.07711; code ``AiShare-WHU/AdaptGrad``) gives
every input element ``x`` in a valid range ``[low, high]`` its own noise scale, chosen so that a
fraction ``alpha`` of the noise on that element lies within the distance ``t`` from ``x`` to the
nearer bound. This module is the NumPy/SciPy reference of that rule for the five kernels of
``reference.kernels``; it never imports TensorFlow.

Notation. ``Z`` is a standard kernel variable (density ``phi``, cdf ``F``, symmetric:
``F(-u) = 1 - F(u)``), the noisy element is ``x + eps Z`` with ``eps >= 0``, and

    t = min(x - low, high - x)      (distance to the nearer bound)
    T = max(x - low, high - x)      (distance to the farther bound), 0 <= t <= T.

1. The scale (eq. 30 per element, with ``r = t``). For ``t > 0`` require
   ``P(|eps Z| <= t) = alpha``. With ``u = t/eps`` and symmetry,
   ``P(|Z| <= u) = F(u) - F(-u) = 2 F(u) - 1``, so ``2 F(t/eps) - 1 = alpha``, i.e.
   ``t/eps = q_alpha := F^-1((1 + alpha)/2)`` and

       eps = t / q_alpha = reference.scale.epsilon(kernel, t, alpha).

   The root is unique: ``F`` is strictly increasing on the support and ``(1 + alpha)/2`` lies
   in ``(1/2, 1)``. Per kernel ``2 F(u) - 1`` is ``erf(u/sqrt 2)``, ``(2/pi) arctan u``,
   ``tanh u``, ``tanh(u/2)`` and ``u`` (``u <= 1``), hence

   * gaussian    eps = t / (sqrt(2) erfinv(alpha))   (AdaptGrad's ``AdaptedGaussianSigma``)
   * poisson     eps = t / tan(pi alpha / 2)
   * hyperbolic  eps = t / artanh(alpha)
   * sigmoid     eps = t / ln((1 + alpha)/(1 - alpha)) = t / (2 artanh(alpha))
   * rect        eps = t / alpha   (support ``[x - eps, x + eps]``, wider than ``[x-t, x+t]``)

   An element on a bound (``t = 0``) gets ``eps = 0``: no noise, the element stays at ``x``.
   ``P(|eps Z| <= 0) = alpha`` has no solution ``eps > 0``; ``eps = 0`` is the limit of
   ``t / q_alpha`` as ``t -> 0`` and what AdaptGrad's code computes (``0 / (sqrt 2 erfinv a)``).

2. The probability of staying inside. For ``eps > 0``,
   ``P(low <= x + eps Z <= high) = P(-(x - low)/eps <= Z <= (high - x)/eps)``; by the symmetry
   of ``Z`` this is the same with the two distances swapped, so it equals
   ``F(T/eps) - F(-t/eps) = [F(t/eps) - 1/2] + [F(T/eps) - 1/2]``, i.e.

       P(inside) = alpha/2 + P(0 <= eps Z <= T).

   Because ``T >= t``, ``P(0 <= eps Z <= T) >= P(0 <= eps Z <= t) = alpha/2``, so

       alpha <= P(inside) <= (1 + alpha)/2,   P(inside) - alpha = F(q_alpha T/t) - F(q_alpha).

   * Equality ``P(inside) = alpha`` holds iff ``T = t``, i.e. ``x = (low + high)/2`` (the
     centre), for every kernel: ``F`` is strictly increasing just above ``q_alpha`` (for rect
     ``q_alpha = alpha < 1`` lies inside the support ``[-1, 1]``).
   * The noise leaves through the nearer bound with probability exactly ``(1 - alpha)/2``,
     whatever ``T``; through the farther bound with ``P(eps Z > T) <= (1 - alpha)/2``.
   * The upper value ``(1 + alpha)/2`` is reached iff ``P(eps Z > T) = 0``: for the kernels of
     unbounded support only when the farther bound is infinite (it is approached as
     ``T -> inf``); for rect as soon as ``T >= eps = t/alpha``.
   * For ``eps = 0`` the element stays at ``x``, inside: ``P(inside) = 1``.

3. The variance of the noise. ``Var(x + eps Z) = eps^2 Var(Z)`` with ``Var(Z)`` = 1, inf, pi^2/12,
   pi^2/3, 1/3 (``reference.kernels.variance``); for the Gaussian ``t^2 / (2 erfinv(alpha)^2)``.
   The poisson (Cauchy) kernel has no finite variance.

``prove_inside_identity`` proves the identity of 2 with SymPy for every kernel; the closed forms of
1 are proved in ``reference.proofs`` (eq. 30).

What AdaptGrad's code does (``saliency.py``, commits 5b15c96 and 1513b70):

* ``AdaptedBound.get_bound`` computes ``t = min(|x - lower|, |x - upper|)`` with absolute values
  and returns the interval ``(-t, t)``; ``AdaptedGaussianSigma.get_sigma`` takes its half width
  and returns ``t / (sqrt(2) erfinv(alpha))`` in float32. Only the Gaussian kernel exists there.
* Outside ``[lower, upper]`` the absolute values give the distance to the nearer bound with no
  error (their MNIST "Bias" run shifts the data to ``[1, 2]`` but keeps the bounds ``(0, 1)``).
  This reference raises ``ValueError`` instead: there the rule guarantees nothing.
* ``alpha`` is the confidence level (0.95 in their experiments; 0.99, 0.995, 0.999 suggested).
  The bounds may be scalars or arrays (their ImageNet runs use one scalar range,
  ``(-2.117904, 2.64)``: the minimum and maximum over the three normalised channels).
* Their ``SmoothGradient`` averages ``n + 1`` gradients, the first at the clean input, and drops
  samples with a NaN; that is the estimator, not the scale, and is not modelled here.

Example:
    >>> import numpy as np
    >>> from reference import adaptgrad
    >>> eps = adaptgrad.scale("gaussian", [0.0, 0.25, 0.5], 0.0, 1.0, 0.95)
    >>> np.round(eps, 4).tolist()
    [0.0, 0.1276, 0.2551]
    >>> np.round(adaptgrad.inside_probability("gaussian", [0.0, 0.25, 0.5], 0.0, 1.0, eps), 4)
    array([1.   , 0.975, 0.95 ])
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import sympy as sp
from numpy.typing import ArrayLike

from reference import kernels
from reference import scale as _scale
from reference.symbolic import symbolic

__all__ = [
    "bound_distances",
    "inside_identity_holds",
    "inside_probability",
    "noise_variance",
    "prove_inside_identity",
    "quantile",
    "scale",
]


def _as_float_array(arg: str, value: ArrayLike) -> np.ndarray:
    if np.iscomplexobj(value):
        raise TypeError(f"Argument `{arg}` must be real. Received: {arg}={value!r}")
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Argument `{arg}` must be a real number or array. Received: {arg}={value!r}"
        ) from exc
    if np.any(np.isnan(out)):
        raise ValueError(f"Argument `{arg}` must not contain NaN. Received: {arg}={value!r}")
    return out


def _broadcast(arg: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return np.broadcast_to(value, shape)
    except ValueError as exc:
        raise ValueError(
            f"Argument `{arg}` of shape {value.shape} does not broadcast to the shape of `x`, "
            f"{shape}. Pass a scalar or an array broadcastable to `x`."
        ) from exc


def _check_range(x: ArrayLike, low: ArrayLike, high: ArrayLike) -> tuple[np.ndarray, ...]:
    """Validated float64 ``x, low, high``, the bounds broadcast to the shape of ``x``."""
    xa = _as_float_array("x", x)
    if not np.all(np.isfinite(xa)):
        raise ValueError(f"Argument `x` must be finite. Received: x={x!r}")
    lo = _broadcast("low", _as_float_array("low", low), xa.shape)
    hi = _broadcast("high", _as_float_array("high", high), xa.shape)
    if np.any(lo == np.inf) or np.any(hi == -np.inf):
        raise ValueError(
            f"Arguments `low` and `high` must satisfy low < inf and high > -inf. "
            f"Received: low={low!r}, high={high!r}"
        )
    if not np.all(lo < hi):
        raise ValueError(
            f"Arguments `low` and `high` must satisfy low < high for every element. "
            f"Received: low={low!r}, high={high!r}"
        )
    if np.any(np.isinf(lo) & np.isinf(hi)):
        raise ValueError(
            "Arguments `low` and `high` must not both be infinite for an element (the distance "
            f"to the nearer bound would be infinite). Received: low={low!r}, high={high!r}"
        )
    outside = (xa < lo) | (xa > hi)
    if np.any(outside):
        idx = tuple(int(i) for i in np.argwhere(outside)[0])
        raise ValueError(
            f"Argument `x` must lie in [low, high] for every element; x{list(idx)}="
            f"{float(xa[idx])!r} is outside [{float(lo[idx])!r}, {float(hi[idx])!r}]. Clip the "
            "input or widen `low`/`high`."
        )
    return xa, lo, hi


def _check_alpha(alpha: float) -> float:
    if (
        isinstance(alpha, (bool, np.bool_, str, bytes))
        or np.ndim(alpha) != 0
        or np.iscomplexobj(alpha)
    ):
        raise TypeError(f"Argument `alpha` must be a real scalar. Received: alpha={alpha!r}")
    try:
        a = float(alpha)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Argument `alpha` must be a real scalar. Received: alpha={alpha!r}"
        ) from exc
    if not (0.0 < a < 1.0):
        raise ValueError(
            f"Argument `alpha` must be in the open interval (0, 1). Received: alpha={alpha!r}"
        )
    return a


def bound_distances(
    x: ArrayLike, low: ArrayLike, high: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Distances of every element to its nearer and its farther bound.

    Args:
        x: the input, any shape, finite, with ``low <= x <= high`` element-wise.
        low: lower bound, a scalar or an array broadcastable to ``x`` (may be ``-inf``).
        high: upper bound, a scalar or an array broadcastable to ``x`` (may be ``inf``); not
            both bounds of an element infinite.

    Returns:
        ``(t, t_far)``: float64 arrays of the shape of ``x``, ``t = min(x - low, high - x)``
        (finite, ``>= 0``) and ``t_far = max(x - low, high - x)`` (``inf`` for a one-sided range).

    Raises:
        TypeError: non-numeric or complex arguments.
        ValueError: NaN, non-finite ``x``, ``low >= high``, both bounds infinite, shapes that do
            not broadcast, or ``x`` outside ``[low, high]``.

    Example:
        >>> t, t_far = bound_distances([0.25, 1.0], 0.0, 1.0)
        >>> t.tolist(), t_far.tolist()
        ([0.25, 0.0], [0.75, 1.0])
    """
    xa, lo, hi = _check_range(x, low, high)
    below, above = xa - lo, hi - xa
    return np.minimum(below, above), np.maximum(below, above)


def quantile(kernel_name: str, alpha: float) -> float:
    """``q_alpha = F^-1((1 + alpha)/2)``: the ratio ``t / eps`` of the rule (``1 / epsilon(r=1)``).

    Args:
        kernel_name: kernel name or alias (``reference.kernels.canonical_name``).
        alpha: coverage, ``0 < alpha < 1``.

    Returns:
        ``sqrt(2) erfinv(alpha)``, ``tan(pi alpha/2)``, ``artanh(alpha)``, ``2 artanh(alpha)`` or
        ``alpha`` (gaussian, poisson, hyperbolic, sigmoid, rect).

    Raises:
        ValueError: unknown kernel or ``alpha`` not in (0, 1).
        TypeError: non-numeric ``alpha``.

    Example:
        >>> round(quantile("gaussian", 0.95), 6)
        1.959964
    """
    key = kernels.canonical_name(kernel_name)
    a = _check_alpha(alpha)
    return 1.0 / _scale.epsilon(key, 1.0, a)


def scale(
    kernel_name: str, x: ArrayLike, low: ArrayLike, high: ArrayLike, alpha: float
) -> np.ndarray:
    """AdaptGrad's per-element kernel scale: eq. 30 with ``r = t``, ``t`` the nearer distance.

    ``eps = t / F^-1((1 + alpha)/2)`` with ``t = min(x - low, high - x)``, so that
    ``P(|eps Z| <= t) = alpha`` on every element (see the module docstring). For the Gaussian
    this is ``t / (sqrt(2) erfinv(alpha))``. An element on a bound (``t = 0``) gets ``eps = 0``:
    no noise on it, as in AdaptGrad's code.

    Args:
        kernel_name: kernel name or alias (``reference.kernels.canonical_name``).
        x: the input, any shape, finite, with ``low <= x <= high`` element-wise.
        low: lower bound, a scalar or an array broadcastable to ``x``; ``-inf`` allowed when
            ``high`` is finite there.
        high: upper bound, likewise; ``inf`` allowed when ``low`` is finite there.
        alpha: fraction of the noise within ``t`` of ``x``, ``0 < alpha < 1`` (AdaptGrad uses 0.95).

    Returns:
        float64 array of the shape of ``x``, ``eps >= 0``; equal to
        ``reference.scale.epsilon(kernel_name, t, alpha)`` wherever ``t > 0``.

    Raises:
        ValueError: unknown kernel, ``alpha`` not in (0, 1), NaN, non-finite ``x``,
            ``low >= high``, both bounds of an element infinite, shapes that do not broadcast,
            or ``x`` outside ``[low, high]``.
        TypeError: non-numeric or complex arguments.

    Example:
        >>> scale("rect", [0.1, 0.5], 0.0, 1.0, 0.5).tolist()
        [0.2, 1.0]
    """
    key = kernels.canonical_name(kernel_name)
    a = _check_alpha(alpha)
    t, _ = bound_distances(x, low, high)
    return t / quantile(key, a)


def inside_probability(
    kernel_name: str, x: ArrayLike, low: ArrayLike, high: ArrayLike, eps: ArrayLike
) -> np.ndarray:
    """Exact ``P(low <= x + eps Z <= high)`` per element, from the kernel's cdf.

    Computed as one minus the two exit probabilities, each from the lower tail of the cdf:
    ``1 - F(-(x - low)/eps) - F(-(high - x)/eps)`` (accurate when both are small). With
    ``eps`` from ``scale`` this is ``alpha/2 + P(0 <= eps Z <= t_far)``, between ``alpha`` (at the
    centre of the range) and ``(1 + alpha)/2``.

    Args:
        kernel_name: kernel name or alias.
        x: the input, any shape, finite, with ``low <= x <= high`` element-wise.
        low: lower bound, scalar or broadcastable to ``x`` (may be ``-inf``).
        high: upper bound, scalar or broadcastable to ``x`` (may be ``inf``).
        eps: per-element scale, scalar or broadcastable to ``x``, finite and ``>= 0``.

    Returns:
        float64 array in [0, 1] of the shape of ``x``; 1 where ``eps = 0``.

    Raises:
        ValueError: unknown kernel, a negative or non-finite ``eps``, and the range errors of
            ``scale``.
        TypeError: non-numeric or complex arguments.

    Example:
        >>> float(inside_probability("rect", 0.5, 0.0, 1.0, 0.5))
        1.0
        >>> float(inside_probability("rect", 0.5, 0.0, 1.0, 1.0))
        0.5
    """
    key = kernels.canonical_name(kernel_name)
    xa, lo, hi = _check_range(x, low, high)
    e = _broadcast("eps", _as_float_array("eps", eps), xa.shape)
    if not np.all(np.isfinite(e) & (e >= 0.0)):
        raise ValueError(f"Argument `eps` must be finite and >= 0. Received: eps={eps!r}")
    positive = e > 0.0
    safe = np.where(positive, e, 1.0)
    with np.errstate(over="ignore"):
        exit_low = kernels.cdf(key, -(xa - lo) / safe)
        exit_high = kernels.cdf(key, -(hi - xa) / safe)
    return np.where(positive, 1.0 - exit_low - exit_high, 1.0)


def noise_variance(kernel_name: str, eps: ArrayLike) -> np.ndarray:
    """Per-element variance ``eps^2 Var(Z)`` of the noise ``eps Z``.

    This is what VarGrad of a base method returning the noisy point itself should recover.

    Args:
        kernel_name: kernel name or alias of a finite-variance kernel (not poisson/cauchy).
        eps: per-element scales (e.g. from ``scale``), finite and ``>= 0``, any shape.

    Returns:
        float64 array of the shape of ``eps``.

    Raises:
        ValueError: unknown kernel, the poisson (Cauchy) kernel (no finite variance), or a
            negative or non-finite ``eps``.
        TypeError: non-numeric or complex ``eps``.

    Example:
        >>> noise_variance("rect", [0.0, 3.0]).tolist()
        [0.0, 3.0]
    """
    key = kernels.canonical_name(kernel_name)
    var = kernels.variance(key)
    if not math.isfinite(var):
        raise ValueError(
            f"Argument `kernel_name` must name a kernel with a finite variance; {key!r} (Cauchy) "
            f"has none. Received: kernel_name={kernel_name!r}. Use gaussian, hyperbolic, "
            "sigmoid or rect."
        )
    e = _as_float_array("eps", eps)
    if not np.all(np.isfinite(e) & (e >= 0.0)):
        raise ValueError(f"Argument `eps` must be finite and >= 0. Received: eps={eps!r}")
    return e * e * var


@cache
def prove_inside_identity(kernel_name: str) -> bool:
    """SymPy proof of ``F(b) - F(-a) = (F(a) - 1/2) + (F(b) - 1/2)`` for all ``a, b > 0``.

    With ``a = t/eps`` and ``b = t_far/eps`` (or swapped: the identity is symmetric in them
    after the rewrite) this is ``P(inside) = P(|eps Z| <= t)/2 + P(0 <= eps Z <= t_far)`` of the
    module docstring; it reduces to ``F(-a) + F(a) = 1``. For rect the cdf is piecewise and
    every branch of the folded difference must vanish for ``a > 0``.

    Args:
        kernel_name: kernel name or alias.

    Returns:
        True when SymPy reduces the difference to exactly 0.
    """
    k = symbolic(kernel_name)
    return inside_identity_holds(k.cdf, k.x)


def inside_identity_holds(cdf: sp.Expr, x: sp.Symbol) -> bool:
    """Whether ``F(b) - F(-a) - (F(a) - 1/2) - (F(b) - 1/2)`` is exactly 0 for all ``a, b > 0``.

    Args:
        cdf: a SymPy cdf ``F`` in the variable ``x`` (a ``Piecewise`` is allowed).
        x: the variable of ``cdf``.

    Returns:
        True when SymPy reduces the difference to 0 (every branch, for a ``Piecewise``); False
        for a cdf that is not symmetric, e.g. ``(1 + erf(x - 1))/2``.
    """
    a, b = sp.symbols("a b", positive=True)
    half = sp.Rational(1, 2)
    diff = (cdf.subs(x, b) - cdf.subs(x, -a)) - (
        (cdf.subs(x, a) - half) + (cdf.subs(x, b) - half)
    )
    diff = sp.simplify(sp.piecewise_fold(diff))
    if isinstance(diff, sp.Piecewise):
        covered = sp.simplify(sp.Or(*(cond for _val, cond in diff.args)))
        return covered == sp.true and all(
            sp.simplify(val.rewrite(sp.exp)) == 0 for val, _cond in diff.args
        )
    return diff == 0 or sp.simplify(diff.rewrite(sp.exp)) == 0
