"""Kernel scale from a coverage interval: eq. 30 of the paper, solved in closed form.

``alpha/2 = int_0^r phi_eps(x) dx``  <=>  ``P(|T| <= r) = alpha`` for ``T ~ phi_eps``
<=>  ``eps = r / Phi^-1((1 + alpha)/2)``. The per-kernel closed forms (proved with SymPy in
``reference.proofs``) are

* gaussian   r / (sqrt(2) erfinv(alpha))
* poisson    r / tan(pi alpha / 2)
* hyperbolic r / artanh(alpha)            (paper eq. 49 prints arctan: wrong)
* sigmoid    r / ln((1 + alpha)/(1 - alpha)) = r / (2 artanh(alpha))
* rect       r / alpha                    (paper eq. 51 prints 2 r / alpha: wrong)
"""

from __future__ import annotations

import math

from scipy import integrate, special

from reference import kernels

__all__ = ["coverage", "epsilon", "epsilon_quad_residual", "paper_epsilon"]


def _check(r: float, alpha: float) -> tuple[float, float]:
    r = float(r)
    alpha = float(alpha)
    if not (r > 0.0 and math.isfinite(r)):
        raise ValueError(f"Argument `r` must be a positive finite number. Received: r={r!r}")
    if not (0.0 < alpha < 1.0):
        raise ValueError(
            f"Argument `alpha` must be in the open interval (0, 1). Received: alpha={alpha!r}"
        )
    return r, alpha


def epsilon(kernel_name: str, r: float, alpha: float) -> float:
    """Scale ``eps`` such that ``P(|T| <= r) = alpha`` for ``T ~ phi_eps`` (eq. 30).

    Args:
        kernel_name: kernel name or alias.
        r: half-width of the interval, ``r > 0``.
        alpha: coverage (confidence level), ``0 < alpha < 1``.

    Returns:
        ``eps`` as a Python float (float64 arithmetic).

    Raises:
        ValueError: unknown kernel, ``r <= 0`` (or not finite), or ``alpha`` not in (0, 1).
    """
    key = kernels.canonical_name(kernel_name)
    r, alpha = _check(r, alpha)
    if key == "gaussian":
        q = math.sqrt(2.0) * float(special.erfinv(alpha))
    elif key == "poisson":
        q = math.tan(0.5 * math.pi * alpha)
    elif key == "hyperbolic":
        q = math.atanh(alpha)
    elif key == "sigmoid":
        q = 2.0 * math.atanh(alpha)  # == ln((1 + alpha)/(1 - alpha)), accurate for small alpha
    else:  # rect
        q = alpha
    return r / q


def paper_epsilon(kernel_name: str, r: float, alpha: float) -> float:
    """Eqs. 47-51 of the paper exactly as printed (for the findings tests).

    Args:
        kernel_name: kernel name or alias.
        r: half-width, ``r > 0``.
        alpha: coverage, ``0 < alpha < 1``.

    Returns:
        The printed formula's value; wrong for hyperbolic (eq. 49) and rect (eq. 51).

    Raises:
        ValueError: as ``epsilon``.
    """
    key = kernels.canonical_name(kernel_name)
    r, alpha = _check(r, alpha)
    if key == "hyperbolic":
        return r / math.atan(alpha)  # eq. 49
    if key == "rect":
        return 2.0 * r / alpha  # eq. 51
    if key == "sigmoid":
        return r / math.log((1.0 + alpha) / (1.0 - alpha))  # eq. 50
    return epsilon(key, r, alpha)  # eqs. 47, 48 are right


def coverage(kernel_name: str, r: float, eps: float) -> float:
    """``P(|T| <= r)`` for ``T ~ phi_eps``, i.e. ``2 int_0^r phi_eps``, by quadrature.

    Args:
        kernel_name: kernel name or alias.
        r: half-width, ``r > 0``.
        eps: kernel scale, ``eps > 0``.

    Returns:
        The coverage in [0, 1].
    """
    key = kernels.canonical_name(kernel_name)
    points = [eps] if (key == "rect" and eps < r) else None
    val, _ = integrate.quad(
        lambda x: float(kernels.pdf(key, x, scale=eps)),
        0.0,
        r,
        points=points,
        epsabs=1e-14,
        epsrel=1e-12,
        limit=200,
    )
    return 2.0 * val


def epsilon_quad_residual(name: str, r: float, alpha: float) -> float:
    """``|alpha/2 - int_0^r phi_eps(x) dx|`` with ``eps = epsilon(name, r, alpha)``.

    The integral is computed with ``scipy.integrate.quad`` on the scaled density, independently
    of the closed form.

    Args:
        name: kernel name or alias.
        r: half-width, ``r > 0``.
        alpha: coverage, ``0 < alpha < 1``.

    Returns:
        The absolute residual of eq. 30 (about 1e-12 or less when the closed form is right).

    Raises:
        ValueError: as ``epsilon``.
    """
    eps = epsilon(name, r, alpha)
    return abs(0.5 * alpha - 0.5 * coverage(name, r, eps))
