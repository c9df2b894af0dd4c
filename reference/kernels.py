"""The five smoothing kernels of the paper, in float64 NumPy, from closed forms.

Every kernel is a symmetric probability density ``phi`` of scale 1. The scaled kernel is
``phi_eps(x) = phi(x / eps) / eps`` (the Dirac sequence of Definition 3.10); every function
here takes an optional ``scale`` (``eps``) argument that applies this substitution.

Kernels (canonical name: pdf, cdf, icdf):

* ``gaussian``:   phi(x) = exp(-x^2/2)/sqrt(2 pi),  Phi(x) = (1 + erf(x/sqrt 2))/2,
  Phi^-1(u) = sqrt(2) erfinv(2u - 1)
* ``poisson`` (alias ``cauchy``): phi(x) = 1/(pi (1 + x^2)),  Phi(x) = 1/2 + arctan(x)/pi,
  Phi^-1(u) = tan(pi (u - 1/2))
* ``hyperbolic``: phi(x) = 1/(2 cosh^2 x),  Phi(x) = (1 + tanh x)/2,  Phi^-1(u) = artanh(2u - 1)
  (the logistic distribution with scale 1/2)
* ``sigmoid`` (alias ``logistic``): phi(x) = e^x/(e^x + 1)^2,  Phi(x) = e^x/(e^x + 1),
  Phi^-1(u) = ln(u/(1 - u))
* ``rect`` (alias ``uniform``): phi(x) = 1/2 on [-1, 1],  Phi(x) = clip((x + 1)/2, 0, 1),
  Phi^-1(u) = 2u - 1

The implementations avoid overflow and cancellation in the tails (``atan2``, ``log1p``,
``expit``, ``exp(-2|x|)``), so that no NaN appears for finite or infinite arguments of any size.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

__all__ = [
    "KERNEL_ALIASES",
    "KERNEL_NAMES",
    "canonical_name",
    "cdf",
    "char_fn",
    "char_fn_deriv",
    "icdf",
    "logpdf",
    "pdf",
    "sample",
    "variance",
]

KERNEL_NAMES: tuple[str, ...] = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")
KERNEL_ALIASES: dict[str, str] = {"cauchy": "poisson", "logistic": "sigmoid", "uniform": "rect"}

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def canonical_name(name: str) -> str:
    """Returns the canonical kernel name for ``name`` (case-insensitive, aliases resolved).

    Args:
        name: one of ``KERNEL_NAMES`` or an alias (``cauchy``, ``logistic``, ``uniform``), in any
            letter case.

    Returns:
        The canonical name, an element of ``KERNEL_NAMES``.

    Raises:
        ValueError: if ``name`` is not a string naming a known kernel.
    """
    if not isinstance(name, str):
        raise ValueError(f"Argument `name` must be a kernel name (str). Received: name={name!r}")
    key = name.strip().lower()
    key = KERNEL_ALIASES.get(key, key)
    if key not in KERNEL_NAMES:
        allowed = sorted(KERNEL_NAMES + tuple(KERNEL_ALIASES))
        raise ValueError(
            f"Argument `name` must be one of {allowed} (case-insensitive). Received: name={name!r}"
        )
    return key


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not (scale > 0.0 and math.isfinite(scale)):
        raise ValueError(
            f"Argument `scale` must be a positive finite number. Received: scale={scale!r}"
        )
    return scale


def _as_float(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def pdf(name: str, x: ArrayLike, scale: float = 1.0) -> np.ndarray:
    """Density ``phi_eps(x) = phi(x / scale) / scale`` of a kernel.

    Args:
        name: kernel name (see ``canonical_name``).
        x: points, any shape.
        scale: ``eps > 0``.

    Returns:
        float64 array of the shape of ``x``.

    Raises:
        ValueError: unknown kernel or non-positive scale.
    """
    key = canonical_name(name)
    scale = _check_scale(scale)
    z = _as_float(x) / scale
    a = np.abs(z)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        if key == "gaussian":
            out = np.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
        elif key == "poisson":
            big = a > 1.0
            inv = np.divide(1.0, a, out=np.zeros_like(a), where=big)
            out = np.where(
                big, inv * inv / (math.pi * (1.0 + inv * inv)), 1.0 / (math.pi * (1.0 + a * a))
            )
        elif key == "hyperbolic":
            e = np.exp(-a)
            e2 = e * e  # exp(-2|x|) without overflow of 2|x|
            out = 2.0 * e2 / (1.0 + e2) ** 2
        elif key == "sigmoid":
            e = np.exp(-a)
            out = e / (1.0 + e) ** 2
        else:  # rect
            out = np.where(a <= 1.0, 0.5, 0.0)
    out = np.where(np.isnan(z), np.nan, out)
    return out / scale


def logpdf(name: str, x: ArrayLike, scale: float = 1.0) -> np.ndarray:
    """Log density ``log phi_eps(x)``; ``-inf`` outside the support of ``rect``.

    Args:
        name: kernel name.
        x: points, any shape.
        scale: ``eps > 0``.

    Returns:
        float64 array of the shape of ``x``.

    Raises:
        ValueError: unknown kernel or non-positive scale.
    """
    key = canonical_name(name)
    scale = _check_scale(scale)
    z = _as_float(x) / scale
    a = np.abs(z)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        if key == "gaussian":
            out = -0.5 * a * a - _LOG_SQRT_2PI
        elif key == "poisson":
            big = a > 1.0
            inv = np.divide(1.0, a, out=np.ones_like(a), where=big)
            out = np.where(
                big,
                -math.log(math.pi) + 2.0 * np.log(inv) - np.log1p(inv * inv),
                -math.log(math.pi) - np.log1p(a * a),
            )
        elif key == "hyperbolic":
            e = np.exp(-a)
            out = math.log(2.0) - 2.0 * a - 2.0 * np.log1p(e * e)
        elif key == "sigmoid":
            out = -a - 2.0 * np.log1p(np.exp(-a))
        else:  # rect
            out = np.where(a <= 1.0, -math.log(2.0), -np.inf)
    out = np.where(np.isnan(z), np.nan, out)
    return out - math.log(scale)


def cdf(name: str, x: ArrayLike, scale: float = 1.0) -> np.ndarray:
    """Cumulative distribution ``Phi(x / scale)``.

    Args:
        name: kernel name.
        x: points, any shape.
        scale: ``eps > 0``.

    Returns:
        float64 array in [0, 1] of the shape of ``x``.

    Raises:
        ValueError: unknown kernel or non-positive scale.
    """
    key = canonical_name(name)
    scale = _check_scale(scale)
    z = _as_float(x) / scale
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if key == "gaussian":
            out = special.ndtr(z)
        elif key == "poisson":
            # 1/2 + arctan(z)/pi == atan2(1, -z)/pi, without cancellation for z -> -inf.
            out = np.arctan2(1.0, -z) / math.pi
        elif key == "hyperbolic":
            out = special.expit(np.clip(z, -1e300, 1e300) * 2.0)
        elif key == "sigmoid":
            out = special.expit(z)
        else:  # rect
            out = np.clip(0.5 * z + 0.5, 0.0, 1.0)
    return np.where(np.isnan(z), np.nan, out)


def icdf(name: str, u: ArrayLike, scale: float = 1.0) -> np.ndarray:
    """Inverse cdf (quantile) ``scale * Phi^-1(u)`` for ``u`` in [0, 1]; NaN outside.

    Args:
        name: kernel name.
        u: probabilities, any shape.
        scale: ``eps > 0``.

    Returns:
        float64 array of the shape of ``u``; ``+-inf`` at ``u = 0, 1`` for the kernels of
        unbounded support, ``+-scale`` for ``rect``.

    Raises:
        ValueError: unknown kernel or non-positive scale.
    """
    key = canonical_name(name)
    scale = _check_scale(scale)
    p = _as_float(u)
    bad = ~((p >= 0.0) & (p <= 1.0))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if key == "gaussian":
            out = special.ndtri(p)
        elif key == "poisson":
            # tan(pi (u - 1/2)) loses the relative precision of small u; use cot in the tails.
            mid = (p >= 0.25) & (p <= 0.75)
            lo = p < 0.25
            out = np.where(
                mid,
                np.tan(math.pi * (p - 0.5)),
                np.where(lo, -1.0 / np.tan(math.pi * p), 1.0 / np.tan(math.pi * (1.0 - p))),
            )
        elif key == "hyperbolic":
            out = 0.5 * special.logit(p)
        elif key == "sigmoid":
            out = special.logit(p)
        else:  # rect
            out = 2.0 * p - 1.0
    out = np.where(bad, np.nan, out)
    return out * scale


def variance(name: str) -> float:
    """Variance of the standard (scale 1) kernel.

    Args:
        name: kernel name.

    Returns:
        1 (gaussian), inf (poisson/cauchy: no finite moments), pi^2/12 (hyperbolic),
        pi^2/3 (sigmoid), 1/3 (rect).

    Raises:
        ValueError: unknown kernel.
    """
    key = canonical_name(name)
    return {
        "gaussian": 1.0,
        "poisson": math.inf,
        "hyperbolic": math.pi**2 / 12.0,
        "sigmoid": math.pi**2 / 3.0,
        "rect": 1.0 / 3.0,
    }[key]


def _x_over_sinh(a: np.ndarray) -> np.ndarray:
    """a / sinh(a) for a >= 0, stable for a -> 0 and a -> inf."""
    small = a < 1e-3
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(-a)
        big = 2.0 * a * e / (-np.expm1(-2.0 * a))
        big = np.where(np.isinf(a), 0.0, big)
    a2 = a * a
    series = 1.0 - a2 / 6.0 + 7.0 * a2 * a2 / 360.0
    return np.where(small, series, big)


def _x_over_sinh_deriv(a: np.ndarray) -> np.ndarray:
    """d/da [a / sinh(a)] = (sinh a - a cosh a) / sinh^2 a for a >= 0."""
    small = a < 0.05
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        e2 = np.exp(-2.0 * a)
        one_minus = -np.expm1(-2.0 * a)
        inv_sinh = 2.0 * np.exp(-a) / one_minus
        coth = (1.0 + e2) / one_minus
        big = inv_sinh * (1.0 - a * coth)
        big = np.where(np.isinf(a), 0.0, big)
    a2 = a * a
    # Taylor series of (a/sinh a)' = -a/3 + 7 a^3/90 - 31 a^5/2520 + 127 a^7/75600.
    series = a * (-1.0 / 3.0 + a2 * (7.0 / 90.0 + a2 * (-31.0 / 2520.0 + a2 * 127.0 / 75600.0)))
    return np.where(small, series, big)


def char_fn(name: str, t: ArrayLike) -> np.ndarray:
    """Characteristic function ``chi(t) = E[cos(t Z)] = E[exp(i t Z)]`` of the standard kernel.

    ``chi(t)`` is real because every kernel is symmetric. The scaled kernel has
    ``chi_eps(t) = chi(eps t)``.

    Args:
        name: kernel name.
        t: frequencies, any shape.

    Returns:
        float64 array: gaussian exp(-t^2/2); poisson exp(-|t|); hyperbolic
        (pi t/2)/sinh(pi t/2); sigmoid pi t/sinh(pi t); rect sin(t)/t.

    Raises:
        ValueError: unknown kernel.
    """
    key = canonical_name(name)
    s = _as_float(t)
    a = np.abs(s)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if key == "gaussian":
            out = np.exp(-0.5 * a * a)
        elif key == "poisson":
            out = np.exp(-a)
        elif key == "hyperbolic":
            out = _x_over_sinh(0.5 * math.pi * a)
        elif key == "sigmoid":
            out = _x_over_sinh(math.pi * a)
        else:  # rect
            finite = np.isfinite(a)
            safe = np.where(finite, a, 0.0)
            out = np.where(finite, np.sinc(safe / math.pi), 0.0)
    return np.where(np.isnan(s), np.nan, out)


def char_fn_deriv(name: str, t: ArrayLike) -> np.ndarray:
    """Derivative ``chi'(t) = -E[Z sin(t Z)]`` of the characteristic function.

    Args:
        name: kernel name.
        t: frequencies, any shape.

    Returns:
        float64 array. For ``poisson`` (exp(-|t|)), the one-sided value ``-sign(t) exp(-|t|)``
        (0 at t = 0, where chi is not differentiable, consistent with E|Z| = inf).

    Raises:
        ValueError: unknown kernel.
    """
    key = canonical_name(name)
    s = _as_float(t)
    a = np.abs(s)
    sign = np.sign(s)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if key == "gaussian":
            out = np.where(np.isinf(a), 0.0, -s * np.exp(-0.5 * a * a))
        elif key == "poisson":
            out = -sign * np.exp(-a)
        elif key == "hyperbolic":
            out = sign * 0.5 * math.pi * _x_over_sinh_deriv(0.5 * math.pi * a)
        elif key == "sigmoid":
            out = sign * math.pi * _x_over_sinh_deriv(math.pi * a)
        else:  # rect: (t cos t - sin t)/t^2
            finite = np.isfinite(a) & (a > 0)
            safe = np.where(finite, a, 1.0)
            big = (safe * np.cos(safe) - np.sin(safe)) / (safe * safe)
            a2 = a * a
            series = a * (-1.0 / 3.0 + a2 * (1.0 / 30.0 + a2 * (-1.0 / 840.0 + a2 / 45360.0)))
            out = sign * np.where(a < 0.05, series, np.where(finite, big, 0.0))
    return np.where(np.isnan(s), np.nan, out)


def sample(
    name: str, rng: np.random.Generator, size: int | tuple[int, ...], scale: float = 1.0
) -> np.ndarray:
    """Draws i.i.d. samples ``scale * Z`` with ``Z`` from the standard kernel.

    Args:
        name: kernel name.
        rng: a ``numpy.random.Generator``.
        size: output shape.
        scale: ``eps > 0``.

    Returns:
        float64 array of shape ``size``.

    Raises:
        ValueError: unknown kernel or non-positive scale.
    """
    key = canonical_name(name)
    scale = _check_scale(scale)
    if key == "gaussian":
        z = rng.standard_normal(size)
    elif key == "poisson":
        z = rng.standard_cauchy(size)
    elif key == "hyperbolic":
        z = rng.logistic(0.0, 0.5, size)
    elif key == "sigmoid":
        z = rng.logistic(0.0, 1.0, size)
    else:
        z = rng.uniform(-1.0, 1.0, size)
    return scale * z
