"""SymPy expressions of the five kernels (pdf, cdf, icdf, characteristic function).

These are the closed forms of eqs. 25-29 of the paper written with SymPy; ``reference.proofs``
proves their properties symbolically and ``reference.kernels`` implements them numerically.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp

from reference.kernels import canonical_name

__all__ = ["SymbolicKernel", "symbolic"]

X = sp.Symbol("x", real=True)
U = sp.Symbol("u", positive=True)  # probabilities; the proofs restrict to 0 < u < 1
T = sp.Symbol("t", positive=True)  # frequency of the characteristic function (chi is even)

_HALF = sp.Rational(1, 2)


@dataclass(frozen=True)
class SymbolicKernel:
    """SymPy expressions of a standard (scale 1) kernel.

    Attributes:
        name: canonical kernel name.
        x: the real variable of ``pdf`` and ``cdf``.
        u: the probability variable of ``icdf`` (positive; meaningful for 0 < u < 1).
        t: the (positive) frequency of ``char_fn``.
        pdf: phi(x).
        cdf: Phi(x).
        icdf: Phi^-1(u).
        char_fn: the claimed closed form of E[cos(t Z)] for t > 0.
    """

    name: str
    x: sp.Symbol
    u: sp.Symbol
    t: sp.Symbol
    pdf: sp.Expr
    cdf: sp.Expr
    icdf: sp.Expr
    char_fn: sp.Expr


@cache
def symbolic(name: str) -> SymbolicKernel:
    """SymPy expressions of a kernel.

    Args:
        name: kernel name or alias (see ``reference.kernels.canonical_name``).

    Returns:
        A ``SymbolicKernel`` with ``pdf``, ``cdf``, ``icdf``, ``char_fn`` and the symbols
        ``x``, ``u``, ``t`` they use.

    Raises:
        ValueError: unknown kernel name.
    """
    key = canonical_name(name)
    x, u, t = X, U, T
    if key == "gaussian":
        pdf = sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi)
        cdf = (1 + sp.erf(x / sp.sqrt(2))) / 2
        icdf = sp.sqrt(2) * sp.erfinv(2 * u - 1)
        chi = sp.exp(-(t**2) / 2)
    elif key == "poisson":
        pdf = 1 / (sp.pi * (1 + x**2))
        cdf = sp.atan(x) / sp.pi + _HALF
        icdf = sp.tan(sp.pi * (u - _HALF))
        chi = sp.exp(-t)
    elif key == "hyperbolic":
        pdf = 1 / (2 * sp.cosh(x) ** 2)
        cdf = (1 + sp.tanh(x)) / 2
        icdf = sp.atanh(2 * u - 1)
        chi = (sp.pi * t / 2) / sp.sinh(sp.pi * t / 2)
    elif key == "sigmoid":
        pdf = sp.exp(x) / (sp.exp(x) + 1) ** 2
        cdf = sp.exp(x) / (sp.exp(x) + 1)
        icdf = -sp.log(1 / u - 1)
        chi = sp.pi * t / sp.sinh(sp.pi * t)
    else:  # rect
        pdf = sp.Piecewise((_HALF, sp.Abs(x) <= 1), (0, True))
        cdf = sp.Piecewise((0, x < -1), ((x + 1) / 2, x <= 1), (1, True))
        icdf = 2 * u - 1
        chi = sp.sin(t) / t
    return SymbolicKernel(key, x, u, t, pdf, cdf, icdf, chi)
