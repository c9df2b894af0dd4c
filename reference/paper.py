"""Formulas of the paper transcribed verbatim (right or wrong), next to their corrections.

Only for the findings tests; the rest of ``reference`` uses the corrected forms. Eq. 45 lives
in ``reference.example.paper_eq45`` and eqs. 47-51 in ``reference.scale.paper_epsilon``;
both are re-exported here.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from reference import kernels
from reference.example import paper_eq45
from reference.scale import paper_epsilon

__all__ = [
    "eq18_printed_density",
    "eq20_printed_density",
    "eq46_printed_unnormalised",
    "eq52_printed_scale",
    "ng_density",
    "paper_cdf",
    "paper_epsilon",
    "paper_eq45",
    "paper_icdf",
    "paper_pdf",
    "sg_density",
    "standard_bump",
]


def eq18_printed_density(t: ArrayLike, eps: float) -> np.ndarray:
    """Eq. 18 as printed: ``exp(-t t^T / (2 eps^(2n))) / sqrt((2 pi)^n eps^n)``.

    (The paper writes ``x x^T`` for the argument ``t``.)

    Args:
        t: points [..., n].
        eps: scale.

    Returns:
        The printed "density" at ``t``, shape [...].
    """
    t = np.asarray(t, dtype=np.float64)
    n = t.shape[-1]
    return np.exp(-np.sum(t * t, axis=-1) / (2.0 * eps ** (2 * n))) / math.sqrt(
        (2.0 * math.pi) ** n * eps**n
    )


def sg_density(t: ArrayLike, eps: float) -> np.ndarray:
    """Corrected eq. 18: ``(2 pi eps^2)^(-n/2) exp(-t t^T / (2 eps^2))``, i.e. N(0, eps^2 I).

    Args:
        t: points [..., n].
        eps: scale.

    Returns:
        Density values, shape [...].
    """
    t = np.asarray(t, dtype=np.float64)
    n = t.shape[-1]
    return np.exp(-np.sum(t * t, axis=-1) / (2.0 * eps**2)) / (2.0 * math.pi * eps**2) ** (n / 2)


def eq20_printed_density(t: ArrayLike, theta: ArrayLike, eps: float) -> np.ndarray:
    """Eq. 20 as printed: ``exp(-(t - theta)(t - theta)^T / (2 eps^(2n))) /
    sqrt((2 pi)^n eps^n theta)``, with the scalar ``theta`` under the root read as
    ``prod(theta)`` (requires theta > 0).

    Args:
        t: points [..., n].
        theta: parameters [n].
        eps: scale.

    Returns:
        The printed "density", shape [...].
    """
    t = np.asarray(t, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    n = t.shape[-1]
    d = t - theta
    return np.exp(-np.sum(d * d, axis=-1) / (2.0 * eps ** (2 * n))) / np.sqrt(
        (2.0 * math.pi) ** n * eps**n * np.prod(theta)
    )


def ng_density(t: ArrayLike, theta: ArrayLike, eps: float) -> np.ndarray:
    """Corrected eq. 20: density of ``T = theta - theta X``, ``X ~ N(1, eps^2)`` per coordinate,
    i.e. ``T ~ N(0, eps^2 diag(theta)^2)``:
    ``prod_k exp(-t_k^2 / (2 eps^2 theta_k^2)) / (sqrt(2 pi) eps |theta_k|)``.

    Args:
        t: points [..., n].
        theta: parameters [n], all non-zero (a zero weight is never perturbed: degenerate).
        eps: relative noise scale.

    Returns:
        Density values, shape [...].
    """
    t = np.asarray(t, dtype=np.float64)
    s = eps * np.abs(np.asarray(theta, dtype=np.float64))
    return np.prod(np.exp(-0.5 * (t / s) ** 2) / (math.sqrt(2.0 * math.pi) * s), axis=-1)


def paper_cdf(name: str, x: ArrayLike) -> np.ndarray:
    """Phi of eqs. 25-29 as printed (naive float formulas).

    Args:
        name: kernel name.
        x: points.

    Returns:
        float64 array.
    """
    key = kernels.canonical_name(name)
    x = np.asarray(x, dtype=np.float64)
    if key == "gaussian":
        return (special.erf(x / math.sqrt(2.0)) + 1.0) / 2.0
    if key == "poisson":
        return np.arctan(x) / math.pi + 0.5
    if key == "hyperbolic":
        return np.tanh(x) / 2.0 + 0.5
    if key == "sigmoid":
        return np.exp(x) / (np.exp(x) + 1.0)
    return np.select([x < -1.0, x <= 1.0], [np.zeros_like(x), 0.5 * x + 0.5], 1.0)


def paper_icdf(name: str, u: ArrayLike) -> np.ndarray:
    """Phi^-1 of eqs. 26-29 as printed (eq. 25 prints none; erfinv is used for gaussian).

    Args:
        name: kernel name.
        u: probabilities in (0, 1).

    Returns:
        float64 array.
    """
    key = kernels.canonical_name(name)
    u = np.asarray(u, dtype=np.float64)
    if key == "gaussian":
        return math.sqrt(2.0) * special.erfinv(2.0 * u - 1.0)
    if key == "poisson":
        return np.tan(math.pi / 2.0 * (2.0 * u - 1.0))
    if key == "hyperbolic":
        return np.arctanh(2.0 * u - 1.0)
    if key == "sigmoid":
        return -np.log(1.0 / u - 1.0)
    return 2.0 * u - 1.0


def paper_pdf(name: str, x: ArrayLike) -> np.ndarray:
    """phi of eqs. 25-29 as printed (naive float formulas).

    Args:
        name: kernel name.
        x: points.

    Returns:
        float64 array.
    """
    key = kernels.canonical_name(name)
    x = np.asarray(x, dtype=np.float64)
    if key == "gaussian":
        return np.exp(-(x**2) / 2.0) / math.sqrt(2.0 * math.pi)
    if key == "poisson":
        return 1.0 / (math.pi * (x**2 + 1.0))
    if key == "hyperbolic":
        return 1.0 / (2.0 * np.cosh(x) ** 2)
    if key == "sigmoid":
        return np.exp(x) / (np.exp(x) + 1.0) ** 2
    return np.where(np.abs(x) <= 1.0, 0.5, 0.0)


def eq52_printed_scale(beta: float, x_min: float, x_max: float) -> float:
    """Eq. 52 as printed: ``eps = beta (x_min - x_max)`` (negative for x_min < x_max).

    SmoothGrad (Smilkov et al. 2017) uses ``sigma = beta (x_max - x_min)``.

    Args:
        beta: noise level.
        x_min: smallest input value.
        x_max: largest input value.

    Returns:
        The printed value.
    """
    return beta * (x_min - x_max)


def eq46_printed_unnormalised(x: ArrayLike, eps: float) -> np.ndarray:
    """Eq. 46 as printed, without the constant 1/C: ``exp((|x|^2 - eps)^-1)`` for |x| < eps.

    Args:
        x: scalar points.
        eps: scale.

    Returns:
        float64 array (0 for |x| >= eps).
    """
    x = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        val = np.exp(1.0 / (x * x - eps))
    return np.where(x < eps, val, 0.0)


def standard_bump(x: ArrayLike, eps: float) -> np.ndarray:
    """The standard mollifier, unnormalised: ``exp(1 / (|x|^2 - eps^2))`` for |x| < eps, else 0
    (C^infinity, tends to 0 at |x| = eps); its normalised form is ``eps^-n phi(x/eps)`` with
    ``phi(x) = exp(1/(|x|^2 - 1)) / C``.

    Args:
        x: scalar points.
        eps: scale.

    Returns:
        float64 array.
    """
    x = np.abs(np.asarray(x, dtype=np.float64))
    inside = x < eps
    safe = np.where(inside, x, 0.0)
    return np.where(inside, np.exp(1.0 / (safe * safe - eps * eps)), 0.0)
